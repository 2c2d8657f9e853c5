"""Lesson 5 causal tools: the logit difference, ablating one head, patching one head's output.

Attention patterns and projections say where a head looks and what it writes; they do not say
whether the model's answer depends on it. These tools intervene on one head's OUTPUT and rerun
everything downstream (later heads, MLPs and every LayerNorm, recomputed on the edited stream):

* :func:`logit_diff` - logit(IO) - logit(S) at END, per prompt;
* :func:`ablate_head` - replace one head's output by its mean over the prompts (position by
  position) or by zero, and return the new logit difference;
* :func:`patch_head_output` - replace one head's output at one position per prompt by its output
  on a corrupted prompt (IO and S swapped, or replaced by other names);
* :func:`head_effects` - every head at once (the runs of one layer's heads are stacked on the
  batch axis, and the layers before it are computed once).

A head's output is ``z[:, :, h] @ W_O[h]``; it is linear in ``z``, so editing ``hook_z`` of one
head edits exactly that head's output (the shared ``b_O`` stays). This module runs a plain-torch
forward on TransformerLens-shaped, LayerNorm-folded weights (:func:`weights_of`); the ``*_hooked``
functions do the same through the model's own hooks (``run_with_hooks`` on the
TransformerBridge), a second implementation the tests compare against.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechinterp_edu.lessons.ioi_scores.forward import gelu_new, ln_scale

WEIGHT_NAMES: tuple[str, ...] = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O",
                                 "W_in", "b_in", "W_out", "b_out", "W_U", "b_U")
EPS = 1e-5
MODES = ("mean", "zero")


class CausalInputError(ValueError):
    """Bad arguments to a causal tool; the message says which and what to pass instead."""


def weights_of(model, dtype: Optional[torch.dtype] = None) -> dict[str, Tensor]:
    """The TransformerLens-shaped weights of a LayerNorm-folded GPT-2-architecture model (the
    bridge in compatibility mode, or ``IOIForward``), detached, on the CPU."""
    missing = [n for n in WEIGHT_NAMES if not hasattr(model, n)]
    if missing:
        raise CausalInputError(f"the model has no {missing[0]}: pass a TransformerBridge in compatibility "
                               f"mode or the plain-torch ioi_small forward.")
    out = {n: getattr(model, n).detach().cpu() for n in WEIGHT_NAMES}
    return {n: v.to(dtype) if dtype is not None else v for n, v in out.items()}


def _ln(x: Tensor, eps: float, frozen: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Folded LayerNorm (normalised x, scale); with ``frozen``, that scale instead of x's own."""
    if frozen is None:
        return ln_scale(x, eps)
    return (x - x.mean(-1, keepdim=True)) / frozen, frozen


ZEdit = Callable[[int, Tensor, Tensor], Tensor]   # (layer, z [b,s,h,e], pattern [b,h,q,k]) -> z


