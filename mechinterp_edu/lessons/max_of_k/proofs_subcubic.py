"""Compact proofs, part 3: subcubic proofs, O(d_vocab^2 (d_model + 2^n_ctx n_ctx)).

The cubic proof looks at every (max m, query q, largest non-max c). These proofs drop the query:
they group the inputs by (m, c) only, and so need a bound on the score gap

    Delta(q, m, t) = EQKE[q, m] - EQKE[q, t]          (t <= c < m)

that holds for *every* query q without looking at each one. The interpretation supplies it:
EQKE is nearly rank one, EQKE = sigma1 u v^T + R, with v the size direction over keys and u the
query direction. Then Delta >= sigma1 u_q (v_m - v_t) - 2 rho with rho >= max |R|, and
min_q u_q x is sigma1 u_min x (x >= 0) or sigma1 u_max x (x < 0): a concave function of
x = v_m - v_t, so over t <= c its minimum sits at the largest or the smallest v_t.

``rho`` comes either from the residual itself (max |R|, forming EQKE: O(d_vocab^2 d_model)) or
from the second singular value (|R[q, k]| = |e_q^T R e_k| <= sigma2), which the SVD of the
factors E_q W_Q and E_bar W_K gives without forming EQKE at all.

Positions: mean + diff. For a position i holding m and a position j holding a smaller token,
s_i - s_j >= Delta + min_q (EQKP[q, i] - EQKP[q, j]). The values, the direct path and the
pessimal ablation are those of the cubic proof, with the worst case over the queries that the
group allows (q <= c or q = m). The last strategy uses no structure: it bounds the scores by the
norms of the query and key vectors alone (Cauchy-Schwarz), and certifies almost nothing.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from mechinterp_edu.lessons.max_of_k.proofs import (
    Flops,
    ProofResult,
    Weights,
    _timed,
    count_inputs,
    safety_margin,
    tables,
    top2_excluding,
)
from mechinterp_edu.lessons.max_of_k.proofs_cubic import value_bounds

# Standard operation counts of the LAPACK algorithms used on the d_model-sized factors.
def _qr_flops(rows: int, cols: int) -> int:
    return int(2 * rows * cols ** 2 - 2 * cols ** 3 / 3)


def _svd_flops(k: int) -> int:
    return 22 * k ** 3


def factor_svd(w: Weights, flops: Flops) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(A, Bk, S, u, v): EQKE = A Bk^T with A = E_q W_Q / sqrt(d_head) and Bk = E_bar W_K, its
    singular values S and first singular vectors u (queries) and v (keys), signed so that v
    correlates positively with the token index. Cost O(d_vocab d_model^2): EQKE is never formed."""
    d_head = w["W_Q"].shape[-1]
    P_avg = flops.reduce(w["W_pos"], w["W_pos"].mean(0))
    A = flops.ew(flops.mm(flops.ew(w["W_E"] + w["W_pos"][-1]), w["W_Q"]) / math.sqrt(d_head))
    Bk = flops.mm(flops.ew(w["W_E"] + P_avg), w["W_K"])
    Qa, Ra = torch.linalg.qr(A)
    Qb, Rb = torch.linalg.qr(Bk)
    flops.count += _qr_flops(*A.shape) + _qr_flops(*Bk.shape)
    U, S, Vh = torch.linalg.svd(flops.mm(Ra, Rb.T))
    flops.count += _svd_flops(Ra.shape[0])
    u, v = flops.mm(Qa, U[:, :1])[:, 0], flops.mm(Qb, Vh[:1].T)[:, 0]
    index = torch.arange(v.shape[0], dtype=v.dtype, device=v.device)
    if float(torch.dot(v, index - index.mean())) < 0:
        u, v = -u, -v
    flops.count += 2 * v.numel()
    return A, Bk, S, u, v


def _gap_rank_one(S: Tensor, u: Tensor, v: Tensor, rho: float, flops: Flops) -> Tensor:
    """Delta_lo[m, c] <= EQKE[q, m] - EQKE[q, t] for every query q and every t <= c."""
    vmax = flops.reduce(v, torch.cummax(v, 0).values)                  # [c]
    vmin = flops.reduce(v, torch.cummin(v, 0).values)
    u_lo, u_hi = float(u.min()), float(u.max())
    flops.count += 2 * u.numel()

    def h(x: Tensor) -> Tensor:                                       # min_q sigma1 u_q x
        return flops.ew(float(S[0]) * torch.where(x >= 0, u_lo * x, u_hi * x), 3)

    x_hi = flops.ew(v[:, None] - vmin[None, :])                        # [m, c]
    x_lo = flops.ew(v[:, None] - vmax[None, :])
    return flops.ew(torch.minimum(h(x_lo), h(x_hi)) - 2 * rho, 2)


def _gap_norms(A: Tensor, Bk: Tensor, flops: Flops) -> Tensor:
    """No structure: |EQKE[q, k]| <= |a_q| |b_k| (Cauchy-Schwarz), so Delta >= -|a|_max (|b_m| + |b_t|)."""
    a = float(flops.reduce(A, A.norm(dim=1)).max())
    b = flops.reduce(Bk, Bk.norm(dim=1))
    b_max = torch.cummax(b, 0).values
    return flops.ew(-a * (b[:, None] + b_max[None, :]), 2)


