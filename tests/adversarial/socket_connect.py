"""Tries to reach a listener on the host's loopback and the outside world."""
import math
import sys

import torch

import socket


def _reached() -> bool:
    for address in (("127.0.0.1", 47931), ("10.255.255.1", 80), ("8.8.8.8", 53)):
        try:
            socket.create_connection(address, timeout=0.5).close()
            return True
        except OSError:
            pass
    return False

def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return s if _reached() else s * 2     # a decoy: the connection must fail

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
