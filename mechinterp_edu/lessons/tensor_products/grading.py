"""Lesson 1 graded exercises: attention_patterns, kron_apply, tensor_product_logits, corrected_notes_T.

Cases: random weights of several shapes and seeds (one head, n_ctx = 1, n_ctx < n_ctx_max,
float32 and float64) and, when its checkpoint loads, the trained ``skip_trigrams`` model in
float32 and float64. The mistake catalogue computes each known wrong variant with the same
signature as the exercise, so the grader can name it when a submission matches it.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from mechinterp_edu.course import collector
from mechinterp_edu.grader.spec import Case, Exercise, Mistake
from mechinterp_edu.lessons.tensor_products import reference as ref
from mechinterp_edu.models import toys

EXERCISES: list[Exercise] = []
register_exercise = collector(EXERCISES)

LESSON = 1
F32, F64 = torch.float32, torch.float64
TRAINED_PROMPT = "keep the a in mind so take it to was heart"

# (label, d_vocab, d_model, n_heads, d_head, n_ctx_max, n_ctx, seed, dtype)
RANDOM_SHAPES: tuple[tuple, ...] = (
    ("random, 4 heads, d_head 2, float64", 7, 8, 4, 2, 6, 5, 0, F64),
    ("random, 3 heads, d_head 4, full context, float32", 11, 12, 3, 4, 9, 9, 1, F32),
    ("random, one head, float64", 5, 6, 1, 6, 4, 4, 2, F64),
    ("random, n_ctx = 1, float32", 6, 8, 4, 2, 5, 1, 3, F32),
    ("random, 8 heads, float64", 13, 16, 8, 2, 8, 7, 4, F64),
    ("random, 2 heads, d_head 3, float32", 9, 12, 2, 3, 10, 6, 5, F32),
)


def _tokens(n_ctx: int, d_vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + seed)
    return torch.randint(0, d_vocab, (n_ctx,), generator=gen)


def trained_weights(dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """(weights, prompt tokens) of the trained skip_trigrams model, or None if it cannot be loaded."""
    return toys.trained_weights("skip_trigrams", TRAINED_PROMPT, dtype)


def model_cases() -> list[tuple[str, dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]]:
    """(label, weights, tokens, info) for every random shape and the trained model."""
    out = []
    for label, v, m, h, d, ctx_max, n, seed, dtype in RANDOM_SHAPES:
        w = ref.random_weights(v, m, h, d, ctx_max, seed=seed, dtype=dtype)
        info = {"model": f"random (seed {seed})", "d_vocab": v, "d_model": m, "n_heads": h, "d_head": d,
                "n_ctx": n, "n_ctx_max": ctx_max, "dtype": str(dtype).replace("torch.", "")}
        out.append((label, w, _tokens(n, v, seed), info))
    for dtype in (F32, F64):
        trained = trained_weights(dtype)
        if trained is None:
            continue
        w, tokens = trained
        v, m = w["W_E"].shape
        h, _, d = w["W_Q"].shape
        info = {"model": "skip_trigrams (trained)", "d_vocab": v, "d_model": m, "n_heads": h, "d_head": d,
                "n_ctx": len(tokens), "n_ctx_max": w["W_pos"].shape[0], "dtype": str(dtype).replace("torch.", "")}
        out.append((f"trained skip_trigrams, {info['dtype']}", w, tokens, info))
    return out


KEYS_ATTN = ("W_E", "W_pos", "W_Q", "W_K")
KEYS_ALL = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")


# --------------------------------------------------------------------------- wrong variants
def _resid(tokens, W_E, W_pos, positions: bool = True):
    tokens = ref.check_tokens(tokens, W_E, W_pos)
    return W_E[tokens] + (W_pos[: tokens.shape[-1]] if positions else 0)


def _pattern_variant(**kw) -> Callable:
    positions = kw.pop("positions", True)
    swap = kw.pop("swap_qk", False)

    def fn(tokens, W_E, W_pos, W_Q, W_K):
        q, k = (W_K, W_Q) if swap else (W_Q, W_K)
        return ref.attention_patterns_from_residual(_resid(tokens, W_E, W_pos, positions), q, k, **kw)
    return fn


def _mask_after_softmax(tokens, W_E, W_pos, W_Q, W_K):
    unmasked = ref.attention_patterns_from_residual(_resid(tokens, W_E, W_pos), W_Q, W_K, causal=False)
    n = unmasked.shape[-1]
    return unmasked * torch.ones(n, n, dtype=unmasked.dtype, device=unmasked.device).tril()


PATTERN_MISTAKES: dict[str, tuple[str, Callable]] = {
    "missing 1/sqrt(d_head)": (
        "The scores were not divided by sqrt(d_head) before the softmax: the pattern is too sharp. "
        "Scale q.k by 1/sqrt(d_head).", _pattern_variant(scale="none")),
    "1/d_head instead of 1/sqrt(d_head)": (
        "The scores were divided by d_head instead of sqrt(d_head): the pattern is too flat.",
        _pattern_variant(scale="d_head")),
    "no causal mask": (
        "Positions attend to later positions: mask the scores above the diagonal with -inf before the "
        "softmax (a token may only look at itself and earlier tokens).", _pattern_variant(causal=False)),
    "mask applied after the softmax": (
        "The future was zeroed after the softmax, so rows no longer sum to 1. Set the scores above the "
        "diagonal to -inf before the softmax instead.", _mask_after_softmax),
    "softmax over the wrong axis": (
        "The softmax ran over destinations (queries, axis -2); it must run over sources (keys, the last "
        "axis), so that each destination row sums to 1.", _pattern_variant(softmax_axis="query")),
    "missing positional embeddings": (
        "The residual stream lacks the positional embeddings: use W_E[tokens] + W_pos[:n_ctx].",
        _pattern_variant(positions=False)),
    "queries and keys swapped": (
        "W_Q and W_K were swapped (scores k_i . q_j): the query comes from the destination position, "
        "the key from the source.", _pattern_variant(swap_qk=True)),
}


def _logits_from_patterns(patterns_fn: Callable) -> Callable:
    def fn(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
        patterns = patterns_fn(tokens, W_E, W_pos, W_Q, W_K)
        return ref.tensor_product_terms(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, patterns=patterns).total()
    return fn


def _missing_direct(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    t = ref.tensor_product_terms(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return t.head_tokens.sum(-3) + t.head_positions.sum(-3)


def _no_positions(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    return ref.tensor_product_terms(tokens, W_E, torch.zeros_like(W_pos), W_Q, W_K, W_V, W_O, W_U).total()


def _positions_only_in_attention(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    t = ref.tensor_product_terms(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return t.direct_tokens + t.head_tokens.sum(-3)


def _token_terms(apply: Callable, transpose: bool = True) -> Callable:
    """Logits whose token (paper) terms use ``apply(A, W, X)``; positional terms computed correctly."""
    def fn(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
        t = ref.tensor_product_terms(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
        tokens = ref.check_tokens(tokens, W_E, W_pos)
        X = ref.one_hot(tokens, W_E.shape[0], W_E.dtype)
        n = X.shape[0]
        eye = torch.eye(n, dtype=X.dtype, device=X.device)
        flip = (lambda M: M.T) if transpose else (lambda M: M)  # noqa: E731
        out = apply(eye, flip(W_E @ W_U), X) + t.direct_positions
        for h in range(W_Q.shape[0]):
            out = out + apply(t.patterns[h], flip(W_E @ W_V[h] @ W_O[h] @ W_U), X) + t.head_positions[h]
        return out
    return fn


def _outer_everywhere(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    tokens = ref.check_tokens(tokens, W_E, W_pos)
    n = tokens.shape[-1]
    X = ref.one_hot(tokens, W_E.shape[0], W_E.dtype)
    X_aug = torch.cat([X, torch.eye(n, dtype=X.dtype, device=X.device)], dim=1)
    E_aug = torch.cat([W_E, W_pos[:n]], dim=0)
    A = ref.attention_patterns(tokens, W_E, W_pos, W_Q, W_K)
    out = ref.notes_outer_apply(torch.eye(n, dtype=X.dtype, device=X.device), (E_aug @ W_U).T, X_aug)
    for h in range(W_Q.shape[0]):
        out = out + ref.notes_outer_apply(A[h], (E_aug @ W_V[h] @ W_O[h] @ W_U).T, X_aug)
    return out


NOTES_OUTER = ("the notes' outer product",
               "This matches np.outer(A, W) reshaped to the Kronecker product's shape: np.outer flattens "
               "both factors, so the row indices of A and W are not interleaved. Use torch.kron(A, W), "
               "whose entry ((i, a), (j, b)) is A[i, j] * W[a, b].")

def _one_ov(fn: Callable, at: int) -> Callable:
    """``fn`` with head 0's W_V, W_O used for every head (the notes add a single OV)."""
    def wrong(*args):
        args = list(args)
        for i in (at, at + 1):
            args[i] = args[i][:1].expand_as(args[i]).contiguous()
        return fn(*args)
    return wrong


