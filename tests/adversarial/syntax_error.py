"""A syntax error: nothing can be graded."""
import torch


def attn_scores(q, k)
    return q @ k.T


def double(x):
    return 2 * x
