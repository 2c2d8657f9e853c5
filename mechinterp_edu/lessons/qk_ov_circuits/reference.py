"""Lesson 2 reference: QK and OV circuits of a one-layer attention-only transformer.

Fast and batched (one ``einsum`` over all heads); runs on the inputs' device and keeps
their float dtype. Shapes follow TransformerLens (row vectors, ``x @ W``)::

    full QK^h  = W_E W_Q^h (W_E W_K^h)^T      [n_heads, d_vocab(query), d_vocab(key)]   unscaled
    full OV^h  = W_E W_V^h W_O^h W_U          [n_heads, d_vocab(source), d_vocab(output)]
    pos  QK^h  = W_pos W_Q^h (W_pos W_K^h)^T  [n_heads, n_ctx(query), n_ctx(key)]       unscaled

Row a of the full QK circuit holds the (unscaled) score a query token a gives every key token;
row b of the full OV circuit holds what attending fully to a source token b adds to the logits.
The paper's column-vector ``W_U W_OV^h W_E`` is the *transpose* of the full OV here; the paper's
``W_E^T W_QK^h W_E`` is the same matrix as the full QK here (a bilinear form keeps its
query-row/key-column layout under the change of convention).

Both circuits have rank at most d_head: they are products through a d_head-wide bottleneck,
which :class:`transformer_lens.FactoredMatrix` keeps factored.
"""
from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

# Weight shapes (TransformerLens, row vectors)
WE = Float[Tensor, "d_vocab d_model"]
WPos = Float[Tensor, "n_ctx d_model"]
WQK = Float[Tensor, "n_heads d_model d_head"]
WO = Float[Tensor, "n_heads d_head d_model"]
WU = Float[Tensor, "d_model d_vocab"]

__all__ = [
    "copying_score", "copying_score_from_eigenvalues", "full_ov_circuit", "full_qk_circuit",
    "ov_eigenvalues", "ov_factored", "positional_qk", "qk_factored", "qk_score_decomposition",
    "top_token_pairs",
]


def _check(name: str, tensor: torch.Tensor, ndim: int) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != ndim:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{name} must be a {ndim}-D tensor, got {shape}.")


def _bilinear(E: torch.Tensor, W_Q: WQK, W_K: WQK) -> torch.Tensor:
    _check("embedding", E, 2)
    _check("W_Q", W_Q, 3)
    _check("W_K", W_K, 3)
    if W_Q.shape != W_K.shape or W_Q.shape[1] != E.shape[1]:
        raise ValueError(f"W_Q {tuple(W_Q.shape)} and W_K {tuple(W_K.shape)} must be [n_heads, d_model, d_head] "
                         f"with d_model = {E.shape[1]} (the embedding's width).")
    q = torch.einsum("vm,hmd->hvd", E, W_Q)
    k = torch.einsum("vm,hmd->hvd", E, W_K)
    return torch.einsum("hqd,hkd->hqk", q, k)


def full_qk_circuit(W_E: WE, W_Q: WQK, W_K: WQK) -> torch.Tensor:
    """W_E W_Q^h (W_E W_K^h)^T for every head: [n_heads, d_vocab(query), d_vocab(key)], unscaled."""
    return _bilinear(W_E, W_Q, W_K)


def positional_qk(W_pos: WPos, W_Q: WQK, W_K: WQK) -> torch.Tensor:
    """W_pos W_Q^h (W_pos W_K^h)^T: [n_heads, n_ctx(query), n_ctx(key)], unscaled, unmasked."""
    return _bilinear(W_pos, W_Q, W_K)


def full_ov_circuit(W_E: WE, W_V: WQK, W_O: WO, W_U: WU) -> torch.Tensor:
    """W_E W_V^h W_O^h W_U for every head: [n_heads, d_vocab(source), d_vocab(output)]."""
    _check("W_E", W_E, 2)
    _check("W_V", W_V, 3)
    _check("W_O", W_O, 3)
    _check("W_U", W_U, 2)
    v = torch.einsum("sm,hmd->hsd", W_E, W_V)
    return torch.einsum("hsd,hdm->hsm", v, W_O) @ W_U


def qk_factored(W_E: WE, W_Q: WQK, W_K: WQK):
    """The full QK circuits as a FactoredMatrix [n_heads, d_vocab, d_vocab] = (W_E W_Q)(W_E W_K)^T."""
    from transformer_lens import FactoredMatrix
    return FactoredMatrix(torch.einsum("vm,hmd->hvd", W_E, W_Q),
                          torch.einsum("vm,hmd->hdv", W_E, W_K))