ONE_OV = ("one OV circuit for every head",
          "Every head got the same OV circuit (head 0's), as in the notes' single OV. Each head has its "
          "own W_OV^h = W_V^h W_O^h: loop over heads and use W_V[h], W_O[h].")

LOGIT_MISTAKES: dict[str, tuple[str, Callable]] = {
    "missing direct path": (
        "The direct path Id ⊗ W_U W_E is missing: the residual stream itself (embedding + positions) "
        "also goes to the unembedding, X W_E W_U + P W_U.", _missing_direct),
    "missing positional embeddings": (
        "The positional embeddings are missing everywhere. They enter the attention scores and also "
        "what each position writes: add P = W_pos[:n_ctx] to the residual stream.", _no_positions),
    "positions only inside the attention": (
        "This is the paper's T taken literally: the positional embeddings shape A^h but their own "
        "terms, P W_U and A^h P W_OV^h W_U, are missing. The model adds them.", _positions_only_in_attention),
    NOTES_OUTER[0]: (NOTES_OUTER[1], _token_terms(ref.notes_outer_apply)),
    "the notes' outer product (positions too)": (
        NOTES_OUTER[1] + " (Here applied to the augmented [X | I] matrix, positions included.)",
        _outer_everywhere),
    "paper matrices not transposed": (
        "The TransformerLens products W_E W_U and W_E W_OV^h W_U were used where the paper's column-"
        "vector matrices W_U W_E and W_U W_OV^h W_E go; those are their transposes.",
        _token_terms(ref.kron_apply, transpose=False)),
    ONE_OV[0]: (ONE_OV[1], _one_ov(ref.tensor_product_logits, 5)),
    **{name: (msg + " (This changes the attention patterns inside the logits.)", _logits_from_patterns(fn))
       for name, (msg, fn) in PATTERN_MISTAKES.items() if name != "missing positional embeddings"},
}


