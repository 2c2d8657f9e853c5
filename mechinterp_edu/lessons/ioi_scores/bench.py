"""Lesson 5 speed figures for ``python -m mechinterp_edu bench``, and the slow baseline they use.

The per-component loop below computes the same numbers as the vectorised
``reference.decompose_all`` / ``reference.score_grids`` one component (or pair) at a time, by the
definition; :func:`bench` times both on the same inputs, next to one forward pass.
"""
from __future__ import annotations

import math

import torch

from mechinterp_edu.lessons.ioi_scores import reference as ref


def _loop_images(inp: ref.HeadScoreInputs):
    """Each component's key/query image, one component at a time (the definition, literally)."""
    b = inp.q.shape[0]

    ln = ref._frozen_ln

    def par(c, d):
        dn = d / d.norm(dim=-1, keepdim=True)
        return (c * dn).sum(-1, keepdim=True) * dn

    img = {"q": [], "q_par": [], "k": [], "k_par": [], "b": [], "b_par": []}
    for i in range(inp.n):
        c = inp.q_components[:, i]
        img["q"].append(ln(c, inp.scale_q) @ inp.W_Q)
        img["q_par"].append(ln(par(c, inp.u), inp.scale_q) @ inp.W_Q)
        c = inp.k_components[:, i]
        img["k"].append(ln(c, inp.scale_k) @ inp.W_K)
        img["k_par"].append(ln(par(c, inp.m_k), inp.scale_k) @ inp.W_K)
        c = inp.base_components[:, i]
        img["b"].append(ln(c, inp.scale_base) @ inp.W_K)
        img["b_par"].append(ln(par(c, inp.m_base), inp.scale_base) @ inp.W_K)
    zero = torch.zeros(b, inp.d_head, dtype=inp.q.dtype, device=inp.q.device)
    img["q"].append(inp.b_Q.expand(b, -1))
    img["k"].append(inp.b_K.expand(b, -1))
    img["b"].append(inp.b_K.expand(b, -1))
    for key in ("q_par", "k_par", "b_par"):
        img[key].append(zero)
    return img


def decompose_all_loop(inp: ref.HeadScoreInputs) -> dict[str, torch.Tensor]:
    """The same numbers as :func:`~mechinterp_edu.lessons.ioi_scores.reference.decompose_all`, one component at a time (the slow baseline):
    every component's key (or query) image through LN* and W, then its dot product."""
    sq = math.sqrt(inp.d_head)
    img = _loop_images(inp)
    n1 = inp.n + 1

    def dot(a, b):
        return (a * b).sum(-1) / sq

    q_par_tot = sum(img["q_par"])
    q_perp_tot = inp.q - q_par_tot
    out: dict[str, torch.Tensor] = {}
    for tag in ("raw", "base"):
        base = tag == "base"
        keys = [img["k"][j] - img["b"][j] if base else img["k"][j] for j in range(n1)]
        kpar = [img["k_par"][j] - img["b_par"][j] if base else img["k_par"][j] for j in range(n1)]
        k_frozen = inp.k - inp.k_base if base else inp.k
        k_par_tot = sum(kpar[:-1])
        k_perp_tot = k_frozen - k_par_tot
        out[f"keys_{tag}"] = torch.stack([dot(inp.q, keys[j]) for j in range(n1)], 1)
        out[f"queries_{tag}"] = torch.stack([dot(img["q"][i], k_frozen) for i in range(n1)], 1)
        four_k, four_q = [], []
        for j in range(n1):
            kp, ko = kpar[j], keys[j] - kpar[j]
            four_k.append(torch.stack([dot(q_par_tot, kp), dot(q_par_tot, ko),
                                       dot(q_perp_tot, kp), dot(q_perp_tot, ko)], 1))
            qp, qo = img["q_par"][j], img["q"][j] - img["q_par"][j]
            four_q.append(torch.stack([dot(qp, k_par_tot), dot(qp, k_perp_tot),
                                       dot(qo, k_par_tot), dot(qo, k_perp_tot)], 1))
        out[f"four_keys_{tag}"] = torch.stack(four_k, 2)
        out[f"four_queries_{tag}"] = torch.stack(four_q, 2)
    return out


