"""Lesson 5 nulls: what a fraction or a share looks like when the direction means nothing.

Every fraction the lesson reports (the mean over prompts of cos^2 between a component and
W_U[IO]) and every share (the part of the net score carried by one of the four terms) is drawn
beside a *sampled* null: the same statistic, on the same vectors, with the meaningful directions
replaced by directions drawn uniformly on the sphere of R^d (a fresh one per prompt and per draw).
The null is summarised by its mean and a 95% band (the 2.5% and 97.5% quantiles over draws).

Closed forms the tests check the sampler against:

* cos^2 of a fixed vector with a uniform direction is Beta(1/2, (d-1)/2): mean 1/d, variance
  2(d-1) / (d^2 (d+2)); k directions hold k/d on average.
* For two independent uniform directions u (query side) and m (key side) and a bilinear score
  x_q B x_k^T, the (q∥u)·(k∥m) term is (x_q·u)(x_k·m) u B m^T, whose expectation is
  x_q B x_k^T / d^2 (because E[(x·u) u] = x/d): its expected share is 1/d^2. Its spread is far
  larger than that mean: one draw's share is a product of three O(1/sqrt d) factors, so its
  standard deviation is of order d^(-3/2) / |cos(x_q B, x_k)|: for B = I about sqrt(d) / |cos(x_q, x_k)|
  times the mean (at least sqrt(d) = 8 at d = 64; a band of +-2 sd spans tens of times the mean).
  A share of 1/d^2 is therefore no chance *level* to beat: chance alone produces shares far
  above and below it.
"""
from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from mechinterp_edu.lessons.ioi_scores import reference as ref

DRAWS = 200


def _directions(shape: tuple[int, ...], d: int, g: torch.Generator, dtype, device) -> Tensor:
    x = torch.randn(*shape, d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return x / x.norm(dim=-1, keepdim=True)


def _summary(samples: Tensor) -> dict[str, float]:
    s = samples.double().cpu()
    return {"mean": float(s.mean()), "lo": float(s.quantile(0.025)), "hi": float(s.quantile(0.975)),
            "sd": float(s.std())}


def cos2_null(vectors: Float[Tensor, "batch d"], k: int = 1, draws: int = DRAWS,
              seed: int = 0) -> dict[str, float]:
    """Null of ``fraction_explained(vectors, directions)`` with k uniform directions per prompt.

    Returns mean / lo / hi / sd of the batch statistic over ``draws`` draws, the closed form k/d
    (``closed``), and the per-vector spread (``sd_one``: the sd of a single vector's cos^2)."""
    g = torch.Generator().manual_seed(seed)
    b, d = vectors.shape
    dirs = _directions((draws, b, k), d, g, vectors.dtype, vectors.device)
    flat = vectors.expand(draws, b, d).reshape(draws * b, d)
    par, _ = ref.project(flat, dirs.reshape(draws * b, k, d))
    one = (par.pow(2).sum(-1) / flat.pow(2).sum(-1)).view(draws, b)
    out = _summary(one.mean(1))
    out.update(closed=k / d, sd_one=float(one.double().std()), draws=draws)
    return out


def four_term_null(inp: ref.HeadScoreInputs, draws: int = DRAWS, seed: int = 0) -> dict[str, object]:
    """Null of the four terms' shares of the net (target - baseline) score: u and the key-side
    directions (at the target and at the baseline) replaced by uniform directions.

    Returns, per term name, the summary of its share over draws; ``samples`` [draws, 4]."""
    g = torch.Generator().manual_seed(seed)
    b, d = inp.u.shape
    dt, dev = inp.u.dtype, inp.u.device
    x_q = inp.q_components.sum(1)
    x_k, x_b = inp.k_components.sum(1), inp.base_components.sum(1)
    u = _directions((draws, b), d, g, dt, dev).reshape(-1, d)
    m = _directions((draws, b), d, g, dt, dev).reshape(-1, d)
    mb = _directions((draws, b), d, g, dt, dev).reshape(-1, d)

    def rep(t):
        return t.repeat(draws, *([1] * (t.ndim - 1)))

    args = (inp.W_Q, inp.b_Q, inp.W_K, inp.b_K)
    t = ref.four_terms(rep(x_q), rep(inp.scale_q), u, rep(x_k), rep(inp.scale_k), m, *args).view(draws, b, 4)
    tb = ref.four_terms(rep(x_q), rep(inp.scale_q), u, rep(x_b), rep(inp.scale_base), mb, *args).view(draws, b, 4)
    diff = t - tb
    shares = diff.mean(1) / diff.sum(-1).mean(1)[:, None]         # ratio of means, per draw
    out: dict[str, object] = {name: _summary(shares[:, i]) for i, name in enumerate(ref.TERM_NAMES)}
    out["samples"] = shares
    return out


def bilinear_share_draws(x_q: Float[Tensor, "d"], x_k: Float[Tensor, "d"], draws: int, seed: int = 0,
                         B: Optional[Tensor] = None) -> Float[Tensor, "draws"]:
    """One draw's share of x_q B x_k^T carried by (x_q∥u) B (x_k∥m)^T, for ``draws`` independent
    pairs of uniform directions (u, m): the statistic whose mean the notes put at 1/d^2."""
    g = torch.Generator().manual_seed(seed)
    d = x_q.shape[-1]
    B = torch.eye(d, dtype=x_q.dtype) if B is None else B
    u = _directions((draws,), d, g, x_q.dtype, x_q.device)
    m = _directions((draws,), d, g, x_q.dtype, x_q.device)
    term = (u @ x_q) * (m @ x_k) * torch.einsum("nd,de,ne->n", u, B, m)
    return term / (x_q @ B @ x_k)

