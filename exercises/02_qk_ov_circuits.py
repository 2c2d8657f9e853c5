"""Lesson 2 exercises: QK and OV circuits.

Fill in each function; keep the signatures. Check your work with
    python -m mechinterp_edu grade exercises/02_qk_ov_circuits.py

Shapes (TransformerLens, row vectors, x @ W):
    W_E [d_vocab, d_model], W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]
    W_U [d_model, d_vocab]
Work in the dtype of the weights and on their device. Only torch, numpy, einops, math and
transformer_lens may be imported here.
"""
import torch


def full_qk_circuit(W_E, W_Q, W_K):
    """Full QK circuit W_E W_Q^h (W_E W_K^h)^T for every head.

    Returns [n_heads, d_vocab (query token), d_vocab (key token)], unscaled (no 1/sqrt(d_head)).

    Difficulty 1 (easy), about 10 minutes.

    Hints:
      * Rows are queries (the destination token), columns keys (the source token).
      * torch.einsum("vm,hmd->hvd", W_E, W_Q) gives every token's query for every head.
    """
    raise NotImplementedError("not implemented yet")


def full_ov_circuit(W_E, W_V, W_O, W_U):
    """Full OV circuit W_E W_V^h W_O^h W_U for every head.

    Returns [n_heads, d_vocab (source token), d_vocab (output logit)].

    Difficulty 1 (easy), about 10 minutes.

    Hints:
      * Read left to right with row vectors: token -> W_E -> W_V -> W_O -> W_U.
      * The paper's W_U W_OV W_E (column vectors) is the transpose of this.
    """
    raise NotImplementedError("not implemented yet")


def positional_qk(W_pos, W_Q, W_K):
    """Positional QK circuit W_pos W_Q^h (W_pos W_K^h)^T for every head.

    Returns [n_heads, n_ctx (query position), n_ctx (key position)], unscaled and unmasked.

    Difficulty 1 (easy), about 5 minutes.

    Hints:
      * It is the full QK circuit with W_pos in place of W_E.
    """
    raise NotImplementedError("not implemented yet")


def copying_score(W_E, W_V, W_O, W_U):
    """Copying score of every head: [n_heads] real numbers in [-1, 1].

    score_h = Re(sum_i lambda_i) / sum_i |lambda_i| over the eigenvalues lambda_i of the
    full OV circuit of head h. Eigenvalues of a real matrix are complex in general; their
    sum is real (it is the trace), so take its real part. Return 0 if all eigenvalues are 0.

    Difficulty 2 (medium), about 15 minutes.

    Hints:
      * torch.linalg.eigvals returns a complex tensor; .real and .abs() give real ones.
      * The OV circuit has rank <= d_head. transformer_lens.FactoredMatrix(A, B).eigenvalues
        works on the small d_head x d_head matrix B A, which has the same nonzero eigenvalues.
      * Return the same dtype as W_E.
    """
    raise NotImplementedError("not implemented yet")