def _grouped_by_max_and_c(c, gap: Tensor, flops: Flops) -> tuple[int, dict]:
    """Certify the (m, c) groups given a score-gap bound gap[m, c] valid for every query."""
    V, n = c.d_vocab, c.n_ctx
    dev = c.EQKE.device
    eps = safety_margin(c)
    ar = torch.arange(V, device=dev)
    EUex = top2_excluding(c.EU, flops)                                  # [q, m]
    EU_lo = flops.reduce(EUex, torch.cummin(EUex, 0).values).T         # [m, c]: worst q <= c
    EU_lo = flops.ew(torch.minimum(EU_lo, EUex[ar, ar][:, None]))       # or q = m
    D, Vb = value_bounds(c, flops)
    Vg = D[ar, ar]                                                      # [m, i]
    P = c.EQKP
    delta = flops.reduce(P, (P[:, :, None] - P[:, None, :]).amin(0))    # [i, j]: min_q EQKP[q,i]-EQKP[q,j]
    flops.count += P.numel() * n
    worst = torch.full((V, V), float("inf"), dtype=torch.float64, device=dev)
    positions = list(range(n))
    for size in range(1, n):
        for G in itertools.combinations(positions, size):
            B = [j for j in positions if j not in G]
            # log of min(min_i sum_j e^-delta[i,j], sum_j max_i e^-delta[i,j] / |G|), in log space:
            # exp(-delta) under- or overflows when positions differ by hundreds in score
            neg = -delta[list(G)][:, B]                                 # [|G|, |B|]
            log_ratio = min(float(torch.logsumexp(neg, 1).min()),
                            float(torch.logsumexp(neg.amax(0), 0)) - math.log(len(G)))
            flops.count += 3 * neg.numel() + len(G)
            w_lo = flops.ew(torch.sigmoid(flops.ew(gap - log_ratio)), 2)   # [m, c]
            g = Vg[:, list(G)].amin(-1)[:, None]                          # [m, 1]
            b = Vb[:, :, B].amin(-1).T                                    # [m, c]
            flops.count += Vg[:, list(G)].numel() + Vb[:, :, B].numel()
            mixed = flops.ew(b + flops.ew(w_lo * flops.ew(g - b)))
            worst = flops.ew(torch.minimum(worst, flops.ew(EU_lo + torch.minimum(g.expand_as(mixed), mixed))))
    all_m = flops.ew(EUex[ar, ar] + flops.reduce(Vg, Vg.amin(-1)))
    ok, ok_all = (worst > eps).cpu(), (all_m > eps).cpu()
    n_certified = int(ok_all.sum()) + sum(count_inputs(V, n, m, cc, "any") for m in range(V)
                                          for cc in range(m) if ok[m, cc])
    groups = int(ok_all.sum()) + int(torch.tril(ok, -1).sum())
    return n_certified, {"certified_groups": groups, "worst": worst.cpu(), "all_max": all_m.cpu(), "eps": eps}


def _rank_one_residual(w: Weights, flops: Flops) -> tuple[int, dict]:
    A, Bk, S, u, v = factor_svd(w, flops)
    c = tables(w, flops, factors=(A, Bk))
    R = flops.ew(c.EQKE - float(S[0]) * torch.outer(u, v), 2)
    rho = float(flops.reduce(R, R.abs().max()))
    n_certified, detail = _grouped_by_max_and_c(c, _gap_rank_one(S, u, v, rho, flops), flops)
    return n_certified, dict(detail, rho=rho, sigma1=float(S[0]), sigma2=float(S[1]))


def _rank_one_sigma2(w: Weights, flops: Flops) -> tuple[int, dict]:
    A, Bk, S, u, v = factor_svd(w, flops)
    rho = float(S[1]) if S.numel() > 1 else 0.0
    c = tables(w, flops, factors=(A, Bk), eqke=False)
    n_certified, detail = _grouped_by_max_and_c(c, _gap_rank_one(S, u, v, rho, flops), flops)
    return n_certified, dict(detail, rho=rho, sigma1=float(S[0]), sigma2=rho)


def _no_structure(w: Weights, flops: Flops) -> tuple[int, dict]:
    d_head = w["W_Q"].shape[-1]
    A = flops.ew(flops.mm(flops.ew(w["W_E"] + w["W_pos"][-1]), w["W_Q"]) / math.sqrt(d_head))
    Bk = flops.mm(flops.ew(w["W_E"] + w["W_pos"].mean(0)), w["W_K"])
    c = tables(w, flops, factors=(A, Bk), eqke=False)
    return _grouped_by_max_and_c(c, _gap_norms(A, Bk, flops), flops)


def rank_one_residual_proof(w: Weights) -> ProofResult:
    return _timed(_rank_one_residual, "subcubic: rank one + max |residual|", "subcubic", w)


def rank_one_sigma2_proof(w: Weights) -> ProofResult:
    return _timed(_rank_one_sigma2, "subcubic: rank one + sigma2", "subcubic", w)


def no_structure_proof(w: Weights) -> ProofResult:
    return _timed(_no_structure, "subcubic: no structure (norms)", "subcubic", w)


SUBCUBIC = (rank_one_residual_proof, rank_one_sigma2_proof, no_structure_proof)