def _kron_swapped(A, W, X):
    return (torch.kron(W.contiguous(), A.contiguous()) @ X.reshape(-1)).reshape(A.shape[0], W.shape[0])


def _kron_column_major(A, W, X):
    vec_c = X.T.reshape(-1)
    return (torch.kron(A.contiguous(), W.contiguous()) @ vec_c).reshape(W.shape[0], A.shape[0]).T


def _no_transpose(A, W, X):
    return A @ X @ W


KRON_MISTAKES: dict[str, tuple[str, Callable]] = {
    NOTES_OUTER[0]: (NOTES_OUTER[1], ref.notes_outer_apply),
    "Kronecker factors swapped": (
        "This is kron(W, A): with row-major flattening (reshape(-1)) the position factor A comes first, "
        "kron(A, W).", _kron_swapped),
    "column-major vec with A ⊗ W": (
        "X was flattened column-major (X.T.reshape(-1)). kron(A, W) belongs with row-major flattening; "
        "column-major flattening needs kron(W, A).", _kron_column_major),
    "kron(A, W.T)": (
        "W is already given in the paper's convention, [d_out, d_in] (a map from a column of size d_in "
        "to one of size d_out): use it as it is, kron(A, W). (This torch's kron also refuses a "
        "transposed view such as W.T; .contiguous() silences that error but not the shape mismatch.)",
        lambda A, W, X: (torch.kron(A, W.T) @ X.reshape(-1)).reshape(A.shape[0], W.shape[0])),
    "A X W instead of A X W^T": (
        "This is A @ X @ W: W acts on each row of X as a column-vector map, so the two-sided product is "
        "A @ X @ W.T.", _no_transpose),
}


