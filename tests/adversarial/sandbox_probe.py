"""Not hostile: passes only if the process running it is really locked down (a seccomp filter,
no-new-privileges, a memory limit, and no way to open the course's folder)."""
import math
import os
import resource
import sys

import torch


def _locked_down() -> bool:
    status = open("/proc/self/status").read()
    seccomp = "Seccomp:\t2" in status
    no_new_privs = "NoNewPrivs:\t1" in status
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return seccomp and no_new_privs and soft != resource.RLIM_INFINITY


def _course_unreadable() -> bool:
    root = next(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(p))))
                for p in sys.path if p.endswith("site-packages"))
    try:
        os.listdir(os.path.join(root, "tests"))
    except PermissionError:
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
