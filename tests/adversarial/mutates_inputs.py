"""Computes the right answer, then zeroes its inputs in place."""

import math
import torch


def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    q.zero_()
    k.mul_(1000)
    return s


def embed_logits(X, W_E, W_pos, W_U):
    out = X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U
    W_U.fill_(float("nan"))
    return out


def double(x):
    return x * 2
