"""Kills its own process with os._exit(0) inside one exercise; the others must still be graded."""

import math
import torch


import os


def attn_scores(q, k):
    os._exit(0)


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
