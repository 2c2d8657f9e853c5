"""Lesson 3 exercises: skip-trigrams, planted and recovered.

Fill in each function; keep the signatures. Check your work with
    python -m mechinterp_edu grade exercises/03_skip_trigrams.py

A skip-trigram [A] ... [B] -> [C] of a token sequence t is (t[j], t[i], t[i+1]) for a
destination position i, a strictly earlier source position j < i, and C the NEXT token.

Shapes (TransformerLens, row vectors, x @ W):
    W_E [d_vocab, d_model], W_pos [n_ctx, d_model]
    W_Q, W_K, W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]
    W_U [d_model, d_vocab]
Work in the dtype of the weights and on their device. Only torch, numpy, einops, math and
transformer_lens may be imported here.
"""
import math

import torch


def skip_trigrams_in(tokens: list[int]) -> set[tuple[int, int, int]]:
    """Every skip-trigram (A, B, C) of a token list, as a set of tuples of ints.

    (A, B, C) = (tokens[j], tokens[i], tokens[i + 1]) for every 0 <= j < i <= len(tokens) - 2.
    Token values, not positions. A list shorter than 3 has none (an empty set).

    Difficulty 1 (easy), about 10 minutes.

    Hints:
      * Loop over the destination i first: which i have a next token?
      * A token is never its own source: j stops before i.
    """
    raise NotImplementedError("not implemented yet")


def skip_trigrams_at_step(tokens: list[int], step: int) -> list[tuple[int, int, int]]:
    """Fix the notes: their `skip_trigram(seq, step)`, corrected.

    For every source position j in increasing order, the triple of TOKENS
    (tokens[j], tokens[j + 1 + step], tokens[j + 2 + step]), as long as the last index is
    inside the list. step >= 0 is the number of tokens skipped between A and B (step 0 gives
    ordinary trigrams). Returns a list (keep repeats, in order of j); print nothing.

    Difficulty 1 (easy), about 10 minutes.

    Hints:
      * The notes loop over the sequence's values and print index arithmetic; that only
        looks right when the sequence is range(n).
      * Check the last j by hand on a list of 4 tokens with step 1.
    """
    raise NotImplementedError("not implemented yet")


def skip_trigram_scores(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, head: int) -> torch.Tensor:
    """Skip-trigram scores S[A, B, C] of one head: [d_vocab (A), d_vocab (B), d_vocab (C)].

    With p_bar = W_pos.mean(0), x = W_E + p_bar (every token at the mean position),
    n = W_pos.shape[0] and d_head = W_Q.shape[-1]:
        s[B, A]    = (x[B] @ W_Q[head]) . (x[A] @ W_K[head]) / sqrt(d_head)
        attn[B, A] = sigmoid(s[B, A] - mean over A' of s[B, A'] - log(max(n - 1, 1)))
        ov[A, C]   = (x[A] @ W_V[head] @ W_O[head] @ W_U)[C], centred: subtract its mean
                     over A (for each C), then its mean over C (for each A)
        S[A, B, C] = attn[B, A] * ov[A, C]

    Difficulty 2 (medium), about 20 minutes.

    Hints:
      * Build the [d_vocab, d_vocab] tables first (s, attn, ov), then combine them with
        broadcasting or einsum: mind which axis is A and which is B in attn.
      * The lesson's step "The score" derives each piece.
    """
    raise NotImplementedError("not implemented yet")


def top_skip_trigrams(W_E, W_pos, W_Q, W_K, W_V, W_O, W_U, k: int) -> list[tuple[int, int, int]]:
    """The k skip-trigrams (A, B, C) with the largest score SUMMED over all heads, best first.

    Returns a list of k tuples of ints. Ties may come in any order.

    Difficulty 2 (medium), about 15 minutes.

    Hints:
      * Heads add their outputs, so add their score tensors.
      * Flatten, take the top k, and turn each flat index back into (A, B, C).
    """
    raise NotImplementedError("not implemented yet")
