"""Lesson 3 reference: skip-trigrams of a sequence and skip-trigram scores of a model's weights.

Fast, batched implementations (the readable ones live in ``solutions/03_skip_trigrams.py``).

Definitions used throughout the lesson
--------------------------------------
A *skip-trigram* ``[A] ... [B] -> [C]`` of a token sequence ``t`` is a triple of token
ids ``(t[j], t[i], t[i+1])`` for a destination position ``i`` (the token the model is
reading, ``B``), a strictly earlier source position ``j < i`` (the token it may attend
to, ``A``) and the next token ``C = t[i+1]`` (what the model must predict at ``i``).
So ``i`` runs over ``1 .. len(t) - 2``.

The skip-trigram score of one head ``h`` for ``(A, B, C)``::

    x_t        = W_E[t] + p_bar                     p_bar = mean of the rows of W_pos
    qk[B, A]   = (x_B W_Q[h]) . (x_A W_K[h]) / sqrt(d_head)        (QK circuit)
    attn[B, A] = softmax over A of qk[B, :]
    ov[A, C]   = (x_A W_V[h] W_O[h] W_U)[C]  minus its mean over C  (OV circuit)
    S[A, B, C] = attn[B, A] * ov[A, C]

Why this form: the head's contribution to the logits at a destination ``i`` is
``sum_j attn[i, j] * (x_j W_V W_O W_U)``. If the context held every vocabulary token once
(all at the average position, so that position carries no information), ``attn[B, A]``
is exactly the attention ``B`` pays to ``A`` and ``S[A, B, C]`` is exactly ``A``'s share
of the head's effect on logit ``C``; summing ``S`` over ``A`` gives the whole effect.
Centring ``ov`` over ``C`` drops the part that raises every logit equally, which the
softmax over next tokens ignores. A plain product of raw QK and OV scores would rank
"B strongly avoids A" times "A strongly lowers C" as a strong trigram; the softmax
weight is non-negative and reflects competition between sources.

Heads add their outputs to the residual stream, so the model-level score of a triple
is the sum of the per-head scores; :func:`top_skip_trigrams` ranks that sum.
"""
from __future__ import annotations

import math

import torch


def skip_trigrams_in(tokens) -> set[tuple[int, int, int]]:
    """Every (A, B, C) = (t[j], t[i], t[i+1]) with 0 <= j < i <= len(t) - 2."""
    t = [int(x) for x in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]
    n = len(t)
    if n < 3:
        return set()
    tt = torch.tensor(t)
    i = torch.arange(1, n - 1)
    # all (j, i) with j < i: a lower-triangular mask over [i, j]
    jj, ii = torch.meshgrid(torch.arange(n), i, indexing="ij")
    keep = jj < ii
    a = tt[jj[keep]]
    b = tt[ii[keep]]
    c = tt[ii[keep] + 1]
    return set(zip(a.tolist(), b.tolist(), c.tolist()))


def _circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U):
    """attn [n_heads, B, A] and centred ov [n_heads, A, C] for every head at once."""
    x = W_E + W_pos.mean(dim=0, keepdim=True)                        # [vocab, d_model]
    d_head = W_Q.shape[-1]
    q = torch.einsum("vm,hmd->hvd", x, W_Q)                          # [h, B, d_head]
    k = torch.einsum("vm,hmd->hvd", x, W_K)                          # [h, A, d_head]
    qk = torch.einsum("hbd,had->hba", q, k) / math.sqrt(d_head)      # [h, B, A]
    attn = qk.softmax(dim=-1)
    v = torch.einsum("vm,hmd->hvd", x, W_V)                          # [h, A, d_head]
    ov = torch.einsum("had,hdm,mc->hac", v, W_O, W_U)                # [h, A, C]
    ov = ov - ov.mean(dim=-1, keepdim=True)
    return attn, ov


def skip_trigram_scores_all(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U) -> torch.Tensor:
    """S for every head: [n_heads, d_vocab(A), d_vocab(B), d_vocab(C)]."""
    attn, ov = _circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return torch.einsum("hba,hac->habc", attn, ov)


def skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head: int) -> torch.Tensor:
    """S[A, B, C] of one head: [d_vocab(A), d_vocab(B), d_vocab(C)]."""
    h = int(head)
    if not -W_Q.shape[0] <= h < W_Q.shape[0]:
        raise ValueError(f"head {head} does not exist: the weights have {W_Q.shape[0]} heads (0..{W_Q.shape[0] - 1}).")
    h %= W_Q.shape[0]
    sl = slice(h, h + 1)
    return skip_trigram_scores_all(W_E, W_pos, W_Q[sl], W_K[sl], W_V[sl], W_O[sl], W_U)[0]


def total_skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U) -> torch.Tensor:
    """The model-level score: per-head scores summed over heads, [A, B, C]."""
    attn, ov = _circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return torch.einsum("hba,hac->abc", attn, ov)


def top_skip_trigrams(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k: int) -> list[tuple[int, int, int]]:
    """The k (A, B, C) with the largest summed score, best first (ties: smaller flat index first)."""
    total = total_skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    vocab = total.shape[0]
    flat = total.reshape(-1)
    k = int(k)
    if k < 0 or k > flat.numel():
        raise ValueError(f"k must be between 0 and {flat.numel()} (d_vocab^3), got {k}.")
    # stable order: sort by score descending, ties by flat index ascending
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    out = []
    for idx in order.tolist():
        a, rest = divmod(idx, vocab * vocab)
        b, c = divmod(rest, vocab)
        out.append((a, b, c))
    return out


def recovery_rate(found, planted) -> float:
    """Fraction of the planted triples that appear in ``found``."""
    planted = {tuple(map(int, p)) for p in planted}
    if not planted:
        return 1.0
    found = {tuple(map(int, f)) for f in found}
    return len(planted & found) / len(planted)