def ov_factored(W_E: WE, W_V: WQK, W_O: WO, W_U: WU):
    """The full OV circuits as a FactoredMatrix [n_heads, d_vocab, d_vocab] = (W_E W_V)(W_O W_U)."""
    from transformer_lens import FactoredMatrix
    return FactoredMatrix(torch.einsum("vm,hmd->hvd", W_E, W_V), W_O @ W_U)


def ov_eigenvalues(W_E: WE, W_V: WQK, W_O: WO, W_U: WU) -> torch.Tensor:
    """Nonzero-spectrum eigenvalues of each full OV circuit: [n_heads, d_head], complex128.

    FactoredMatrix computes them from BA = (W_O W_U)(W_E W_V), a d_head x d_head matrix: AB and BA
    have the same nonzero eigenvalues, and the other d_vocab - d_head eigenvalues of AB are 0.
    Computed in float64 whatever the input dtype. This is the same d_head x d_head product that
    :func:`ov_factored` (a FactoredMatrix) diagonalises, written out in torch so grading does
    not pay for importing TransformerLens; the lesson's tests compare the two.
    """
    A = torch.einsum("vm,hmd->hvd", W_E.double(), W_V.double())    # [h, d_vocab, d_head]
    B = W_O.double() @ W_U.double()                                  # [h, d_head, d_vocab]
    return torch.linalg.eigvals(B @ A)                               # [h, d_head] complex128


def copying_score_from_eigenvalues(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Re(sum lambda) / sum |lambda| over the last axis (0 where every eigenvalue is 0).

    The eigenvalues of a real matrix come in conjugate pairs, so their sum is real (it is the
    trace); taking the real part only drops rounding noise. The score lies in [-1, 1]; it is 1
    exactly when every eigenvalue is real and >= 0 (e.g. a positive multiple of a copying map).
    """
    num = eigenvalues.sum(dim=-1).real
    den = eigenvalues.abs().sum(dim=-1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def copying_score(W_E: WE, W_V: WQK, W_O: WO, W_U: WU) -> torch.Tensor:
    """[n_heads]: sum of the OV circuit's eigenvalues over the sum of their moduli (real, in [-1, 1])."""
    _check("W_E", W_E, 2)
    _check("W_V", W_V, 3)
    _check("W_O", W_O, 3)
    _check("W_U", W_U, 2)
    return copying_score_from_eigenvalues(ov_eigenvalues(W_E, W_V, W_O, W_U)).to(W_E.dtype)


def qk_score_decomposition(tokens: torch.Tensor, W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK) -> dict[str, torch.Tensor]:
    """Split the unscaled, unmasked scores of a prompt into four bilinear terms, each [n_heads, n, n]:

    (x_i + p_i) W_QK (x_j + p_j)^T = x_i W_QK x_j^T + x_i W_QK p_j^T + p_i W_QK x_j^T + p_i W_QK p_j^T
    with W_QK = W_Q^h W_K^h^T, x = token embedding, p = positional embedding.
    The token-token term is the full QK circuit read at (tokens[i], tokens[j]); the
    position-position term is the positional QK circuit's top-left n x n block.
    """
    tokens = torch.as_tensor(tokens, device=W_E.device).long()
    n = tokens.shape[-1]
    x, p = W_E[tokens], W_pos[:n]
    qx, kx = torch.einsum("nm,hmd->hnd", x, W_Q), torch.einsum("nm,hmd->hnd", x, W_K)
    qp, kp = torch.einsum("nm,hmd->hnd", p, W_Q), torch.einsum("nm,hmd->hnd", p, W_K)
    pair = lambda a, b: torch.einsum("hqd,hkd->hqk", a, b)  # noqa: E731
    return {"token-token": pair(qx, kx), "token-position": pair(qx, kp),
            "position-token": pair(qp, kx), "position-position": pair(qp, kp)}


def top_token_pairs(matrix: torch.Tensor, k: int = 10, *, largest: bool = True) -> list[tuple[int, int, float]]:
    """The k entries of a 2-D circuit with the largest (or smallest) values, as (row, col, value),
    best first. For a full QK circuit a row is a query token and a column a key token; for a full
    OV circuit a row is a source token and a column an output token."""
    if matrix.ndim != 2:
        raise ValueError(f"top_token_pairs needs one head's 2-D circuit, got shape {tuple(matrix.shape)}.")
    k = max(1, min(int(k), matrix.numel()))
    values, flat = torch.topk(matrix.reshape(-1), k, largest=largest)
    cols = matrix.shape[1]
    return [(int(i) // cols, int(i) % cols, float(v)) for v, i in zip(values.tolist(), flat.tolist())]
