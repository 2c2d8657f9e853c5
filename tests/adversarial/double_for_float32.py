"""Returns float64 for float32 inputs."""
import math
import sys

import torch


def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=q.device), 1)
    return s.masked_fill(mask, float("-inf"))

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x.double() * 2
