"""Lesson 2 graded exercises: full_qk_circuit, full_ov_circuit, positional_qk, copying_score.

Cases: random weights of several shapes and seeds (one head, d_head >= d_vocab, a single
position, float32 and float64) and, when its checkpoint loads, the trained ``skip_trigrams``
model in float32 and float64. Each catalogued mistake is a wrong variant with the exercise's
signature.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from mechinterp_edu.course import collector
from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.qk_ov_circuits import reference as ref
from mechinterp_edu.models.toys import random_weights, trained_weights

EXERCISES: list[Exercise] = []
register_exercise = collector(EXERCISES)

LESSON = 2
F32, F64 = torch.float32, torch.float64

# (label, d_vocab, d_model, n_heads, d_head, n_ctx, seed, dtype)
RANDOM_SHAPES: tuple[tuple, ...] = (
    ("random, 4 heads, d_head 2, float64", 7, 8, 4, 2, 6, 0, F64),
    ("random, 3 heads, d_head 4, float32", 11, 12, 3, 4, 9, 1, F32),
    ("random, one head, float64", 5, 6, 1, 3, 4, 2, F64),
    ("random, d_head > d_vocab, one position, float32", 4, 8, 2, 6, 1, 3, F32),
    ("random, 8 heads, float64", 13, 16, 8, 2, 8, 4, F64),
)


def weight_cases() -> list[tuple[str, dict[str, torch.Tensor], dict[str, Any]]]:
    out = []
    for label, v, m, h, d, n_ctx, seed, dtype in RANDOM_SHAPES:
        w = random_weights(v, m, h, d, n_ctx, seed=100 + seed, dtype=dtype)
        out.append((label, w, {"model": f"random (seed {100 + seed})", "d_vocab": v, "d_model": m, "n_heads": h,
                               "d_head": d, "n_ctx": n_ctx, "dtype": str(dtype).replace("torch.", "")}))
    for dtype in (F32, F64):
        trained = trained_weights("skip_trigrams", dtype=dtype)
        if trained is None:
            continue
        w, _ = trained
        v, m = w["W_E"].shape
        h, _, d = w["W_Q"].shape
        out.append((f"trained skip_trigrams, {str(dtype).replace('torch.', '')}", w,
                    {"model": "skip_trigrams (trained)", "d_vocab": v, "d_model": m, "n_heads": h, "d_head": d,
                     "n_ctx": w["W_pos"].shape[0], "dtype": str(dtype).replace("torch.", "")}))
    return out


def _cases(keys: tuple[str, ...]) -> Callable[[], list[Case]]:
    def make() -> list[Case]:
        return [Case(label, tuple(w[k] for k in keys), info) for label, w, info in weight_cases()]
    return make


# --------------------------------------------------------------------------- wrong variants
def _qk_transposed(E, W_Q, W_K):
    return ref.full_qk_circuit(E, W_Q, W_K).transpose(-1, -2)


def _qk_scaled(E, W_Q, W_K):
    return ref.full_qk_circuit(E, W_Q, W_K) / math.sqrt(W_Q.shape[-1])


def _qk_no_embedding(E, W_Q, W_K):
    return torch.einsum("hmd,hnd->hmn", W_Q, W_K)


def _pos_masked(W_pos, W_Q, W_K):
    qk = ref.positional_qk(W_pos, W_Q, W_K)
    n = qk.shape[-1]
    return qk.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool, device=qk.device), 1), 0.0)


def _ov_transposed(W_E, W_V, W_O, W_U):
    return ref.full_ov_circuit(W_E, W_V, W_O, W_U).transpose(-1, -2)


def _ov_no_embedding(W_E, W_V, W_O, W_U):
    return torch.einsum("hmd,hdn->hmn", W_V, W_O) @ W_U


def _ov_no_unembedding(W_E, W_V, W_O, W_U):
    return torch.einsum("vm,hmd,hdn->hvn", W_E, W_V, W_O)


def _copy_abs_numerator(W_E, W_V, W_O, W_U):
    eig = ref.ov_eigenvalues(W_E, W_V, W_O, W_U)
    return torch.where(eig.abs().sum(-1) > 0, torch.ones_like(eig.abs().sum(-1)), 0.0).to(W_E.dtype)


def _copy_real_denominator(W_E, W_V, W_O, W_U):
    eig = ref.ov_eigenvalues(W_E, W_V, W_O, W_U)
    return (eig.sum(-1).real / eig.real.abs().sum(-1)).to(W_E.dtype)


def _copy_residual_ov(W_E, W_V, W_O, W_U):
    eig = torch.linalg.eigvals(torch.einsum("hmd,hdn->hmn", W_V.double(), W_O.double()))
    return ref.copying_score_from_eigenvalues(eig).to(W_E.dtype)


def _copy_largest_only(W_E, W_V, W_O, W_U):
    eig = ref.ov_eigenvalues(W_E, W_V, W_O, W_U)
    top = eig.gather(-1, eig.abs().argmax(-1, keepdim=True)).squeeze(-1)
    return (top.real / top.abs()).to(W_E.dtype)


QK_MISTAKES: dict[str, tuple[str, Callable]] = {
    "QK circuit transposed": (
        "Rows are keys and columns queries here. The full QK circuit has the query (destination) token "
        "on the rows: W_E W_Q (W_E W_K)^T.", _qk_transposed),
    "QK circuit scaled": (
        "This is divided by sqrt(d_head). The circuit is asked for unscaled; the scale belongs to the "
        "attention scores.", _qk_scaled),
    "missing W_E": (
        "This is W_Q W_K^T in the residual basis. Put the embedding on both sides to get a token x token "
        "table: W_E W_Q (W_E W_K)^T.", _qk_no_embedding),
}

POS_MISTAKES: dict[str, tuple[str, Callable]] = {
    "QK circuit transposed": (
        "Rows are key positions here; the query position goes on the rows: W_pos W_Q (W_pos W_K)^T.",
        lambda W_pos, W_Q, W_K: _qk_transposed(W_pos, W_Q, W_K)),
    "QK circuit scaled": ("This is divided by sqrt(d_head); the positional circuit is asked for unscaled.",
                          lambda W_pos, W_Q, W_K: _qk_scaled(W_pos, W_Q, W_K)),
    "masked above the diagonal": (
        "Entries above the diagonal were zeroed. The circuit itself is unmasked; the causal mask is "
        "applied to the scores of a prompt.", _pos_masked),
}

OV_MISTAKES: dict[str, tuple[str, Callable]] = {
    "OV factors in the wrong order": (
        "This is the transpose, (W_E W_V W_O W_U)^T: the paper's column-vector order W_U W_OV W_E. With "
        "row vectors the source token is on the rows: W_E W_V W_O W_U.", _ov_transposed),
    "missing W_E": (
        "This starts from the residual stream (W_V W_O W_U). Start from tokens: W_E W_V W_O W_U.",
        _ov_no_embedding),
    "missing W_U": (
        "This stops in the residual stream (W_E W_V W_O). End in logits: multiply by W_U.",
        _ov_no_unembedding),
}

def _one_ov(fn: Callable) -> Callable:
    """``fn`` with head 0's W_V, W_O used for every head."""
    def wrong(W_E, W_V, W_O, W_U):
        return fn(W_E, W_V[:1].expand_as(W_V).contiguous(), W_O[:1].expand_as(W_O).contiguous(), W_U)
    return wrong


