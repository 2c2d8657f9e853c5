"""Lesson 3 reference: skip-trigrams of a sequence and skip-trigram scores of a model's weights.

Fast, batched implementations (the readable ones live in ``solutions/03_skip_trigrams.py``).

Skip-trigrams of a sequence
---------------------------
A *skip-trigram* ``[A] ... [B] -> [C]`` of a token sequence ``t`` is the triple of token
ids ``(t[j], t[i], t[i+1])`` for a destination position ``i`` (``B``, the token the model
reads when it predicts), a strictly earlier source position ``j < i`` (``A``, a token it
can attend to) and the next token ``C = t[i+1]`` (what it must predict at ``i``). So ``i``
runs over ``1 .. len(t) - 2`` and ``j`` over ``0 .. i - 1``.

Skip-trigram score of one head
------------------------------
Positions are averaged out: every token sits at the mean position, ``x_t = W_E[t] + p_bar``
with ``p_bar`` the mean row of ``W_pos`` (for a bilinear form, averaging the query and the
key position independently is the same as using ``p_bar``). Then, for head ``h``::

    s[B, A]    = (x_B W_Q) . (x_A W_K) / sqrt(d_head)                     QK circuit
    s_bar[B]   = mean over A of s[B, A]         (= the score of the mean token x_bar)
    attn[B, A] = e^s / (e^s + (n - 1) e^s_bar) = sigmoid(s - s_bar - log(n - 1))
    ov[A, C]   = (x_A W_V W_O W_U)[C]                                      OV circuit
    S[A, B, C] = attn[B, A] * ov_c[A, C]

with ``n = n_ctx`` (rows of ``W_pos``; ``n - 1`` is taken as at least 1) and ``ov_c`` the
OV circuit centred over source tokens A and over output tokens C (subtract the mean over
A, then the mean over C).

Why: put B at the destination and fill the ``n`` keys with the average token ``x_bar``;
now replace one key by A. A then gets attention ``attn[B, A]`` (the rest share ``1 - attn``)
and the head's output logits change by exactly ``attn[B, A] * (ov[A] - ov[x_bar])``, where
``ov[x_bar]`` is the mean of ``ov`` over A. Subtracting the mean over C drops the part that
moves every logit equally, which the softmax over next tokens ignores. So ``S[A, B, C]`` is
what A, seen from B, does to C's logit through this head, relative to the other logits. It
is a product because attention (QK) and value (OV) factor; the softmax weight keeps it
honest: a plain product of raw QK and OV entries would rank "B avoids A" times "A lowers
C" as a strong skip-trigram.

Heads add their outputs to the residual stream, so the model-level score of a triple is
the sum over heads; :func:`top_skip_trigrams` ranks that sum.
"""
from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

# Weight shapes (TransformerLens, row vectors)
WE = Float[Tensor, "d_vocab d_model"]
WPos = Float[Tensor, "n_ctx d_model"]
WQK = Float[Tensor, "n_heads d_model d_head"]
WO = Float[Tensor, "n_heads d_head d_model"]
WU = Float[Tensor, "d_model d_vocab"]


# --------------------------------------------------------------------------- sequences
def skip_trigrams_in(tokens) -> set[tuple[int, int, int]]:
    """Every (A, B, C) = (t[j], t[i], t[i+1]) with 0 <= j < i <= len(t) - 2."""
    t = torch.as_tensor([int(x) for x in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)],
                        dtype=torch.long)
    n = t.numel()
    if n < 3:
        return set()
    i, j = torch.tril_indices(n - 1, n - 1, offset=-1)          # all j < i <= n - 2
    triples = torch.stack([t[j], t[i], t[i + 1]], dim=1)
    return set(map(tuple, triples.unique(dim=0).tolist()))


def skip_trigram_positions(n: int) -> list[tuple[int, int]]:
    """(j, i) source/destination positions of the skip-trigrams of a length-n sequence."""
    return [(j, i) for i in range(1, n - 1) for j in range(i)]


