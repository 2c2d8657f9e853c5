"""Lesson 1 worked solutions: a one-layer attention-only transformer as tensor products.

Read these top to bottom. They favour clarity over speed: one head at a time, every
matrix product written out, and the Kronecker product built explicitly where the
lesson says "tensor product". (The course's fast reference does the same sums with one
einsum over all heads; the tests check that both give the model's own logits.)

Shapes (TransformerLens, row vectors, x @ W):
    tokens [n_ctx] (LongTensor)        X = one_hot(tokens) [n_ctx, d_vocab]
    W_E [d_vocab, d_model]             W_pos [n_ctx_max, d_model]
    W_Q, W_K, W_V [n_heads, d_model, d_head]     W_O [n_heads, d_head, d_model]
    W_U [d_model, d_vocab]
"""
import math

import torch


def attention_patterns(tokens, W_E, W_pos, W_Q, W_K):
    """A^h for every head: [n_heads, n_ctx (destination / query), n_ctx (source / key)].

    Difficulty 1, about 15 minutes.
    """
    n_ctx = tokens.shape[0]
    n_heads, d_model, d_head = W_Q.shape

    # Step 1: the residual stream before the layer. Row i is the embedding of token i
    # plus the embedding of position i. (Indexing W_E by the token ids is the same as
    # multiplying the one-hot token matrix X by W_E.)
    resid = W_E[tokens] + W_pos[:n_ctx]                       # [n_ctx, d_model]

    # Step 2: which (destination, source) pairs are allowed: a position may only look at
    # itself and earlier positions. tril keeps the diagonal and everything below it.
    allowed = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool, device=resid.device))

    patterns = []
    for h in range(n_heads):
        # Step 3: queries and keys of this head, one row per position.
        q = resid @ W_Q[h]                                    # [n_ctx, d_head]
        k = resid @ W_K[h]                                    # [n_ctx, d_head]
        # Step 4: score of destination i for source j is q_i . k_j, divided by sqrt(d_head)
        # so that the scores do not grow with the head width.
        scores = (q @ k.T) / math.sqrt(d_head)                # [n_ctx(dest), n_ctx(src)]
        # Step 5: forbid looking ahead. exp(-inf) = 0, so masked sources get weight 0.
        scores = scores.masked_fill(~allowed, float("-inf"))
        # Step 6: softmax over the *source* axis (the last one): each destination row
        # becomes a probability distribution over the positions it may read from.
        patterns.append(torch.softmax(scores, dim=-1))
    return torch.stack(patterns)                               # [n_heads, n_ctx, n_ctx]


def kron_apply(A, W, X):
    """(A (x) W) acting on the token matrix X, through an explicit Kronecker product.

    A [n_out, n_ctx], W [d_out, d_in] (paper convention: W maps a column vector of size
    d_in to one of size d_out), X [n_ctx, d_in]. Returns [n_out, d_out].

    Difficulty 1, about 10 minutes.
    """
    # Step 1: the Kronecker product. Entry ((i, a), (j, b)) of kron(A, W) is A[i, j] * W[a, b],
    # with the pair (i, a) flattened row-major to i * d_out + a.
    # (.contiguous(): this torch's kron refuses some transposed views such as W.T.)
    big = torch.kron(A.contiguous(), W.contiguous())          # [n_out * d_out, n_ctx * d_in]
    # Step 2: flatten X the same way (row-major: row 0 first, then row 1, ...).
    vec_x = X.reshape(-1)                                     # [n_ctx * d_in]
    # Step 3: apply the big matrix and fold the result back into [n_out, d_out].
    # Entry (i, a) is sum_j sum_b A[i, j] W[a, b] X[j, b] = (A X W^T)[i, a].
    return (big @ vec_x).reshape(A.shape[0], W.shape[0])


