"""Returns int8 numbers where floats are expected (and must not be widened in bulk)."""
import math
import sys

import torch


def attn_scores(q, k):
    return torch.zeros(*q.shape[:-1], q.shape[-2], dtype=torch.int8)

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
