"""Calls sys.exit(0) inside one exercise."""

import math
import torch


import sys


def attn_scores(q, k):
    sys.exit(0)


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