def run(w: dict[str, Tensor], tokens: Int[Tensor, "batch seq"], edit_z: Optional[ZEdit] = None,
        frozen_scales: Optional[dict[str, Tensor]] = None, start: int = 0,
        resid: Optional[Tensor] = None, eps: float = EPS,
        edit_pattern: Optional[Callable[[int, Tensor], Tensor]] = None,
        edit_q: Optional[Callable[[int, Tensor, Tensor], Tensor]] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward pass: (residual stream after the last block [b, seq, d_model], cache).

    ``edit_z(layer, z, pattern)`` may return a new ``z`` for a layer (the edit the causal tools
    make; ``edit_pattern(layer, pattern)`` edits the pattern instead); ``frozen_scales`` (from a
    clean cache) freezes every LayerNorm scale - a WRONG
    forward, kept so the grader can show what forgetting the recomputation does. With ``start``
    and ``resid`` the pass begins at block ``start`` from the given residual stream.
    ``edit_q(layer, resid_pre, q)`` may replace the queries (path patching).
    The cache holds ``resid_pre.L``, ``z.L``, ``pattern.L`` and every LayerNorm scale."""
    cache: dict[str, Tensor] = {}
    seq = tokens.shape[1]
    x = resid if resid is not None else w["W_E"][tokens] + w["W_pos"][:seq]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
    fs = frozen_scales or {}
    d_head = w["W_Q"].shape[-1]
    for l in range(start, w["W_Q"].shape[0]):
        cache[f"resid_pre.{l}"] = x
        normed, cache[f"ln1.{l}"] = _ln(x, eps, fs.get(f"ln1.{l}"))
        q = torch.einsum("bsd,hde->bshe", normed, w["W_Q"][l]) + w["b_Q"][l]
        if edit_q is not None:
            q = edit_q(l, x, q)
        k = torch.einsum("bsd,hde->bshe", normed, w["W_K"][l]) + w["b_K"][l]
        v = torch.einsum("bsd,hde->bshe", normed, w["W_V"][l]) + w["b_V"][l]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(d_head)
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        if edit_pattern is not None:
            pattern = edit_pattern(l, pattern)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        if edit_z is not None:
            z = edit_z(l, z, pattern)
        cache[f"z.{l}"], cache[f"pattern.{l}"] = z, pattern
        x = x + torch.einsum("bshe,hed->bsd", z, w["W_O"][l]) + w["b_O"][l]
        normed, cache[f"ln2.{l}"] = _ln(x, eps, fs.get(f"ln2.{l}"))
        x = x + gelu_new(normed @ w["W_in"][l] + w["b_in"][l]) @ w["W_out"][l] + w["b_out"][l]
    cache["resid_final"] = x
    cache["ln_final"] = _ln(x, eps, fs.get("ln_final"))[1]
    return x, cache


def logits_at(w: dict[str, Tensor], resid: Tensor, end: Tensor, eps: float = EPS,
              frozen: Optional[Tensor] = None) -> Float[Tensor, "batch d_vocab"]:
    """Logits at END only: the final LayerNorm and the unembedding on ``resid[b, end[b]]``."""
    x = resid[torch.arange(resid.shape[0], device=resid.device), end]
    f = None if frozen is None else frozen[torch.arange(resid.shape[0]), end]
    return _ln(x, eps, f)[0] @ w["W_U"] + w["b_U"]


def logit_diff(logits: Float[Tensor, "batch seq d_vocab"], end: Int[Tensor, "batch"],
               io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    """logit(IO) - logit(S) at each prompt's END position: [batch]."""
    if logits.ndim != 3:
        raise CausalInputError(f"logits must be [batch, seq, d_vocab] (every position), got shape "
                               f"{tuple(logits.shape)}.")
    at_end = logits[torch.arange(logits.shape[0], device=logits.device), end]
    return at_end.gather(-1, io[:, None])[:, 0] - at_end.gather(-1, s[:, None])[:, 0]


def _diff_at_end(w, resid, end, io, s, frozen=None) -> Tensor:
    logits = logits_at(w, resid, end, frozen=frozen)
    return logits.gather(-1, io[:, None])[:, 0] - logits.gather(-1, s[:, None])[:, 0]


def _check(w, layer: int, head: int, mode: Optional[str] = None) -> None:
    n_layers, n_heads = w["W_Q"].shape[:2]
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise CausalInputError(f"head {layer}.{head} does not exist: layers 0-{n_layers - 1}, heads "
                               f"0-{n_heads - 1}.")
    if mode is not None and mode not in MODES:
        raise CausalInputError(f"mode must be 'mean' or 'zero', not {mode!r}.")


def clean_logit_diff(w, tokens, end, io, s) -> Float[Tensor, "batch"]:
    resid, _ = run(w, tokens)
    return _diff_at_end(w, resid, end, io, s)


def ablate_head(w: dict[str, Tensor], tokens: Int[Tensor, "batch seq"], end: Int[Tensor, "batch"],
                io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], layer: int, head: int,
                mode: str = "mean") -> Float[Tensor, "batch"]:
    """The logit difference with head ``layer.head``'s output replaced at every position by its
    mean over the prompts of the batch (position by position), or by zero; LayerNorm and every
    later layer recomputed."""
    _check(w, layer, head, mode)
    clean_resid, cache = run(w, tokens)
    z = cache[f"z.{layer}"]
    fill = z[:, :, head].mean(0, keepdim=True) if mode == "mean" else torch.zeros_like(z[:1, :, head])

    def edit(l, z_l, _pattern):
        if l != layer:
            return z_l
        z_l = z_l.clone()
        z_l[:, :, head] = fill
        return z_l

    resid, _ = run(w, tokens, edit, start=layer, resid=cache[f"resid_pre.{layer}"])
    return _diff_at_end(w, resid, end, io, s)


