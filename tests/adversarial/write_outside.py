"""Tries to overwrite the learner's progress store and a file in /tmp."""

import math
import torch


import os


def attn_scores(q, k):
    with open("/tmp/mechinterp_adversarial_marker.txt", "w") as fh:
        fh.write("pwned")
    return q @ k.transpose(-1, -2)


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
