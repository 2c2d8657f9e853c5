"""Every number lesson 5's text states, computed from the shipped toy (``ioi_small``).

``facts()`` runs the plain-torch forward of the checkpoint (float32; decompositions in float64) on one fixed batch of
held-out prompts (:data:`N_PROMPTS` from the ``test`` split, seed :data:`SEED`), its IO/S-swapped
corruption, the causal tools, the decompositions of head :data:`HEAD` and the sampled nulls.
The tests (``tests/test_lesson05_facts.py``) recompute each number another way: through the
TransformerBridge and its hooks, with the worked solutions, or from closed forms.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch

N_PROMPTS, SEED, SPLIT = 128, 0, "test"
HEAD = (2, 2)                 # the layer-2 head whose score the four-term figures decompose
LATE = ((1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3))


@functools.lru_cache(maxsize=1)
def setup() -> dict[str, Any]:
    """The model (float32 plain-torch forward), the batch, its swapped corruption and the weights."""
    from mechinterp_edu.lessons.ioi_scores import causal as C
    from mechinterp_edu.lessons.ioi_scores import forward as ioi_forward
    from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts

    model = ioi_forward.load(dtype=torch.float32)     # decompositions still run in float64
    prompts = sample_prompts(N_PROMPTS, SPLIT, seed=SEED)
    batch = encode_prompts(prompts, model.ioi_vocab)
    swapped = encode_prompts(C.corrupt_prompts(prompts, "swap"), model.ioi_vocab)
    return {"model": model, "batch": batch, "swapped": swapped, "w": C.weights_of(model)}


def _config_facts(model) -> dict[str, Any]:
    from mechinterp_edu.lessons.ioi_scores.model import RECIPE
    from mechinterp_edu.lessons.ioi_scores.data import NAMES, TRAIN_TEMPLATES

    cfg = model.cfg
    return {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_head": cfg.d_head, "d_model": cfg.d_model,
            "d_mlp": cfg.d_mlp, "vocab_size": cfg.d_vocab, "n_names": len(NAMES),
            "n_train_templates": len(TRAIN_TEMPLATES), "train_steps": RECIPE["steps"],
            "train_batch": RECIPE["batch_size"], "lr": RECIPE["lr"], "d_gpt2": 768}


def _causal_facts(s) -> dict[str, Any]:
    from mechinterp_edu.lessons.ioi_scores import causal as C

    w, b, sw = s["w"], s["batch"], s["swapped"]
    P = b.positions
    args = (P["END"], b.io_tokens, b.s_tokens)
    end = C.head_effects(w, b.tokens, *args, sw.tokens, pos=P["END"])
    clean = end["clean"]
    base = float(clean.mean())
    drop = {k: (end[k].mean(-1) - base) for k in ("mean", "zero", "patch")}
    at = {name: C.head_effects(w, b.tokens, *args, sw.tokens, pos=P[name], kinds=("patch",))["patch"].mean(-1) - base
          for name in ("S2", "IO", "S1")}
    late_end = [float(drop["patch"][l, h]) for l, h in LATE if l == 2]
    f = {"ld_mean": base, "ld_sd": float(clean.std()), "ld_min": float(clean.min()),
         "swap_ld_mean": float(C.clean_logit_diff(w, sw.tokens, *args).mean()),
         "patch_end_10": float(drop["patch"][1, 0]),
         "patch_end_l2_min": min(late_end, key=abs), "patch_end_l2_max": max(late_end, key=abs),
         "patch_end_l0_max": float(drop["patch"][0].abs().max()),
         "patch_s2_03": float(at["S2"][0, 3]), "patch_s2_02": float(at["S2"][0, 2]),
         "patch_s2_late_max": float(at["S2"][1:].abs().max()),
         "patch_io_s1_max": float(torch.maximum(at["IO"].abs(), at["S1"].abs()).max()),
         "mean_abl_late_max": float(torch.stack([drop["mean"][l, h] for l, h in LATE]).abs().max()),
         "mean_abl_03": float(drop["mean"][0, 3]), "zero_abl_01": float(drop["zero"][0, 1]),
         "mean_abl_01": float(drop["mean"][0, 1])}
    runs = (C.run(w, b.tokens)[1], C.run(w, sw.tokens)[1])
    f["path_q_max"] = max(abs(float(C._path_patch(w, b.tokens, *runs, *args, (ls, hs), (lr, hr)).mean()) - base)
                          for lr, hr in LATE for ls in range(lr) for hs in range(4))
    for tag, layers in (("l1", (1,)), ("l2", (2,)), ("l12", (1, 2))):
        f[f"ablate_{tag}"] = float(ablate_heads(w, b, [(l, h) for l in layers for h in range(4)]).mean())
    return f


def ablate_heads(w, b, heads, mode: str = "mean") -> torch.Tensor:
    """Logit difference [batch] with several heads mean- (or zero-) ablated together."""
    from mechinterp_edu.lessons.ioi_scores import causal as C

    P = b.positions
    _, cache = C.run(w, b.tokens)

    def edit(l, z, _p):
        mine = [h for (ll, h) in heads if ll == l]
        if mine:
            z = z.clone()
            for h in mine:
                z[:, :, h] = cache[f"z.{l}"][:, :, h].mean(0) if mode == "mean" else 0.0
        return z

    resid, _ = C.run(w, b.tokens, edit)
    return C._diff_at_end(w, resid, P["END"], b.io_tokens, b.s_tokens)


def _attention_facts(s) -> dict[str, Any]:
    from mechinterp_edu.lessons.ioi_scores import causal as C

    b = s["batch"]
    P = b.positions
    rows = torch.arange(len(b))
    _, cache = C.run(s["w"], b.tokens)

    def attn(layer, src, dst):                          # [n_heads]
        pattern = cache[f"pattern.{layer}"][rows, :, P[src]]
        return pattern[rows, :, P[dst]].mean(0)

    l0_names = attn(0, "END", "IO") + attn(0, "END", "S1")
    late = torch.cat([attn(1, "END", "S2"), attn(2, "END", "S2")])
    return {"attn_s2_io_03": float(attn(0, "S2", "IO")[3]), "attn_s2_io_02": float(attn(0, "S2", "IO")[2]),
            "attn_s2_s1_l0_max": float(attn(0, "S2", "S1").max()),
            "attn_end_names_l0_min": float(l0_names.min()), "attn_end_names_l0_max": float(l0_names.max()),
            "attn_end_s2_late_min": float(late.min())}


def _projection_facts(s) -> dict[str, Any]:
    from mechinterp_edu.lessons.ioi_scores import nulls
    from mechinterp_edu.lessons.ioi_scores import reference as ref
    from mechinterp_edu.lessons.ioi_scores.data import NAMES

    model, b, w = s["model"], s["batch"], s["w"]
    cache = ref.run_with_cache(model, b.tokens)
    inp = ref.gather_head_inputs(model, b, *HEAD, cache=cache)
    outs = [inp.q_components[:, inp.labels.index(f"1.{h}")] for h in range(model.cfg.n_heads)]
    frac = [float(ref.fraction_explained(v, inp.u)) for v in outs]
    frac_s = [float(ref.fraction_explained(v, inp.u_s)) for v in outs]
    null = nulls.cos2_null(outs[0], k=1)
    ids = torch.tensor([model.ioi_vocab(n) for n in NAMES])
    cos = torch.nn.functional.cosine_similarity(w["W_U"][:, ids].T, w["W_E"][ids], dim=-1)
    d = model.cfg.d_model
    return {"frac_l1_min": min(frac), "frac_l1_max": max(frac), "frac_s_l1_max": max(frac_s),
            "null_cos2_mean": null["mean"], "null_cos2_lo": null["lo"], "null_cos2_hi": null["hi"],
            "null_cos2_sd_one": null["sd_one"], "inv_d": 1 / d, "two_over_d": 2 / d, "inv_d2": 1 / d ** 2,
            "inv_d_gpt2": 1 / 768, "frac_over_null": min(frac) / null["hi"],
            "cos_wu_we_mean": float(cos.mean()), "cos_wu_we_min": float(cos.min()),
            "cos_wu_we_max": float(cos.max()), "_cache": cache}


def _score_facts(s, cache) -> dict[str, Any]:
    from mechinterp_edu.lessons.ioi_scores import nulls
    from mechinterp_edu.lessons.ioi_scores import reference as ref

    model, b = s["model"], s["batch"]
    nets, sds, raws = [], [], []
    for l, h in LATE:
        inp = ref.gather_head_inputs(model, b, l, h, cache=cache)
        net = inp.real_score() - inp.real_score_base()
        nets.append(float(net.mean()))
        sds.append(float(net.std()))
        raws.append(inp.real_score().mean())
    f = {"net_io_absmax": max(abs(x) for x in nets), "net_io_sd_min": min(sds), "net_io_sd_max": max(sds),
         "raw_io_min": float(min(raws)), "raw_io_max": float(max(raws))}
    for target in ("IO", "S2"):
        inp = ref.gather_head_inputs(model, b, *HEAD, target=target, cache=cache)
        tot = ref.decompose_all(inp)["four_keys_base"].sum(-1)
        share = ref.share_explained(tot, torch.zeros_like(tot))
        null = nulls.four_term_null(inp)
        t = target.lower()
        for i, key in enumerate(("pp", "pperp", "perpp", "perpperp")):
            name = ref.TERM_NAMES[i]
            f[f"share_{t}_{key}"] = float(share[i])
            f[f"null_{t}_{key}_mean"] = null[name]["mean"]
            f[f"null_{t}_{key}_lo"] = null[name]["lo"]
            f[f"null_{t}_{key}_hi"] = null[name]["hi"]
        f[f"net_{t}_head"] = float((inp.real_score() - inp.real_score_base()).mean())
        f[f"term_{t}_pp"] = float(share[0]) * f[f"net_{t}_head"]
    # the notes' statistic: one draw's (q∥u).(k∥m) share, mean 1/d^2, spread over the toy's prompts
    inp = ref.gather_head_inputs(model, b, *HEAD, cache=cache)
    d = inp.u.shape[-1]
    centre = torch.eye(d, dtype=inp.u.dtype) - 1.0 / d
    B = centre @ inp.W_Q @ inp.W_K.T @ centre
    x_q, x_k = inp.q_components.sum(1), inp.k_components.sum(1)
    ratios = [float(nulls.bilinear_share_draws(x_q[i], x_k[i], 20_000, seed=i, B=B).std() * d * d)
              for i in range(16)]
    f["spread_median"] = float(torch.tensor(ratios).median())
    f["spread_min"], f["spread_max"] = min(ratios), max(ratios)
    f["spread_aligned"] = math.sqrt(d)
    return f


@functools.lru_cache(maxsize=1)
def facts() -> dict[str, object]:
    s = setup()
    out: dict[str, object] = {}
    out.update(_config_facts(s["model"]))
    out.update(_causal_facts(s))
    out.update(_attention_facts(s))
    proj = _projection_facts(s)
    cache = proj.pop("_cache")
    out.update(proj)
    out.update(_score_facts(s, cache))
    out["n_prompts"] = N_PROMPTS
    out["head"] = f"{HEAD[0]}.{HEAD[1]}"
    # the copy_suppressor step (issue #13): its own model, keys prefixed cs_
    from mechinterp_edu.lessons.ioi_scores.copy_suppression_charts import copy_suppressor_facts
    out.update(copy_suppressor_facts())
    return out
