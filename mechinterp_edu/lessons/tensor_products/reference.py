"""Lesson 1 reference: a one-layer attention-only transformer written as tensor products.

Fast and batched (one ``einsum`` over all heads, optional leading batch axes on
``tokens``); everything runs on the device of its inputs and keeps their float
dtype (float32 or float64). The worked solutions in ``solutions/01_tensor_products.py``
are a second, loop-over-heads implementation; the tests show both equal the model's
own forward pass.

Conventions (TransformerLens, row vectors, ``x @ W``)::

    tokens   [..., n_ctx]           LongTensor
    X        [..., n_ctx, d_vocab]  one-hot token matrix (row i = one-hot of token i)
    W_E      [d_vocab, d_model]     W_pos [n_ctx_max, d_model]  (only the first n_ctx rows are used)
    W_Q/W_K/W_V [n_heads, d_model, d_head]   W_O [n_heads, d_head, d_model]
    W_U      [d_model, d_vocab]

The model (no LayerNorm, no biases, one attention layer)::

    R      = X W_E + P                                 P = W_pos[:n_ctx]
    A^h    = softmax_key( mask( R W_Q^h (R W_K^h)^T / sqrt(d_head) ) )
    logits = R W_U + sum_h A^h R W_V^h W_O^h W_U

Row-major vec (``M.reshape(-1)``) gives ``vec(A X W^T) = (A (x) W) vec(X)`` with
``(x) = torch.kron``; so in the paper's column-vector matrices
``T = Id (x) W_U W_E + sum_h A^h (x) W_U W_OV^h W_E`` where the paper's ``W_U W_E`` is
TransformerLens's ``(W_E W_U)^T`` and ``W_U W_OV^h W_E`` is ``(W_E W_V^h W_O^h W_U)^T``.
The positional part ``P W_U + sum_h A^h P W_OV^h W_U`` is added on top: the paper's
formula leaves positional embeddings out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

ScaleKind = Literal["sqrt", "none", "d_head"]
Tokens = Int[Tensor, "... n_ctx"]                       # or a list of ids: check_tokens converts it
WE = Float[Tensor, "d_vocab d_model"]
WPos = Float[Tensor, "n_ctx_max d_model"]
WQK = Float[Tensor, "n_heads d_model d_head"]
WO = Float[Tensor, "n_heads d_head d_model"]
WU = Float[Tensor, "d_model d_vocab"]

__all__ = [
    "TOY_SHAPES", "TensorProductTerms", "attention_patterns", "attention_patterns_from_residual",
    "attention_scores", "bias_logit_term", "check_tokens", "forward_logits", "kron_apply",
    "model_weights", "notes_outer_apply", "one_hot", "parse_prompt",
    "random_toy_model", "random_weights", "relative_error", "residual_stream",
    "tensor_product_logits", "tensor_product_matrix", "tensor_product_terms", "two_sided_apply",
]


# --------------------------------------------------------------------------- input checks
def check_tokens(tokens: Tokens, W_E: WE, W_pos: Optional[WPos] = None) -> Int[Tensor, "... n_ctx"]:
    """Return ``tokens`` as a LongTensor on ``W_E``'s device, or raise a ValueError that says why not."""
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    if tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"tokens must be integer ids (a LongTensor), got dtype {tokens.dtype}; "
                         "use tokens.long() if they are whole numbers.")
    if tokens.ndim == 0 or tokens.shape[-1] == 0:
        raise ValueError(f"tokens must have at least one position along the last axis, got shape "
                         f"{tuple(tokens.shape)}.")
    tokens = tokens.long().to(W_E.device)
    d_vocab = W_E.shape[0]
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= d_vocab:
        raise ValueError(f"token ids must lie in [0, {d_vocab - 1}] (d_vocab = {d_vocab}); got ids from "
                         f"{lo} to {hi}.")
    if W_pos is not None and tokens.shape[-1] > W_pos.shape[0]:
        raise ValueError(f"the sequence has {tokens.shape[-1]} tokens but W_pos only has "
                         f"{W_pos.shape[0]} positions (n_ctx_max); shorten the sequence.")
    return tokens


def _check_heads(W_Q: torch.Tensor, W_K: torch.Tensor, d_model: int) -> None:
    if W_Q.ndim != 3 or W_K.shape != W_Q.shape:
        raise ValueError(f"W_Q and W_K must both be [n_heads, d_model, d_head]; got {tuple(W_Q.shape)} "
                         f"and {tuple(W_K.shape)}.")
    if W_Q.shape[1] != d_model:
        raise ValueError(f"W_Q is {tuple(W_Q.shape)} but the residual stream has d_model = {d_model}.")


