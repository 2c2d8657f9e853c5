"""Path objects that name a harmless file on one call of __fspath__ and the test spec on
another (the audit hook and the C code that opens the file each ask once), and a str
subclass that lies to string methods."""
import math
import os
import sys

import torch


class Shifty:
    def __init__(self, first, second):
        self.calls = 0
        self.paths = (first, second)

    def __fspath__(self):
        self.calls += 1
        return self.paths[0] if self.calls == 1 else self.paths[1]


class Liar(str):
    def startswith(self, *args):
        return False

    def __add__(self, other):
        return "/tmp/harmless" + other


def attn_scores(q, k):
    root = next(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(p))))
                for p in sys.path if p.endswith("site-packages"))
    secret = os.path.join(root, "tests", "adversarial", "grader_toy_spec.py")
    for path in (Shifty(secret, "/dev/null"), Shifty("/dev/null", secret),
                 Shifty("/dev/null", "/dev/null"), Liar(secret)):
        try:
            with open(path) as fh:
                if "attn_scores_ref" in fh.read():
                    break
        except PermissionError:
            continue
    else:
        raise PermissionError("every trick was refused")
    n, d = q.shape[-2], q.shape[-1]
    s = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
    return s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))


def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U + W_pos[: X.shape[-2]] @ W_U


def double(x):
    return x * 2