def patch_head_output(w: dict[str, Tensor], clean_tokens: Int[Tensor, "batch seq"],
                      corrupt_tokens: Int[Tensor, "batch seq"], end: Int[Tensor, "batch"],
                      io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], layer: int, head: int,
                      pos: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    """The clean prompt's logit difference (its own IO and S) when head ``layer.head``'s output at
    position ``pos[b]`` is taken from the run on ``corrupt_tokens``; everything else clean,
    everything downstream recomputed."""
    _check(w, layer, head)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise CausalInputError(f"clean and corrupted prompts must have the same shape, got "
                               f"{tuple(clean_tokens.shape)} and {tuple(corrupt_tokens.shape)}.")
    _, corrupt = run(w, corrupt_tokens)
    _, clean = run(w, clean_tokens)
    rows = torch.arange(clean_tokens.shape[0], device=clean_tokens.device)
    donor = corrupt[f"z.{layer}"][rows, pos, head]

    def edit(l, z_l, _pattern):
        if l != layer:
            return z_l
        z_l = z_l.clone()
        z_l[rows, pos, head] = donor
        return z_l

    resid, _ = run(w, clean_tokens, edit, start=layer, resid=clean[f"resid_pre.{layer}"])
    return _diff_at_end(w, resid, end, io, s)


def head_effects(w: dict[str, Tensor], tokens: Tensor, end: Tensor, io: Tensor, s: Tensor,
                 corrupt_tokens: Optional[Tensor] = None, pos: Optional[Tensor] = None,
                 kinds: Optional[tuple[str, ...]] = None) -> dict[str, Tensor]:
    """Every head at once: ``clean`` [batch] and, per head, the new logit difference [n_layers,
    n_heads, batch] under ``mean`` and ``zero`` ablation and (with a corrupted batch) ``patch``
    at ``pos`` (default END); ``kinds`` picks a subset. Each layer's heads run as one stacked
    batch from that layer on."""
    n_layers, n_heads = w["W_Q"].shape[:2]
    b = tokens.shape[0]
    resid, clean = run(w, tokens)
    out = {"clean": _diff_at_end(w, resid, end, io, s)}
    corrupt = run(w, corrupt_tokens)[1] if corrupt_tokens is not None else None
    pos = end if pos is None else pos
    rows = torch.arange(b)
    rep = lambda t: t.repeat(n_heads, *([1] * (t.ndim - 1)))   # noqa: E731 - [b, ...] -> [h*b, ...]
    if kinds is None:
        kinds = ("mean", "zero") + (("patch",) if corrupt is not None else ())
    for kind in kinds:
        table = torch.empty(n_layers, n_heads, b, dtype=resid.dtype)
        for layer in range(n_layers):
            z_clean = clean[f"z.{layer}"]

            def edit(l, z_l, _p, layer=layer, kind=kind, z_clean=z_clean):
                if l != layer:
                    return z_l
                z_l = z_l.clone().view(n_heads, b, *z_l.shape[1:])
                for h in range(n_heads):
                    if kind == "mean":
                        z_l[h, :, :, h] = z_clean[:, :, h].mean(0)
                    elif kind == "zero":
                        z_l[h, :, :, h] = 0
                    else:
                        z_l[h, rows, pos, h] = corrupt[f"z.{layer}"][rows, pos, h]
                return z_l.view(n_heads * b, *z_l.shape[2:])

            r, _ = run(w, rep(tokens), edit, start=layer, resid=rep(clean[f"resid_pre.{layer}"]))
            table[layer] = _diff_at_end(w, r, rep(end), rep(io), rep(s)).view(n_heads, b)
        out[kind] = table
    return out


def path_patch_query(w: dict[str, Tensor], clean_tokens: Tensor, corrupt_tokens: Tensor, end: Tensor,
                     io: Tensor, s: Tensor, sender: tuple[int, int], receiver: tuple[int, int]) -> Tensor:
    """Path patching into one head's query: the logit difference when ONLY the query of head
    ``receiver`` at END sees the output of head ``sender`` from the corrupted run (at END); every
    other path keeps the clean run's values. The receiver's query is recomputed from the clean
    residual stream plus the sender's change, with its LayerNorm recomputed; layers after the
    receiver's are rerun."""
    (l1, h1), (l2, h2) = sender, receiver
    _check(w, l1, h1)
    _check(w, l2, h2)
    if l1 >= l2:
        raise CausalInputError(f"the sender {l1}.{h1} must be in an earlier layer than the receiver {l2}.{h2}.")
    return _path_patch(w, clean_tokens, run(w, clean_tokens)[1], run(w, corrupt_tokens)[1], end, io, s,
                       sender, receiver)


