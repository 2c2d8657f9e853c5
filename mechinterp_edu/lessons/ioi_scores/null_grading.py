"""Lesson 5 graded null (optional exercise): ``parallel_share_null``.

Given sampled directions, the learner computes one draw's share of the bilinear score carried by
the (x_q along u) x (x_k along m) term, and summarises the draws (mean, 2.5% and 97.5% quantiles).
The catalogued mistakes: the notes' constant 1/d^2 (a mean without its spread), and directions
used without normalising them.
"""
from __future__ import annotations

import math

import torch

from mechinterp_edu.grader.spec import Case, Exercise, Mistake

LESSON = 5


def parallel_share_null(x_q, x_k, B, u, m):
    """Reference: (mean, lo, hi) over draws of (x_q·û)(x_k·m̂)(û B m̂^T) / (x_q B x_k^T)."""
    uh = u / u.norm(dim=-1, keepdim=True)
    mh = m / m.norm(dim=-1, keepdim=True)
    share = (uh @ x_q) * (mh @ x_k) * torch.einsum("nd,de,ne->n", uh, B, mh) / (x_q @ B @ x_k)
    return share.mean(), torch.quantile(share, 0.025), torch.quantile(share, 0.975)


def _one_over_d_squared(x_q, x_k, B, u, m):
    c = torch.tensor(1.0 / x_q.shape[-1] ** 2, dtype=x_q.dtype)
    return c, c, c


def _unnormalised(x_q, x_k, B, u, m):
    share = (u @ x_q) * (m @ x_k) * torch.einsum("nd,de,ne->n", u, B, m) / (x_q @ B @ x_k)
    return share.mean(), torch.quantile(share, 0.025), torch.quantile(share, 0.975)


def _cases() -> list[Case]:
    out = []
    for d, draws, seed, dtype, tied in ((8, 4000, 0, torch.float64, False), (16, 3000, 1, torch.float32, True),
                                        (64, 2000, 2, torch.float64, False)):
        g = torch.Generator().manual_seed(300 + seed)
        x_q = torch.randn(d, generator=g, dtype=torch.float64)
        x_k = x_q + 0.5 * torch.randn(d, generator=g, dtype=torch.float64) if tied else \
            torch.randn(d, generator=g, dtype=torch.float64)
        B = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d) + torch.eye(d, dtype=torch.float64)
        u = torch.randn(draws, d, generator=g, dtype=torch.float64) * 2.0
        m = torch.randn(draws, d, generator=g, dtype=torch.float64) * 0.5
        label = f"d = {d}, {draws} draws, {'x_k near x_q' if tied else 'independent x_q, x_k'}, {str(dtype)[6:]}"
        out.append(Case(label, tuple(t.to(dtype) for t in (x_q, x_k, B, u, m)), {"d": d}))
    return out


PARALLEL_SHARE_NULL = Exercise(
    lesson=LESSON, name="parallel_share_null", points=1, reference=parallel_share_null, cases=_cases,
    output="tuple", optional=True, difficulty=1, minutes=10,
    summary="Null of the (q∥u)·(k∥m) share from sampled directions: (mean, 2.5% quantile, 97.5% quantile).",
    mistakes=[
        Mistake("a chance level of 1/d^2",
                "a chance level of 1/d^2: 1/d^2 is the MEAN share of the (q∥)·(k∥) term for random directions, "
                "but one draw's share spreads over tens of times that mean (three factors of about 1/sqrt(d) "
                "each). Report the sampled mean with its band, and compare the measured share with the band, "
                "not with 1/d^2 alone.", _one_over_d_squared),
        Mistake("projecting on an unnormalised direction",
                "projecting on an unnormalised direction: (x . u) u is |u|^2 times the projection; normalise "
                "u and m first.", _unnormalised),
    ],
)

NULL_EXERCISES: tuple[Exercise, ...] = (PARALLEL_SHARE_NULL,)