def one_hot(tokens: Tokens, d_vocab: int, dtype: torch.dtype = torch.float64) -> Float[Tensor, "... n_ctx d_vocab"]:
    """The token matrix X: [..., n_ctx] ids -> [..., n_ctx, d_vocab] one-hot rows."""
    return torch.nn.functional.one_hot(tokens.long(), d_vocab).to(dtype)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (0 when both are 0)."""
    got, expected = got.detach().double().cpu(), expected.detach().double().cpu()
    scale = expected.abs().max().item()
    diff = (got - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


# --------------------------------------------------------------------------- attention
def residual_stream(tokens: Tokens, W_E: WE, W_pos: WPos) -> Float[Tensor, "... n_ctx d_model"]:
    """R = X W_E + W_pos[:n_ctx]: [..., n_ctx, d_model]. The one-hot product is a row lookup."""
    tokens = check_tokens(tokens, W_E, W_pos)
    return W_E[tokens] + W_pos[: tokens.shape[-1]]


def attention_scores(tokens: Tokens, W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, *, b_Q=None, b_K=None, scale: ScaleKind = "sqrt",
                     causal: bool = True, use_positions: bool = True) -> torch.Tensor:
    """Pre-softmax scores [..., n_heads, n_ctx(dest), n_ctx(src)], masked with -inf above the diagonal."""
    tokens = check_tokens(tokens, W_E, W_pos)
    resid = W_E[tokens] + (W_pos[: tokens.shape[-1]] if use_positions else 0)
    return _scores_from_residual(resid, W_Q, W_K, b_Q=b_Q, b_K=b_K, scale=scale, causal=causal)


def _scores_from_residual(resid, W_Q, W_K, *, b_Q=None, b_K=None, scale: ScaleKind = "sqrt",
                          causal: bool = True) -> torch.Tensor:
    _check_heads(W_Q, W_K, resid.shape[-1])
    q = torch.einsum("...pm,hmd->...hpd", resid, W_Q)
    k = torch.einsum("...pm,hmd->...hpd", resid, W_K)
    if b_Q is not None:
        q = q + b_Q[:, None, :]
    if b_K is not None:
        k = k + b_K[:, None, :]
    scores = torch.einsum("...hqd,...hkd->...hqk", q, k)
    d_head = W_Q.shape[-1]
    if scale == "sqrt":
        scores = scores / math.sqrt(d_head)
    elif scale == "d_head":
        scores = scores / d_head
    elif scale != "none":
        raise ValueError(f"scale must be 'sqrt', 'none' or 'd_head', got {scale!r}")
    if causal:
        n = resid.shape[-2]
        future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=resid.device), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores


def attention_patterns_from_residual(resid, W_Q, W_K, *, b_Q=None, b_K=None, scale: ScaleKind = "sqrt",
                                     causal: bool = True,
                                     softmax_axis: Literal["key", "query"] = "key") -> torch.Tensor:
    """Patterns from a residual stream [..., n_ctx, d_model]; the keyword arguments switch on the
    variants the grader's mistake catalogue needs (no scale, no mask, softmax over queries)."""
    scores = _scores_from_residual(resid, W_Q, W_K, b_Q=b_Q, b_K=b_K, scale=scale, causal=causal)
    return torch.softmax(scores, dim=-1 if softmax_axis == "key" else -2)


def attention_patterns(tokens: Tokens, W_E: WE, W_pos: WPos, W_Q: WQK,
                       W_K: WQK) -> Float[Tensor, "... n_heads n_ctx n_ctx"]:
    """A^h for every head: [..., n_heads, n_ctx(dest), n_ctx(src)], causal, scaled by 1/sqrt(d_head).

    Each row (a destination/query position) sums to 1 over source/key positions <= it.
    """
    return torch.softmax(attention_scores(tokens, W_E, W_pos, W_Q, W_K), dim=-1)


# --------------------------------------------------------------------------- tensor-product terms
@dataclass
class TensorProductTerms:
    """The additive terms of the logits, each [..., n_ctx, d_vocab] (head terms carry a head axis).

    direct_tokens   (Id (x) W_U W_E) X        = X W_E W_U
    direct_positions                           = P W_U
    head_tokens     (A^h (x) W_U W_OV^h W_E) X = A^h X W_E W_V^h W_O^h W_U      [..., h, n, v]
    head_positions                             = A^h P W_V^h W_O^h W_U         [..., h, n, v]
    """

    patterns: torch.Tensor
    direct_tokens: torch.Tensor
    direct_positions: torch.Tensor
    head_tokens: torch.Tensor
    head_positions: torch.Tensor

    def total(self) -> torch.Tensor:
        return (self.direct_tokens + self.direct_positions
                + self.head_tokens.sum(dim=-3) + self.head_positions.sum(dim=-3))

    def named(self) -> dict[str, torch.Tensor]:
        """Each term by name, in the order the lesson introduces them."""
        out = {"direct path (tokens)": self.direct_tokens,
               "direct path (positions)": self.direct_positions}
        for h in range(self.head_tokens.shape[-3]):
            out[f"head {h} (tokens)"] = self.head_tokens[..., h, :, :]
            out[f"head {h} (positions)"] = self.head_positions[..., h, :, :]
        return out


