"""Writes 900 MB into its scratch folder."""
import math
import sys

import torch


def attn_scores(q, k):
    block = b"x" * 2**20
    with open("big.bin", "wb") as fh:
        for _ in range(900):
            fh.write(block)
    return q

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