def score_grid_loop(inp: ref.HeadScoreInputs, baseline: bool = True) -> torch.Tensor:
    """:func:`score_grid` one pair of components at a time."""
    sq = math.sqrt(inp.d_head)
    img = _loop_images(inp)
    n1 = inp.n + 1
    grid = torch.zeros(inp.q.shape[0], n1, n1, dtype=inp.q.dtype, device=inp.q.device)
    for i in range(n1):
        for j in range(n1):
            k = img["k"][j] - img["b"][j] if baseline else img["k"][j]
            grid[:, i, j] = (img["q"][i] * k).sum(-1) / sq
    return grid


def bench(quick: bool = False):
    """Vectorised decomposition vs a per-component loop, on the same inputs; and vs a forward pass."""
    from mechinterp_edu.bench import timed
    from mechinterp_edu.device import get_device
    from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts, WordVocab, build_vocab

    device = get_device()
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    rows = []
    setups = [("ioi_small", None)]
    if not quick:
        setups.append(("random GPT-2-small-shaped (12 layers, 12 heads, d_model 768)",
                       dict(n_layers=12, n_heads=12, d_model=768, d_vocab=len(build_vocab()), n_ctx=32)))
    for name, sizes in setups:
        if sizes is None:
            from mechinterp_edu.lessons.ioi_scores.model import load
            model = load(device=device)
            layer, head = model.cfg.n_layers - 1, 0
        else:
            from mechinterp_edu.models.gpt2 import make_random_gpt2
            model = make_random_gpt2(seed=0, device=device, **sizes)
            layer, head = 10, 7
        n_prompts = 16 if quick else 64
        batch = encode_prompts(sample_prompts(n_prompts, "test", seed=0), WordVocab(build_vocab())).to(device)
        forward = timed(lambda: ref.run_with_cache(model, batch.tokens), repeat=2 if quick else 3, sync=sync)
        cache = ref.run_with_cache(model, batch.tokens)
        inp = ref.gather_head_inputs(model, batch, layer, head, cache=cache)
        rows += _bench_pair(
            f"{name}: key/query decompositions + four-term splits (with and without baseline), "
            f"head {layer}.{head}, {n_prompts} prompts x {inp.n + 1} components",
            lambda: ref.decompose_all(inp), lambda: decompose_all_loop(inp), forward, sync, inp,
            # The 20x target is for GPT-2 small's size; the toy has only 14 components.
            target=20.0 if sizes is not None else None,
            floor=_read_once_seconds(inp, sync) if sizes is not None else None)
        rows += _bench_pair(
            f"{name}: full query x key grid ({inp.n + 1} x {inp.n + 1}), with and without baseline",
            lambda: ref.score_grids(inp),
            lambda: {"grid_raw": score_grid_loop(inp, False), "grid_base": score_grid_loop(inp, True)},
            forward, sync, inp)
    return rows


def _read_once_seconds(inp: ref.HeadScoreInputs, sync) -> float:
    """Seconds to read the three component tensors once (a sum over each): a memory floor for
    any method that looks at every component of every prompt."""
    from mechinterp_edu.bench import timed

    tensors = (inp.q_components, inp.k_components, inp.base_components)
    return timed(lambda: [t.sum() for t in tensors], repeat=5, sync=sync)


def _bench_pair(label, fast_fn, slow_fn, forward, sync, inp, target=None, floor=None):
    from mechinterp_edu.bench import BenchRow, seconds_text, timed

    fast_fn()  # warm-up (first-call dispatch overhead)
    fast = slow = float("inf")
    for _ in range(3):  # interleaved, best of 3: a busy machine slows both alike
        fast = min(fast, timed(fast_fn, repeat=3, sync=sync))
        slow = min(slow, timed(slow_fn, repeat=1, sync=sync))
    a, b = fast_fn(), slow_fn()
    agree = max(float((a[k] - b[k]).abs().max()) for k in a)
    err = ref.max_sum_error(inp, a)
    note = (f"{fast / forward:.3g}x the time of one forward pass with cache ({seconds_text(forward)}); "
            f"loop and vectorised agree to {agree:.1e}; max |sum - real score| {err:.1e}")
    if floor is not None:
        note += f"; reading the three component tensors once takes {seconds_text(floor)}"
    return [BenchRow(label, fast, "per-component loop", slow, note=note, target_ratio=target)]