def tensor_product_terms(tokens: Tokens, W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU, *,
                         patterns: Optional[torch.Tensor] = None) -> TensorProductTerms:
    """All tensor-product terms at once (einsum over heads; batch axes on ``tokens`` allowed)."""
    tokens = check_tokens(tokens, W_E, W_pos)
    n = tokens.shape[-1]
    tok = W_E[tokens]                                       # X W_E        [..., n, d_model]
    pos = W_pos[:n].expand_as(tok)                          # P            [..., n, d_model]
    if patterns is None:
        patterns = attention_patterns_from_residual(tok + pos, W_Q, W_K)

    def through_head(x: torch.Tensor) -> torch.Tensor:      # A^h x W_V^h W_O^h W_U for every head
        v = torch.einsum("...km,hmd->...hkd", x, W_V)
        z = torch.einsum("...hqk,...hkd->...hqd", patterns, v)
        return torch.einsum("...hqd,hdm->...hqm", z, W_O) @ W_U

    return TensorProductTerms(patterns, tok @ W_U, pos @ W_U, through_head(tok), through_head(pos))


def tensor_product_logits(tokens: Tokens, W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO,
                          W_U: WU) -> Float[Tensor, "... n_ctx d_vocab"]:
    """Logits [..., n_ctx, d_vocab] as the sum of the tensor-product terms (equals the forward pass)."""
    return tensor_product_terms(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U).total()


# --------------------------------------------------------------------------- biases (an aside)
def bias_logit_term(b_V, W_O, b_O, W_U, b_U) -> torch.Tensor:
    """[d_vocab]: what the value/output/unembedding biases add at *every* position.

    Rows of A^h sum to 1, so A^h (1 b_V^h) = 1 b_V^h: the value bias passes through
    attention unchanged and becomes a constant (b_V^h W_O^h summed over heads + b_O) W_U + b_U.
    """
    return (torch.einsum("hd,hdm->m", b_V, W_O) + b_O) @ W_U + b_U


def forward_logits(tokens, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of a one-layer attention-only model *with* biases (keys as in ``weights.layer_weights``).

    The tensor-product terms with bias-aware patterns plus :func:`bias_logit_term`.
    """
    w = weights
    tokens = check_tokens(tokens, w["W_E"], w["W_pos"])
    resid = w["W_E"][tokens] + w["W_pos"][: tokens.shape[-1]]
    patterns = attention_patterns_from_residual(resid, w["W_Q"], w["W_K"], b_Q=w.get("b_Q"), b_K=w.get("b_K"))
    terms = tensor_product_terms(tokens, w["W_E"], w["W_pos"], w["W_Q"], w["W_K"], w["W_V"], w["W_O"],
                                 w["W_U"], patterns=patterns)
    zeros_v = torch.zeros(w["W_U"].shape[-1], dtype=w["W_U"].dtype, device=w["W_U"].device)
    bias = bias_logit_term(w.get("b_V", torch.zeros_like(w["W_V"][:, 0, :])), w["W_O"],
                           w.get("b_O", torch.zeros_like(w["W_O"][0, 0, :])), w["W_U"],
                           w.get("b_U", zeros_v))
    return terms.total() + bias


# --------------------------------------------------------------------------- Kronecker products
def kron_apply(A: Float[Tensor, "n_out n_ctx"], W: Float[Tensor, "d_out d_in"],
               X: Float[Tensor, "n_ctx d_in"]) -> Float[Tensor, "n_out d_out"]:
    """(A (x) W) acting on the token matrix X, through an explicit Kronecker product.

    A [n_out, n_ctx] mixes positions, W [d_out, d_in] (paper/column convention: it maps
    a column vector of size d_in to one of size d_out) acts on each row of
    X [n_ctx, d_in]. Returns Y [n_out, d_out] with ``Y.reshape(-1) = kron(A, W) @ X.reshape(-1)``,
    which equals ``A @ X @ W.T`` (see :func:`two_sided_apply`).
    """
    if A.ndim != 2 or W.ndim != 2 or X.ndim != 2:
        raise ValueError(f"kron_apply needs 2-D A, W, X; got shapes {tuple(A.shape)}, {tuple(W.shape)}, "
                         f"{tuple(X.shape)}.")
    if A.shape[1] != X.shape[0] or W.shape[1] != X.shape[1]:
        raise ValueError(f"shapes do not fit: A {tuple(A.shape)} needs X with {A.shape[1]} rows and "
                         f"W {tuple(W.shape)} needs X with {W.shape[1]} columns; X is {tuple(X.shape)}.")
    dtype = torch.promote_types(torch.promote_types(A.dtype, W.dtype), X.dtype)
    # .contiguous(): torch.kron rejects some transposed views (e.g. W.T) with a stride error.
    big = torch.kron(A.to(dtype).contiguous(), W.to(dtype).contiguous())   # [n_out * d_out, n_ctx * d_in]
    return (big @ X.to(dtype).reshape(-1)).reshape(A.shape[0], W.shape[0])


def two_sided_apply(A: Float[Tensor, "... n_out n_ctx"], W: Float[Tensor, "d_out d_in"],
                    X: Float[Tensor, "... n_ctx d_in"]) -> Float[Tensor, "... n_out d_out"]:
    """A X W^T (batched over leading axes): what (A (x) W) vec(X) is, without building the Kronecker product."""
    return A @ X @ W.transpose(-1, -2)


def notes_outer_apply(A: Float[Tensor, "n_out n_ctx"], W: Float[Tensor, "d_out d_in"],
                      X: Float[Tensor, "n_ctx d_in"]) -> Float[Tensor, "n_out d_out"]:
    """The source notes' mistake made shape-valid: ``outer(A, W)`` (= ``np.outer``, which flattens
    both) reshaped straight to the Kronecker product's shape, so the row and column indices of A
    and W are not interleaved. Wrong on purpose; used by the grader's mistake catalogue and the
    lesson's demonstration."""
    n_out, n_in = A.shape
    p, q = W.shape
    wrong = torch.outer(A.reshape(-1), W.reshape(-1)).reshape(n_out * p, n_in * q)
    return (wrong @ X.reshape(-1).to(wrong.dtype)).reshape(n_out, p)


