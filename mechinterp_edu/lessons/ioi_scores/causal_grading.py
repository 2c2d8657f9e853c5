"""Lesson 5 graded causal exercises: ``logit_diff``, ``ablate_head``, ``patch_head_output``.

The learner's functions receive the model as a dict of TransformerLens-shaped, LayerNorm-folded
weights (``W_E, W_pos, W_Q [L, H, d_model, d_head], ..., W_U, b_U``) and run it with the
``run_model`` helper given in the exercise file. Cases: two random GPT-2-architecture models
(float64 and float32, END not always the last position) and, when its checkpoint loads, the
trained ``ioi_small`` on test prompts with their IO/S-swapped or name-replaced corruptions.
Each catalogued mistake is a wrong variant with the exercise's signature.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.ioi_scores import causal as C

LESSON = 5
F32, F64 = torch.float32, torch.float64


# --------------------------------------------------------------------------- inputs
def random_weights(n_layers: int, n_heads: int, d_model: int, d_head: int, d_vocab: int, n_ctx: int,
                   seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A random folded GPT-2-architecture model (no LayerNorm gains), in TransformerLens shapes."""
    g = torch.Generator().manual_seed(seed)
    L, H, d, e, m = n_layers, n_heads, d_model, d_head, 4 * d_model

    def r(*shape, s=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * s).to(dtype)

    return {"W_E": r(d_vocab, d), "W_pos": r(n_ctx, d, s=0.5),
            "W_Q": r(L, H, d, e, s=2 / math.sqrt(d)), "W_K": r(L, H, d, e, s=2 / math.sqrt(d)),
            "W_V": r(L, H, d, e, s=1 / math.sqrt(d)), "b_Q": r(L, H, e, s=0.3), "b_K": r(L, H, e, s=0.3),
            "b_V": r(L, H, e, s=0.3), "W_O": r(L, H, e, d, s=1 / math.sqrt(e)), "b_O": r(L, d, s=0.1),
            "W_in": r(L, d, m, s=1 / math.sqrt(d)), "b_in": r(L, m, s=0.1),
            "W_out": r(L, m, d, s=1 / math.sqrt(m)), "b_out": r(L, d, s=0.1),
            "W_U": r(d, d_vocab, s=1 / math.sqrt(d)), "b_U": r(d_vocab, s=0.1)}


