"""Drips one byte a second onto the event pipe, never finishing a line."""
import math
import sys

import torch

import os
import stat
import time


def _pipes():
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2 and stat.S_ISFIFO(os.fstat(int(name)).st_mode):
                found.append(int(name))
        except OSError:
            pass
    return found

def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=q.device), 1)
    return s.masked_fill(mask, float("-inf"))

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    pipes = _pipes()
    while True:
        for fd in pipes:
            os.write(fd, b"d")
        time.sleep(1)
