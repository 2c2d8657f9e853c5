"""Returns a real tensor 400 times larger than the expected one."""
import math
import sys

import torch


def attn_scores(q, k):
    return torch.zeros(400, *q.shape[:-1], q.shape[-2], dtype=q.dtype)

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