def _random_batch(w, batch: int, seq: int, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    V = w["W_E"].shape[0]
    tokens = torch.randint(0, V, (batch, seq), generator=g)
    corrupt = tokens.clone()
    corrupt[:, 1:] = torch.randint(0, V, (batch, seq - 1), generator=g)
    end = torch.randint(seq // 2, seq, (batch,), generator=g)
    end[0] = seq - 2                                   # END is not always the last position
    io = torch.randint(0, V, (batch,), generator=g)
    s = (io + 1 + torch.randint(0, V - 1, (batch,), generator=g)) % V
    pos = torch.minimum(torch.randint(1, seq, (batch,), generator=g), end)
    return {"tokens": tokens, "corrupt": corrupt, "end": end, "io": io, "s": s, "pos": pos}


_TOY: dict[torch.dtype, Any] = {}


def toy_setup(dtype: torch.dtype, kind: str) -> Optional[dict[str, Any]]:
    """The trained ioi_small (plain-torch forward) on 6 test prompts, or None if it cannot load."""
    key = (dtype, kind)
    if key in _TOY:
        return _TOY[key]
    try:
        from mechinterp_edu.lessons.ioi_scores import forward as ioi_forward
        from mechinterp_edu.lessons.ioi_scores.data import encode_prompts, sample_prompts
        model = ioi_forward.load(dtype=dtype)
        prompts = sample_prompts(6, "test", seed=11)
        clean = encode_prompts(prompts, model.ioi_vocab)
        corrupt = encode_prompts(C.corrupt_prompts(prompts, kind, seed=11), model.ioi_vocab)
    except Exception:  # noqa: BLE001 - a missing checkpoint drops these cases, it does not break grading
        return None
    _TOY[key] = {"w": C.weights_of(model, dtype), "tokens": clean.tokens, "corrupt": corrupt.tokens,
                 "end": clean.positions["END"], "io": clean.io_tokens, "s": clean.s_tokens,
                 "pos_S2": clean.positions["S2"], "pos_END": clean.positions["END"]}
    return _TOY[key]


RANDOM_MODELS = (
    ("random model, 2 layers x 2 heads, d_model 8, float64", (2, 2, 8, 4, 13, 8, 21, F64), (5, 7, 22)),
    ("random model, 3 layers x 3 heads, d_model 12, float32", (3, 3, 12, 4, 17, 10, 23, F32), (4, 9, 24)),
)


def setups() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for label, wargs, (batch, seq, seed) in RANDOM_MODELS:
        w = random_weights(*wargs)
        d = _random_batch(w, batch, seq, seed)
        out.append((label, {"w": w, **d}, {"model": label, "n_layers": wargs[0], "n_heads": wargs[1]}))
    for dtype, kind in ((F32, "swap"), (F64, "replace")):
        t = toy_setup(dtype, kind)
        if t is not None:
            label = f"trained ioi_small, 6 test prompts, {kind} corruption, {str(dtype)[6:]}"
            out.append((label, t, {"model": "ioi_small (trained)", "n_layers": 3, "n_heads": 4}))
    return out


# (layer, head, mode, position key) per setup index; toy cases cover heads of every layer
ABLATIONS = ((0, 1, "mean"), (1, 2, "mean"), (0, 3, "mean"), (1, 0, "zero"))
PATCHES = ((0, 0, "pos"), (1, 1, "end"), (0, 3, "pos_S2"), (1, 0, "pos_END"))


def _logit_cases() -> list[Case]:
    out = []
    for label, s, info in setups()[:3]:
        logits, _ = _logits_all(s["w"], s["tokens"])
        out.append(Case(label, (logits, s["end"], s["io"], s["s"]), info))
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, 6, generator=g, dtype=F64) * 3
    out.append(Case("random logits, batch 3, END before the last position",
                    (logits, torch.tensor([2, 3, 1]), torch.tensor([0, 5, 2]), torch.tensor([4, 1, 3])), {}))
    return out


def _logits_all(w, tokens):
    resid, cache = C.run(w, tokens)
    return C._ln(resid, C.EPS)[0] @ w["W_U"] + w["b_U"], cache


def _ablate_cases() -> list[Case]:
    return [Case(f"{label}; head {l}.{h}, {mode}-ablation",
                 (s["w"], s["tokens"], s["end"], s["io"], s["s"], l, h, mode),
                 dict(info, layer=l, head=h, mode=mode))
            for (label, s, info), (l, h, mode) in zip(setups(), ABLATIONS)]


def _patch_cases() -> list[Case]:
    cases = []
    for (label, s, info), (l, h, key) in zip(setups(), PATCHES):
        pos = s["end"] if key == "end" else s[key]
        where = {"pos": "random positions", "end": "END", "pos_S2": "S2", "pos_END": "END"}[key]
        cases.append(Case(f"{label}; head {l}.{h} patched at {where}",
                          (s["w"], s["tokens"], s["corrupt"], s["end"], s["io"], s["s"], l, h, pos),
                          dict(info, layer=l, head=h)))
    return cases


# --------------------------------------------------------------------------- wrong variants
def _ld_last_position(logits, end, io, s):
    return C.logit_diff(logits, torch.full_like(end, logits.shape[1] - 1), io, s)


def _ld_s_minus_io(logits, end, io, s):
    return -C.logit_diff(logits, end, io, s)


def _ld_probabilities(logits, end, io, s):
    return C.logit_diff(logits.softmax(-1), end, io, s)


def _fill(w, tokens, layer, head, mode):
    z = C.run(w, tokens)[1][f"z.{layer}"][:, :, head]
    return z.mean(0, keepdim=True) if mode == "mean" else torch.zeros_like(z[:1])


def _ablate_pattern(w, tokens, end, io, s, layer, head, mode):
    pattern = C.run(w, tokens)[1][f"pattern.{layer}"][:, head]
    fill = pattern.mean(0) if mode == "mean" else torch.zeros_like(pattern[0])

    def edit(l, p):
        if l == layer:
            p = p.clone()
            p[:, head] = fill
        return p

    return C._diff_at_end(w, C.run(w, tokens, edit_pattern=edit)[0], end, io, s)


def _ablate_frozen_ln(w, tokens, end, io, s, layer, head, mode):
    _, cache = C.run(w, tokens)
    frozen = {k: v for k, v in cache.items() if k.startswith("ln")}
    fill = _fill(w, tokens, layer, head, mode)

    def edit(l, z, _p):
        if l == layer:
            z = z.clone()
            z[:, :, head] = fill
        return z

    resid, _ = C.run(w, tokens, edit, frozen_scales=frozen)
    return C._diff_at_end(w, resid, end, io, s, frozen=frozen["ln_final"])


def _ablate_direct_only(w, tokens, end, io, s, layer, head, mode):
    resid, cache = C.run(w, tokens)
    rows = torch.arange(tokens.shape[0])
    z = cache[f"z.{layer}"][rows, end, head]
    fill = _fill(w, tokens, layer, head, mode)[0, end] if mode == "mean" else torch.zeros_like(z)
    change = (fill - z) @ w["W_O"][layer, head]
    change = change - change.mean(-1, keepdim=True)
    scale = cache["ln_final"][rows, end]
    direction = w["W_U"][:, io].T - w["W_U"][:, s].T
    return C._diff_at_end(w, resid, end, io, s) + (change / scale * direction).sum(-1)


def _ablate_mean_everything(w, tokens, end, io, s, layer, head, mode):
    if mode != "mean":
        return C.ablate_head(w, tokens, end, io, s, layer, head, mode)
    z_all = C.run(w, tokens)[1][f"z.{layer}"][:, :, head]
    fill = z_all.mean((0, 1))

    def edit(l, z, _p):
        if l == layer:
            z = z.clone()
            z[:, :, head] = fill
        return z

    return C._diff_at_end(w, C.run(w, tokens, edit)[0], end, io, s)


def _patch_with(w, clean, corrupt, end, io, s, layer, head, where, frozen=False, pattern=False):
    _, ccache = C.run(w, corrupt)
    _, cache = C.run(w, clean)
    rows = torch.arange(clean.shape[0])
    frozen_scales = {k: v for k, v in cache.items() if k.startswith("ln")} if frozen else None
    if pattern:
        donor = ccache[f"pattern.{layer}"][:, head]

        def edit_p(l, p):
            if l == layer:
                p = p.clone()
                p[rows, head, where] = donor[rows, where]
            return p
        resid, _ = C.run(w, clean, edit_pattern=edit_p)
        return C._diff_at_end(w, resid, end, io, s)
    donor = ccache[f"z.{layer}"][:, :, head]

    def edit(l, z, _p):
        if l == layer:
            z = z.clone()
            if where is None:
                z[:, :, head] = donor
            else:
                z[rows, where, head] = donor[rows, where]
        return z

    resid, _ = C.run(w, clean, edit, frozen_scales=frozen_scales)
    return C._diff_at_end(w, resid, end, io, s, frozen=None if not frozen else frozen_scales["ln_final"])


def _patch_every_position(w, clean, corrupt, end, io, s, layer, head, pos):
    return _patch_with(w, clean, corrupt, end, io, s, layer, head, None)


def _patch_at_end(w, clean, corrupt, end, io, s, layer, head, pos):
    return _patch_with(w, clean, corrupt, end, io, s, layer, head, end)


def _patch_pattern(w, clean, corrupt, end, io, s, layer, head, pos):
    return _patch_with(w, clean, corrupt, end, io, s, layer, head, pos, pattern=True)


def _patch_frozen_ln(w, clean, corrupt, end, io, s, layer, head, pos):
    return _patch_with(w, clean, corrupt, end, io, s, layer, head, pos, frozen=True)


M = Mistake
FROZEN_LN = ("forgetting that LayerNorm is recomputed",
             "forgetting that LayerNorm is recomputed: after an intervention every later LayerNorm (ln1, ln2 "
             "and ln_final) divides by the scale of the EDITED residual stream. Rerun the model with the edit; "
             "do not reuse the clean run's scales.")

LOGIT_DIFF = Exercise(
    lesson=LESSON, name="logit_diff", points=1, reference=C.logit_diff, cases=_logit_cases,
    summary="logit(IO) - logit(S) at each prompt's END position: [batch].", difficulty=1, minutes=5,
    mistakes=[
        M("reading the last position instead of END",
          "reading the last position instead of END: take each prompt's logits at its own END position "
          "(`end[b]`), which need not be the last position of the tensor.", _ld_last_position),
        M("S minus IO", "S minus IO: the logit difference is logit(IO) - logit(S); positive means the model "
          "prefers the right answer.", _ld_s_minus_io),
        M("a difference of probabilities",
          "a difference of probabilities: use the logits themselves (a difference of log-probabilities is the "
          "same number; of probabilities it is not).", _ld_probabilities),
    ],
)

ABLATE_HEAD = Exercise(
    lesson=LESSON, name="ablate_head", points=2, reference=C.ablate_head, cases=_ablate_cases,
    summary="Mean- or zero-ablate one head's output, rerun the model, return the new logit difference.",
    difficulty=2, minutes=20,
    mistakes=[
        M("ablating the pattern instead of the output",
          "ablating the pattern instead of the output: replacing the attention pattern by its mean still mixes "
          "THIS prompt's values. Ablate the head's output (its z, before W_O): z[:, :, head] := mean of z over "
          "the prompts, or 0.", _ablate_pattern),
        M(*FROZEN_LN, _ablate_frozen_ln),
        M("the direct path only",
          "the direct path only: pushing the head's change through the unembedding with the clean final "
          "LayerNorm scale ignores every later layer (and the recomputed LayerNorm). Rerun the model from the "
          "edit.", _ablate_direct_only),
        M("averaging over positions too",
          "averaging over positions too: mean-ablation replaces the head's output at each position by its mean "
          "over the prompts AT THAT POSITION (mean over dim 0 only).", _ablate_mean_everything),
    ],
)

PATCH_HEAD_OUTPUT = Exercise(
    lesson=LESSON, name="patch_head_output", points=2, reference=C.patch_head_output, cases=_patch_cases,
    summary="Patch one head's output at pos[b] from the corrupted run into the clean run: new logit difference.",
    difficulty=2, minutes=20,
    mistakes=[
        M("patching every position",
          "patching every position: patch the head's output only at `pos[b]` of each prompt; the other "
          "positions keep the clean run's output.", _patch_every_position),
        M("patching at END instead of `pos`",
          "patching at END instead of `pos`: the position to patch is an argument (e.g. S2 for a layer-0 head "
          "whose output is read there), not always the last word.", _patch_at_end),
        M("patching the pattern instead of the output",
          "patching the pattern instead of the output: the corrupted pattern applied to the CLEAN values moves "
          "the clean names around. Patch the head's output (z) from the corrupted run.", _patch_pattern),
        M(*FROZEN_LN, _patch_frozen_ln),
    ],
)

CAUSAL_EXERCISES: tuple[Exercise, ...] = (LOGIT_DIFF, ABLATE_HEAD, PATCH_HEAD_OUTPUT)
