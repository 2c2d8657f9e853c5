"""Starts 2,000 threads."""
import math
import sys

import torch

import threading
import time

def attn_scores(q, k):
    threads = []
    for _ in range(2000):
        t = threading.Thread(target=time.sleep, args=(30,), daemon=True)
        t.start()
        threads.append(t)
    return q

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
