"""Honest but different: float64 maths (cast back to the inputs' dtype), matmul, another formula order."""

import math
import torch


def attn_scores(q, k):
    d_head = q.shape[-1]
    scores = ((q.double() / d_head ** 0.5) @ k.double().transpose(-2, -1)).to(q.dtype)
    n = scores.shape[-1]
    keep = torch.tril(torch.ones(n, n, device=q.device)).bool()
    return torch.where(keep, scores, torch.tensor(float("-inf"), dtype=scores.dtype, device=q.device))


def embed_logits(X, W_E, W_pos, W_U):
    residual = torch.einsum("pv,vd->pd", X, W_E) + W_pos[: X.shape[0]]
    return torch.einsum("pd,dv->pv", residual, W_U)


def double(x):
    return x + x