def tensor_product_matrix(patterns: Float[Tensor, "n_heads n_ctx n_ctx"], W_E: WE, W_V: WQK, W_O: WO,
                          W_U: WU) -> Float[Tensor, "n_ctx*d_vocab n_ctx*d_vocab"]:
    """The token part of T as one matrix [n_ctx*d_vocab, n_ctx*d_vocab] (paper convention):

        T = Id (x) (W_E W_U)^T + sum_h A^h (x) (W_E W_V^h W_O^h W_U)^T,

    so that ``T @ X.reshape(-1)`` is the token part of the logits, flattened row-major.
    Built with one einsum (no explicit kron): T[(i,a),(j,b)] = d_ij D[a,b] + sum_h A^h_ij OV^h[a,b].
    """
    n = patterns.shape[-1]
    direct = (W_E @ W_U).T                                            # [v_out, v_in]
    ov = torch.einsum("vm,hmd,hdM,Mw->hwv", W_E, W_V, W_O, W_U)        # transposed OV: [h, out, in]
    eye = torch.eye(n, dtype=patterns.dtype, device=patterns.device)
    T = torch.einsum("ij,ab->iajb", eye, direct) + torch.einsum("hij,hab->iajb", patterns, ov)
    v = direct.shape[0]
    return T.reshape(n * v, n * v)


# --------------------------------------------------------------------------- models for the lesson
# Random toy models and random weights live in the model-zoo engine (lessons 1-3 use them).
from mechinterp_edu.models.toys import (  # noqa: E402,F401
    TOY_SHAPES,
    random_toy_model,
    random_weights,
)
from mechinterp_edu.models.toys import load_toy_or_fallback as lesson_model  # noqa: E402,F401


def model_weights(model, dtype: torch.dtype = torch.float64, device=None) -> dict[str, torch.Tensor]:
    """Layer-0 weights in TransformerLens shapes (see ``mechinterp_edu.weights.layer_weights``)."""
    from mechinterp_edu.weights import layer_weights
    return layer_weights(model, 0, dtype=dtype, device=device)


def parse_prompt(text: str, d_vocab: int, n_ctx_max: int) -> Int[Tensor, "n_ctx"]:
    """Space- or comma-separated token ids -> LongTensor, with a message saying what is wrong."""
    parts = str(text or "").replace(",", " ").split()
    if not parts:
        raise ValueError(f"The prompt is empty: type token ids between 0 and {d_vocab - 1}, e.g. '1 2 3'.")
    bad = [p for p in parts if not p.lstrip("-").isdigit()]
    if bad:
        raise ValueError(f"The prompt must be whole numbers separated by spaces; {bad[0]!r} is not.")
    ids = [int(p) for p in parts]
    out = [i for i in ids if not 0 <= i < d_vocab]
    if out:
        raise ValueError(f"Token id {out[0]} is outside this model's vocabulary: use ids 0 to {d_vocab - 1}.")
    if len(ids) > n_ctx_max:
        raise ValueError(f"The prompt has {len(ids)} tokens; this model reads at most {n_ctx_max}.")
    return torch.tensor(ids, dtype=torch.long)
