"""Lesson 1 exercises: a one-layer attention-only transformer as tensor products.

Fill in each function; keep the signatures. Check your work with
    python -m mechinterp_edu grade exercises/01_tensor_products.py

Shapes (TransformerLens, row vectors, x @ W):
    tokens [n_ctx] (LongTensor)        X = one_hot(tokens) [n_ctx, d_vocab]
    W_E [d_vocab, d_model]             W_pos [n_ctx_max, d_model]  (use the first n_ctx rows)
    W_Q, W_K, W_V [n_heads, d_model, d_head]     W_O [n_heads, d_head, d_model]
    W_U [d_model, d_vocab]
The model has no LayerNorm and no biases. Work in the dtype of the weights (float32 or
float64) and on their device. Only torch, numpy, einops, math and transformer_lens may be
imported here.
"""
import math

import torch


def attention_patterns(tokens, W_E, W_pos, W_Q, W_K):
    """A^h for every head: returns [n_heads, n_ctx (destination), n_ctx (source)].

    Causal (a position attends only to itself and earlier positions) and scaled by
    1/sqrt(d_head) before the softmax. Each row sums to 1.

    Difficulty 1 (easy), about 15 minutes.

    Hints:
      * The residual stream is W_E[tokens] + W_pos[:n_ctx] ([n_ctx, d_model]).
      * Scores of head h: (resid @ W_Q[h]) @ (resid @ W_K[h]).T / sqrt(d_head).
      * Mask with -inf above the diagonal (torch.triu(..., diagonal=1)), then softmax over
        the source axis, the last one.
    """
    raise NotImplementedError("not implemented yet")


def kron_apply(A, W, X):
    """(A (x) W) acting on the token matrix X, through an explicit Kronecker product.

    A [n_out, n_ctx] mixes positions; W [d_out, d_in] acts on each row of X in the paper's
    column-vector convention (it maps a vector of size d_in to one of size d_out);
    X [n_ctx, d_in]. Returns [n_out, d_out]: the vector kron(A, W) @ X.reshape(-1), folded
    back into a matrix.

    Difficulty 1 (easy), about 10 minutes.

    Hints:
      * torch.kron builds the Kronecker product; reshape(-1) flattens row-major.
      * Check yourself: the answer equals A @ X @ W.T (the lesson proves why).
      * np.outer / torch.outer is NOT the Kronecker product: it flattens both factors first.
      * If torch.kron complains about a view/stride, pass .contiguous() copies (W.T is a view).
    """
    raise NotImplementedError("not implemented yet")


def tensor_product_logits(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """Logits [n_ctx, d_vocab], built from the tensor-product terms

        T = Id (x) W_U W_E + sum_h A^h (x) W_U W_OV^h W_E      (paper, column vectors)

    plus the positional embeddings (the paper's formula leaves them out; the model does not).
    Must equal the model's forward pass.

    Difficulty 2 (medium), about 30 minutes.

    Hints:
      * In TransformerLens shapes the paper's W_U W_E is (W_E @ W_U).T and W_U W_OV^h W_E is
        (W_E @ W_V[h] @ W_O[h] @ W_U).T.
      * Positions enter twice: in the attention patterns and in what each position writes.
        Either add P W_U + sum_h A^h P W_V^h W_O^h W_U (P = W_pos[:n_ctx]), or append the
        identity to the one-hot matrix and W_pos[:n_ctx] to W_E.
      * Do not forget the direct path (the Id term).
    """
    raise NotImplementedError("not implemented yet")


def corrected_notes_T(patterns, W_E, W_V, W_O, W_U):
    """Fix the notes. The source notes build T like this (paraphrased, numpy):

        T1 = np.outer(np.eye(n), WU @ WE)
        T2 = 0
        for Ah in patterns:
            T2 += np.outer(Ah, WU @ WOV @ WE)
        T = T1 + T2

    Write the corrected T as one matrix, using TransformerLens-shaped weights:
    patterns [n_heads, n_ctx, n_ctx] (the A^h, given), W_E [d_vocab, d_model],
    W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model], W_U [d_model, d_vocab].
    Returns T [n_ctx * d_vocab, n_ctx * d_vocab] such that
    T @ one_hot(tokens).reshape(-1) is the token part of the logits, flattened row-major.

    Difficulty 2 (medium), about 20 minutes.

    Hints:
      * What does np.outer do with 2-D arguments? Compare its shape with the Kronecker product's.
      * The notes' WU @ WE is written for column vectors; your weights are row-vector shaped.
      * Each head has its own OV circuit, W_OV^h = W_V^h W_O^h.
    """
    raise NotImplementedError("not implemented yet")
