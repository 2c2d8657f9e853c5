"""Allocates until memory runs out in one exercise."""

import math
import torch


def attn_scores(q, k):
    hoard = []
    while True:
        hoard.append(torch.ones(10_000_000, dtype=torch.float64))


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
