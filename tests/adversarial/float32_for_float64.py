"""Returns float32 for float64 inputs (loses precision; breaks a later exercise)."""
import math
import sys

import torch


def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q.float(), k.float()) / math.sqrt(d)
    return s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