def skip_trigrams_at_step(tokens, step: int) -> list[tuple[int, int, int]]:
    """The notes' enumerator, corrected: (t[j], t[j+1+step], t[j+2+step]) for every j, in order."""
    t = [int(x) for x in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0 (0 gives ordinary trigrams), got {step}.")
    last = len(t) - 3 - step                                     # largest j
    return [(t[j], t[j + 1 + step], t[j + 2 + step]) for j in range(last + 1)]


# --------------------------------------------------------------------------- weights
def _check_head(W_Q: WQK, head: int) -> int:
    h = int(head)
    n_heads = W_Q.shape[0]
    if not -n_heads <= h < n_heads:
        raise ValueError(f"head {head} does not exist: the weights have {n_heads} heads (0..{n_heads - 1}).")
    return h % n_heads


def circuits(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU) -> tuple[torch.Tensor, torch.Tensor]:
    """(attn [n_heads, B, A], centred ov [n_heads, A, C]) for every head at once."""
    x = W_E + W_pos.mean(dim=0, keepdim=True)                        # [vocab, d_model]
    n_ctx, d_head = W_pos.shape[0], W_Q.shape[-1]
    q = torch.einsum("vm,hmd->hvd", x, W_Q)                          # [h, B, d_head]
    k = torch.einsum("vm,hmd->hvd", x, W_K)                          # [h, A, d_head]
    s = torch.einsum("hbd,had->hba", q, k) / math.sqrt(d_head)       # [h, B, A]
    s_bar = s.mean(dim=-1, keepdim=True)
    attn = torch.sigmoid(s - s_bar - math.log(max(n_ctx - 1, 1)))
    ov = torch.einsum("vm,hmd,hdn,nc->hvc", x, W_V, W_O, W_U)        # [h, A, C]
    ov = ov - ov.mean(dim=1, keepdim=True)
    ov = ov - ov.mean(dim=2, keepdim=True)
    return attn, ov


def skip_trigram_scores_all(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU) -> torch.Tensor:
    """S for every head: [n_heads, d_vocab(A), d_vocab(B), d_vocab(C)]."""
    attn, ov = circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return torch.einsum("hba,hac->habc", attn, ov)


def skip_trigram_scores(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU, head: int) -> torch.Tensor:
    """S[A, B, C] of one head: [d_vocab(A), d_vocab(B), d_vocab(C)]."""
    h = _check_head(W_Q, head)
    sl = slice(h, h + 1)
    return skip_trigram_scores_all(W_E, W_pos, W_Q[sl], W_K[sl], W_V[sl], W_O[sl], W_U)[0]


def total_skip_trigram_scores(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU) -> torch.Tensor:
    """The model-level score: per-head scores summed over heads, [A, B, C]."""
    attn, ov = circuits(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U)
    return torch.einsum("hba,hac->abc", attn, ov)


def rank_triples(total: torch.Tensor, k: int) -> list[tuple[int, int, int]]:
    """The k largest entries of a [V, V, V] score tensor as (A, B, C), best first (ties: lower index)."""
    vocab = total.shape[0]
    flat = total.reshape(-1)
    k = int(k)
    if not 0 <= k <= flat.numel():
        raise ValueError(f"k must be between 0 and {flat.numel()} (d_vocab^3), got {k}.")
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    a, rest = order // (vocab * vocab), order % (vocab * vocab)
    return list(zip(a.tolist(), (rest // vocab).tolist(), (rest % vocab).tolist()))


def top_skip_trigrams(W_E: WE, W_pos: WPos, W_Q: WQK, W_K: WQK, W_V: WQK, W_O: WO, W_U: WU, k: int) -> list[tuple[int, int, int]]:
    """The k (A, B, C) with the largest score summed over heads, best first."""
    return rank_triples(total_skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U), k)


def recovery_rate(found, planted) -> float:
    """Fraction of the planted triples that appear in ``found``."""
    planted = {tuple(map(int, p)) for p in planted}
    if not planted:
        return 1.0
    found = {tuple(map(int, f)) for f in found}
    return len(planted & found) / len(planted)