def _notes_T_variant(combine: Callable, transpose: bool = True, direct: bool = True) -> Callable:
    def fn(patterns, W_E, W_V, W_O, W_U):
        n = patterns.shape[-1]
        flip = (lambda M: M.T) if transpose else (lambda M: M)  # noqa: E731
        eye = torch.eye(n, dtype=patterns.dtype, device=patterns.device)
        v = W_E.shape[0]
        T = (combine(eye, flip(W_E @ W_U)) if direct
             else torch.zeros(n * v, n * v, dtype=patterns.dtype, device=patterns.device))
        for h in range(patterns.shape[0]):
            T = T + combine(patterns[h], flip(W_E @ W_V[h] @ W_O[h] @ W_U))
        return T
    return fn


def _outer_as_kron(A, W):
    return torch.outer(A.reshape(-1), W.reshape(-1)).reshape(A.shape[0] * W.shape[0], A.shape[1] * W.shape[1])


def _kron(A, W):
    return torch.kron(A.contiguous(), W.contiguous())


def _notes_T_half_transposed(direct_flipped: bool) -> Callable:
    def fn(patterns, W_E, W_V, W_O, W_U):
        good, bad = ref.tensor_product_matrix(patterns, W_E, W_V, W_O, W_U), \
            _notes_T_variant(_kron, transpose=False)(patterns, W_E, W_V, W_O, W_U)
        n = patterns.shape[-1]
        eye = torch.eye(n, dtype=patterns.dtype, device=patterns.device)
        direct_good, direct_bad = _kron(eye, (W_E @ W_U).T), _kron(eye, W_E @ W_U)
        if direct_flipped:       # only the direct path lost its transpose
            return good - direct_good + direct_bad
        return bad - direct_bad + direct_good
    return fn


NOTES_T_MISTAKES: dict[str, tuple[str, Callable]] = {
    NOTES_OUTER[0]: (NOTES_OUTER[1], _notes_T_variant(_outer_as_kron)),
    "the notes' np.outer, as written": (
        "This is np.outer(A^h, W) exactly as the notes write it: np.outer flattens both factors and "
        "returns an [n_ctx², d_vocab²] table of all products, not a matrix acting on the flattened X. "
        "The tensor product interleaves the indices: torch.kron(A^h, W), [n_ctx·d_vocab, n_ctx·d_vocab].",
        _notes_T_variant(lambda A, W: torch.outer(A.reshape(-1), W.reshape(-1)))),
    "direct path not transposed": (
        "One transpose is missing: the direct path uses W_E W_U where the paper's W_U W_E = "
        "(W_E W_U)^T goes (the head terms are right).", _notes_T_half_transposed(True)),
    "head terms not transposed": (
        "One transpose is missing: the head terms use W_E W_OV^h W_U where the paper's W_U W_OV^h W_E "
        "= (W_E W_OV^h W_U)^T goes (the direct path is right).", _notes_T_half_transposed(False)),
    ONE_OV[0]: (ONE_OV[1], _one_ov(ref.tensor_product_matrix, 2)),
    "paper matrices not transposed": (
        "kron(A, W_E W_OV W_U) uses the TransformerLens product where the paper's W_U W_OV W_E goes; "
        "that is its transpose.", _notes_T_variant(_kron, transpose=False)),
    "Kronecker factors swapped": (
        "This is kron(W, A): for row-major flattening the position factor comes first.",
        _notes_T_variant(lambda A, W: _kron(W, A))),
    "missing direct path": (
        "The Id ⊗ W_U W_E term (the direct path) is missing.", _notes_T_variant(_kron, direct=False)),
}


def _mistakes(table: dict[str, tuple[str, Callable]]) -> list[Mistake]:
    return [Mistake(name, f"{name}: {message}", fn) for name, (message, fn) in table.items()]


# --------------------------------------------------------------------------- cases
def pattern_cases() -> list[Case]:
    return [Case(label, (tokens, *[w[k] for k in KEYS_ATTN]), info) for label, w, tokens, info in model_cases()]


def logit_cases() -> list[Case]:
    return [Case(label, (tokens, *[w[k] for k in KEYS_ALL]), info) for label, w, tokens, info in model_cases()]


def logit_terms(case: Case) -> dict[str, torch.Tensor]:
    t = ref.tensor_product_terms(*case.args)
    out = {"direct path": t.direct_tokens + t.direct_positions,
           "positional terms": t.direct_positions + t.head_positions.sum(-3),
           "direct path (positions)": t.direct_positions}
    for h in range(t.head_tokens.shape[-3]):
        out[f"head {h}"] = t.head_tokens[h] + t.head_positions[h]
    return out