ONE_OV = ("one OV circuit for every head",
          "Every head got the same OV circuit (head 0's). Each head has its own W_V^h and W_O^h: use "
          "W_V[h] and W_O[h] for head h (or broadcast over the head axis).")
OV_MISTAKES[ONE_OV[0]] = (ONE_OV[1], _one_ov(ref.full_ov_circuit))

COPY_MISTAKES: dict[str, tuple[str, Callable]] = {
    ONE_OV[0]: (ONE_OV[1], _one_ov(ref.copying_score)),
    "absolute values in the numerator": (
        "Sum of |lambda| over sum of |lambda| is always 1. The numerator is the (real part of the) sum "
        "of the eigenvalues themselves.", _copy_abs_numerator),
    "real parts in the denominator": (
        "The denominator sums |Re lambda|; it must sum the moduli |lambda| of the complex eigenvalues.",
        _copy_real_denominator),
    "eigenvalues of W_V W_O only": (
        "These are the eigenvalues of W_OV in the residual basis. The copying score uses the full OV "
        "circuit W_E W_V W_O W_U, a map from tokens to logits.", _copy_residual_ov),
    "largest eigenvalue only": (
        "Only the eigenvalue of largest modulus was used; the score sums over all eigenvalues.",
        _copy_largest_only),
}


def _mistakes(table: dict[str, tuple[str, Callable]]) -> list[Mistake]:
    return [Mistake(name, f"{name}: {message}", fn) for name, (message, fn) in table.items()]


def _per_head_terms(fn: Callable) -> Callable[[Case], dict[str, torch.Tensor]]:
    def terms(case: Case) -> dict[str, torch.Tensor]:
        full = fn(*case.args)
        out = {}
        for h in range(full.shape[0]):
            only = torch.zeros_like(full)
            only[h] = full[h]
            out[f"head {h}"] = only
        return out
    return terms


# --------------------------------------------------------------------------- registration
register_exercise(Exercise(
    lesson=LESSON, name="full_qk_circuit", points=2, reference=ref.full_qk_circuit,
    cases=_cases(("W_E", "W_Q", "W_K")),
    summary="W_E W_Q^h (W_E W_K^h)^T for every head: [n_heads, query token, key token], unscaled.",
    difficulty=1, minutes=10, terms=_per_head_terms(ref.full_qk_circuit), mistakes=_mistakes(QK_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="full_ov_circuit", points=2, reference=ref.full_ov_circuit,
    cases=_cases(("W_E", "W_V", "W_O", "W_U")),
    summary="W_E W_V^h W_O^h W_U for every head: [n_heads, source token, output token].",
    difficulty=1, minutes=10, terms=_per_head_terms(ref.full_ov_circuit), mistakes=_mistakes(OV_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="positional_qk", points=1, reference=ref.positional_qk,
    cases=_cases(("W_pos", "W_Q", "W_K")),
    summary="W_pos W_Q^h (W_pos W_K^h)^T for every head: [n_heads, query position, key position], unscaled.",
    difficulty=1, minutes=5, mistakes=_mistakes(POS_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="copying_score", points=3, reference=ref.copying_score,
    cases=_cases(("W_E", "W_V", "W_O", "W_U")),
    summary="Re(Σ eigenvalues) / Σ |eigenvalues| of each head's full OV circuit: [n_heads].",
    difficulty=2, minutes=15, mistakes=_mistakes(COPY_MISTAKES),
))

__all__ = ["COPY_MISTAKES", "OV_MISTAKES", "POS_MISTAKES", "QK_MISTAKES", "weight_cases"]
