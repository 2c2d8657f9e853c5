"""Sends a zip whose directory lists 10,000 members (more than a result ever has) (a naive reader builds an object for each)."""
import math
import sys

import torch

_runner = sys.modules["__main__"]
_real_pack = getattr(_runner, "pack", None)
_calls = [0]


def _patched_pack(meta, arrays, np):
    _calls[0] += 1
    if _calls[0] == 2:          # the first exercise's results (the first call reports the load)
        return _forge(meta, arrays, np)
    return _real_pack(meta, arrays, np)


if _real_pack is not None:
    _runner.pack = _patched_pack


def _forge(meta, arrays, np):
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(10_000):
            zf.writestr(f"m{i}.npy", b"")
    return buffer.getvalue()

def attn_scores(q, k):
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool, device=q.device), 1)
    return s.masked_fill(mask, float("-inf"))

def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U

def double(x):
    return x * 2