def _path_patch(w, clean_tokens, clean, corrupt, end, io, s, sender, receiver) -> Tensor:
    """:func:`path_patch_query` from the clean and corrupted runs' caches."""
    (l1, h1), (l2, h2) = sender, receiver
    rows = torch.arange(clean_tokens.shape[0], device=clean_tokens.device)
    delta = (corrupt[f"z.{l1}"][rows, end, h1] - clean[f"z.{l1}"][rows, end, h1]) @ w["W_O"][l1, h1]

    def edit_q(l, x, q):
        if l != l2:
            return q
        q = q.clone()
        normed = _ln(x[rows, end] + delta, EPS)[0]
        q[rows, end, h2] = normed @ w["W_Q"][l2, h2] + w["b_Q"][l2, h2]
        return q

    resid, _ = run(w, clean_tokens, start=l2, resid=clean[f"resid_pre.{l2}"], edit_q=edit_q)
    return _diff_at_end(w, resid, end, io, s)


@torch.no_grad()
def path_patch_query_hooked(model, clean_tokens, corrupt_tokens, end, io, s, sender, receiver) -> Tensor:
    """:func:`path_patch_query` through the bridge: ``hook_q`` of the receiver is replaced by the
    query computed from ``hook_resid_pre`` plus the sender's change read from ``hook_z``."""
    (l1, h1), (l2, h2) = sender, receiver
    names = (f"blocks.{l1}.attn.hook_z", f"blocks.{l2}.hook_resid_pre")
    _, clean = model.run_with_cache(clean_tokens, names_filter=lambda n: n in names)
    _, corrupt = model.run_with_cache(corrupt_tokens, names_filter=lambda n: n == names[0])
    rows = torch.arange(clean_tokens.shape[0])
    delta = (corrupt[names[0]][rows, end, h1] - clean[names[0]][rows, end, h1]) @ model.W_O[l1, h1]
    x = ln_scale(clean[names[1]][rows, end] + delta, model.cfg.eps)[0]
    new_q = x @ model.W_Q[l2, h2] + model.b_Q[l2, h2]

    def hook(q, hook):
        q = q.clone()
        q[rows, end, h2] = new_q
        return q

    return _bridge_diff(model, clean_tokens, end, io, s, [(f"blocks.{l2}.attn.hook_q", hook)])


# --------------------------------------------------------------------------- corrupted prompts
def corrupt_prompts(prompts, kind: str = "swap", seed: int = 0):
    """Corrupted copies of IOI prompts with the same template, order and fillers: ``swap`` puts S
    where IO was and IO where S was (the answer becomes S); ``replace`` puts two names that are
    in neither slot of the original."""
    from mechinterp_edu.lessons.ioi_scores.data import NAMES

    if kind not in ("swap", "replace"):
        raise CausalInputError(f"kind must be 'swap' or 'replace', not {kind!r}.")
    rng = random.Random(f"corrupt-{kind}-{seed}")
    out = []
    for p in prompts:
        if kind == "swap":
            io, s = p.s, p.io
        else:
            io, s = rng.sample([n for n in NAMES if n not in (p.io, p.s)], 2)
        words = [io if w == p.io else s if w == p.s else w for w in p.words]
        out.append(type(p)(words, io, s, p.template, p.order, dict(p.positions)))
    return out


# --------------------------------------------------------------------------- hook-based (bridge)
def _hook_z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _bridge_diff(model, tokens, end, io, s, hooks) -> Tensor:
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logit_diff(logits, end, io, s)


@torch.no_grad()
def ablate_head_hooked(model, tokens, end, io, s, layer: int, head: int, mode: str = "mean") -> Tensor:
    """:func:`ablate_head` through the model's own ``hook_z`` (TransformerBridge ``run_with_hooks``)."""
    name = _hook_z_name(layer)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    z = cache[name]
    fill = z[:, :, head].mean(0) if mode == "mean" else torch.zeros_like(z[0, :, head])
    return _bridge_diff(model, tokens, end, io, s, [(name, z_fill_hook(head, fill))])


def z_fill_hook(head: int, fill: Float[Tensor, "seq d_head"]):
    """A ``hook_z`` hook that sets one head's z to ``fill`` at every prompt (cut to the run's length)."""
    def hook(z, hook=None):
        z = z.clone()
        z[:, :, head] = fill[: z.shape[1]].to(z.dtype)
        return z
    return hook


@torch.no_grad()
def patch_head_output_hooked(model, clean_tokens, corrupt_tokens, end, io, s, layer: int, head: int,
                             pos: Tensor) -> Tensor:
    """:func:`patch_head_output` through the model's own ``hook_z``."""
    name = _hook_z_name(layer)
    _, cache = model.run_with_cache(corrupt_tokens, names_filter=lambda n: n == name)
    rows = torch.arange(clean_tokens.shape[0])
    donor = cache[name][rows, pos, head]

    def hook(value, hook):
        value = value.clone()
        value[rows, pos, head] = donor
        return value

    return _bridge_diff(model, clean_tokens, end, io, s, [(name, hook)])
