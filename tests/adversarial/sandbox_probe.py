"""Not hostile: passes only if the process running it is really locked down (its own process
namespace, no network, limits on memory, processes and open files, and no course folder)."""
import math
import os
import resource
import socket
import sys

import torch


def _locked_down() -> bool:
    limited = all(resource.getrlimit(r)[0] != resource.RLIM_INFINITY
                  for r in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_FSIZE))
    own_pids = len([p for p in os.listdir("/proc") if p.isdigit()]) < 10
    try:
        socket.create_connection(("10.255.255.1", 80), timeout=0.5).close()
        offline = False
    except OSError:
        offline = True
    return limited and own_pids and offline


def _course_unreadable() -> bool:
    root = next(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(p))))
                for p in sys.path if p.endswith("site-packages"))
    try:
        os.listdir(os.path.join(root, "tests"))
    except (FileNotFoundError, PermissionError):
        return True
    return False


def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    return s if _course_unreadable() else s + 1


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2 if _locked_down() else x