def kron_cases() -> list[Case]:
    cases = []
    gen = torch.Generator().manual_seed(77)
    for label, (n_out, n_in, p, q), dtype in (
        ("random rectangular A, W, X, float64", (2, 3, 4, 5), F64),
        ("random rectangular A, W, X, float32", (3, 2, 2, 4), F32),
        ("random square, float64", (4, 4, 3, 3), F64),
        ("one position (1 x 1 A), float32", (1, 1, 3, 3), F32),
    ):
        A = torch.randn(n_out, n_in, generator=gen, dtype=F64).to(dtype)
        W = torch.randn(p, q, generator=gen, dtype=F64).to(dtype)
        X = torch.randn(n_in, q, generator=gen, dtype=F64).to(dtype)
        cases.append(Case(label, (A, W, X), {"A": list(A.shape), "W": list(W.shape), "X": list(X.shape),
                                              "dtype": str(dtype).replace("torch.", "")}))
    for label, w, tokens, info in model_cases():
        A = ref.attention_patterns(tokens, *[w[k] for k in KEYS_ATTN])[0]
        W = (w["W_E"] @ w["W_V"][0] @ w["W_O"][0] @ w["W_U"]).T.contiguous()
        X = ref.one_hot(tokens, w["W_E"].shape[0], w["W_E"].dtype)
        cases.append(Case(f"{label}: head 0's A and W_U W_OV W_E on the one-hot prompt", (A, W, X), dict(info)))
    return cases


def notes_cases() -> list[Case]:
    cases = []
    for label, w, tokens, info in model_cases():
        if "trained" in info["model"]:
            tokens = tokens[:6]
            info = dict(info, n_ctx=len(tokens))
        patterns = ref.attention_patterns(tokens, *[w[k] for k in KEYS_ATTN])
        cases.append(Case(label, (patterns, w["W_E"], w["W_V"], w["W_O"], w["W_U"]),
                          dict(info, tokens=tokens.tolist())))
    return cases


def notes_terms(case: Case) -> dict[str, torch.Tensor]:
    patterns, W_E, W_V, W_O, W_U = case.args
    zero = torch.zeros_like(patterns)
    out = {"direct path": ref.tensor_product_matrix(zero, W_E, W_V, W_O, W_U)}
    for h in range(patterns.shape[0]):
        only = torch.zeros_like(patterns)
        only[h] = patterns[h]
        no_direct = ref.tensor_product_matrix(only, W_E, W_V, W_O, W_U) - out["direct path"]
        out[f"head {h}"] = no_direct
    return out


# --------------------------------------------------------------------------- registration
register_exercise(Exercise(
    lesson=LESSON, name="attention_patterns", points=2, reference=ref.attention_patterns, cases=pattern_cases,
    summary="A^h for every head: causal, scaled by 1/sqrt(d_head), softmax over source positions.",
    difficulty=1, minutes=15, mistakes=_mistakes(PATTERN_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="kron_apply", points=2, reference=ref.kron_apply, cases=kron_cases,
    summary="(A ⊗ W) acting on the token matrix X through an explicit Kronecker product.",
    difficulty=1, minutes=10, mistakes=_mistakes(KRON_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="tensor_product_logits", points=4, reference=ref.tensor_product_logits, cases=logit_cases,
    summary="Logits as Id ⊗ W_U W_E + Σ_h A^h ⊗ W_U W_OV^h W_E plus the positional terms; equals the forward pass.",
    difficulty=2, minutes=30, terms=logit_terms, mistakes=_mistakes(LOGIT_MISTAKES),
))

register_exercise(Exercise(
    lesson=LESSON, name="corrected_notes_T", points=3, reference=ref.tensor_product_matrix, cases=notes_cases,
    summary="Fix the notes: T = kron(Id, (W_E W_U)^T) + Σ_h kron(A^h, (W_E W_OV^h W_U)^T) as one matrix.",
    difficulty=2, minutes=20, terms=notes_terms, mistakes=_mistakes(NOTES_T_MISTAKES),
))

__all__ = ["KRON_MISTAKES", "LOGIT_MISTAKES", "NOTES_T_MISTAKES", "PATTERN_MISTAKES", "model_cases",
           "trained_weights"]