def tensor_product_logits(tokens, W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """Logits [n_ctx, d_vocab] built from the tensor-product terms
    T = Id (x) W_U W_E + sum_h A^h (x) W_U W_OV^h W_E, with the positional embeddings included.

    Difficulty 2, about 30 minutes.
    """
    n_ctx = tokens.shape[0]
    d_vocab = W_E.shape[0]
    n_heads = W_Q.shape[0]
    dtype = W_E.dtype

    # Step 1: the paper's T acts on the one-hot token matrix only, so it cannot see positions.
    # Trick: give every position its own "token" too. The augmented one-hot matrix
    # X_aug = [X | I] has a 1 in the token's column and a 1 in the position's column, and
    # the augmented embedding E_aug = [W_E ; W_pos[:n_ctx]] stacks both tables, so
    # X_aug @ E_aug = X W_E + W_pos[:n_ctx], exactly the residual stream.
    X = torch.nn.functional.one_hot(tokens, d_vocab).to(dtype)
    X_aug = torch.cat([X, torch.eye(n_ctx, dtype=dtype, device=X.device)], dim=1)  # [n_ctx, d_vocab + n_ctx]
    E_aug = torch.cat([W_E, W_pos[:n_ctx]], dim=0)                                 # [d_vocab + n_ctx, d_model]

    # Step 2: the attention patterns A^h (they depend on the tokens, so T is not linear in X;
    # it is linear once the patterns are fixed).
    A = attention_patterns(tokens, W_E, W_pos, W_Q, W_K)      # [n_heads, n_ctx, n_ctx]

    # Step 3: the direct path Id (x) W_U W_E. In the paper's column-vector convention
    # "W_U W_E" maps a one-hot column to a logit column; with TransformerLens's row-vector
    # weights that matrix is (E_aug @ W_U)^T, of shape [d_vocab, d_vocab + n_ctx].
    identity = torch.eye(n_ctx, dtype=dtype, device=X.device)
    logits = kron_apply(identity, (E_aug @ W_U).T, X_aug)

    # Step 4: one term per head, A^h (x) W_U W_OV^h W_E, with W_OV^h = W_V^h W_O^h
    # (row-vector order). Again transpose to get the paper's column-vector matrix.
    for h in range(n_heads):
        ov_paper = (E_aug @ W_V[h] @ W_O[h] @ W_U).T          # [d_vocab, d_vocab + n_ctx]
        logits = logits + kron_apply(A[h], ov_paper, X_aug)
    return logits


def corrected_notes_T(patterns, W_E, W_V, W_O, W_U):
    """The source notes' T, fixed: the full matrix acting on the row-major flattened X.

    patterns [n_heads, n_ctx, n_ctx] (the A^h, already computed), weights in TransformerLens
    shapes. Returns T [n_ctx * d_vocab, n_ctx * d_vocab] with
        T = kron(Id, (W_E W_U)^T) + sum_h kron(A^h, (W_E W_V^h W_O^h W_U)^T),
    so that T @ one_hot(tokens).reshape(-1) is the token part of the logits, flattened
    (the positional part is added separately; the paper's formula leaves it out).

    Difficulty 2, about 20 minutes.
    """
    n_ctx = patterns.shape[-1]
    eye = torch.eye(n_ctx, dtype=patterns.dtype, device=patterns.device)

    # Fix 1: np.outer flattens both arguments and returns a [n*n, v*v] table of products;
    # the tensor product needs the row indices of A and W interleaved, which is torch.kron.
    # Fix 2: the paper writes column-vector matrices W_U W_E; with TransformerLens's
    # row-vector weights that is the transpose of W_E @ W_U.
    # (.contiguous(): this torch's kron refuses some transposed views.)
    T = torch.kron(eye, (W_E @ W_U).T.contiguous())
    for h in range(patterns.shape[0]):
        # Fix 3: the notes add np.outer(Ah, OV) with a single OV; each head has its own
        # OV circuit W_U W_OV^h W_E = (W_E W_V^h W_O^h W_U)^T.
        T = T + torch.kron(patterns[h].contiguous(), (W_E @ W_V[h] @ W_O[h] @ W_U).T.contiguous())
    return T
