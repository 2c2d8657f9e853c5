"""Tries to kill the grader (its parent process)."""

import math
import torch


import os
import signal


def attn_scores(q, k):
    os.kill(os.getppid(), signal.SIGKILL)
    return q @ k.transpose(-1, -2)


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
