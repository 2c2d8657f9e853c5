"""Lesson 2 worked solutions: QK and OV circuits.

Read top to bottom. Each function goes one head at a time and writes every product
out, in the order the circuit is read: token -> embedding -> head -> (score | logits).
(The course's reference does the same with einsum over all heads and a FactoredMatrix
for the eigenvalues; the tests check both against the model's own forward pass.)

Shapes (TransformerLens, row vectors, x @ W):
    W_E [d_vocab, d_model], W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]
    W_U [d_model, d_vocab]
"""
import torch


def full_qk_circuit(W_E, W_Q, W_K):
    """W_E W_Q^h (W_E W_K^h)^T: [n_heads, d_vocab (query token), d_vocab (key token)], unscaled.

    Difficulty 1, about 10 minutes.
    """
    circuits = []
    for h in range(W_Q.shape[0]):
        # Every vocabulary token as a query: row a is the query vector of token a.
        queries = W_E @ W_Q[h]                                 # [d_vocab, d_head]
        # Every vocabulary token as a key.
        keys = W_E @ W_K[h]                                    # [d_vocab, d_head]
        # Entry (a, b) = query of a . key of b: the score token a (destination) gives token b
        # (source), before positions, scaling, masking and softmax.
        circuits.append(queries @ keys.T)                      # [d_vocab, d_vocab]
    return torch.stack(circuits)


def full_ov_circuit(W_E, W_V, W_O, W_U):
    """W_E W_V^h W_O^h W_U: [n_heads, d_vocab (source token), d_vocab (output logit)].

    Difficulty 1, about 10 minutes.
    """
    circuits = []
    for h in range(W_V.shape[0]):
        # Follow one source token through the head, left to right (row vectors):
        embedded = W_E                                         # [d_vocab, d_model]   token -> residual
        values = embedded @ W_V[h]                             # [d_vocab, d_head]    residual -> value
        written = values @ W_O[h]                              # [d_vocab, d_model]   value -> residual
        circuits.append(written @ W_U)                         # [d_vocab, d_vocab]   residual -> logits
        # Row b: the logits added when the head attends fully to a token b.
    return torch.stack(circuits)


def positional_qk(W_pos, W_Q, W_K):
    """W_pos W_Q^h (W_pos W_K^h)^T: [n_heads, n_ctx (query position), n_ctx (key position)],
    unscaled and unmasked (the entries above the diagonal are never used by a causal model).

    Difficulty 1, about 5 minutes.
    """
    # Same bilinear form as the token QK circuit, with positions in place of tokens.
    return full_qk_circuit(W_pos, W_Q, W_K)


def copying_score(W_E, W_V, W_O, W_U):
    """[n_heads]: Re(sum of the OV circuit's eigenvalues) / sum of their moduli.

    Eigenvalues of a real matrix are complex in general (conjugate pairs). Their sum is the
    trace, a real number, so the real part only removes rounding noise; the moduli |lambda|
    are real too. The score is 1 for a pure copying head (all eigenvalues real and positive)
    and -1 for a head that suppresses the token it reads. Returns 0 for an all-zero circuit.

    Difficulty 2, about 15 minutes.
    """
    ov = full_ov_circuit(W_E, W_V, W_O, W_U)
    scores = []
    for h in range(ov.shape[0]):
        # Eigenvalues of the [d_vocab, d_vocab] matrix itself, in float64: its rank is at most
        # d_head, so most eigenvalues are (numerically) zero and add almost nothing below.
        eigenvalues = torch.linalg.eigvals(ov[h].double())     # complex, [d_vocab]
        total = eigenvalues.sum().real
        size = eigenvalues.abs().sum()
        scores.append(total / size if size > 0 else torch.zeros((), dtype=torch.float64))
    return torch.stack(scores).to(W_E.dtype)
