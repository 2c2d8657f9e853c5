"""Compact proofs, part 2: the cubic proof, O(d_vocab^3 2^n_ctx n_ctx).

What it certifies. Group the inputs by (m, q, c): m the largest token, q the query (last)
token, c the largest token below m (c = q is allowed; "all tokens are m" is its own group). For
each group it proves a lower bound on

    margin(x) = min_{o != m} (logit_m(x) - logit_o(x))

that holds for *every* input in the group; when the bound is positive (above a float64 safety
margin) every input of the group is certified: the max token's logit is strictly the largest.

Why it is sound. Write G for the positions holding m and B for the others (tokens <= c). The
attention weights p sum to 1, so the direct path can be folded into every position's term:

    margin(x) = min_o sum_i p_i (EU[q, m] - EU[q, o] + v_i(o)),
    v_i(o)    = EVOU[x_i, m] - EVOU[x_i, o] + PVOU[i, m] - PVOU[i, o],

with p = softmax of the scores EQKE[q, x_i] + EQKP[q, i]. Each term is bounded below by its
minimum over o (a sum of minima is at most the minimum of the sum): on G exactly, for this q and
position (``A[q, m, i]``); on B by the direct path's minimum plus ``Vb(m, c, i)``, the worst token
t <= c (*pessimal ablation* of the positions we do not look at); the query position by its exact
value. So the sum is >= w g + (1 - w) b with w the attention on G, g the worst G term and b the
worst B term. Softmax weight on G only falls when a B score rises, so w >= w_lo, computed with
every B score at its largest possible value (max_{t <= c} EQKE[q, t]). A linear function of w on
[w_lo, 1] is smallest at an end: the sum is >= min(g, w_lo g + (1 - w_lo) b). Which positions
hold m is not known, so the proof takes the worst over every possible set G.
"""
from __future__ import annotations

import itertools

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


def value_bounds(c, flops: Flops) -> tuple[Tensor, Tensor]:
    """D[t, m, i] = min_{o != m} v_i(o) for token t at position i (t [V], m [V], i [n]), and its
    running minimum over t <= c: Vb[c, m, i] (the pessimal token for each c). O(V^2 n)."""
    V, n = c.d_vocab, c.n_ctx
    values = flops.ew(c.EVOU[:, None, :] + c.PVOU[None, :, :])          # [t, i, o]
    D = top2_excluding(values.reshape(V * n, V), flops).reshape(V, n, V).permute(0, 2, 1)  # [t, m, i]
    Vb = flops.reduce(D, torch.cummin(D, dim=0).values)                   # [c, m, i]
    return D, Vb


def _logsumexp(x: Tensor, dim: int, flops: Flops) -> Tensor:
    return flops.reduce(x, torch.logsumexp(x, dim=dim)) if x.shape[dim] else torch.full(
        x.shape[:dim] + x.shape[dim + 1:], float("-inf"), dtype=x.dtype, device=x.device)


def _cubic(w: Weights, flops: Flops) -> tuple[int, dict]:
    c = tables(w, flops)
    worst_below, worst_max, all_m = cubic_worst_cases(c, flops)
    return _count_certified(c, worst_below, worst_max, all_m)


def cubic_worst_cases(c, flops: Flops) -> tuple[Tensor, Tensor, Tensor]:
    """The cubic proof's lower bounds on the margin of every group: worst_below [q, m, c] (q < m,
    q <= c < m), worst_max [m, c] (q = m, c < m) and all_max [m] (every token m)."""
    V, n = c.d_vocab, c.n_ctx
    dev = c.EQKE.device
    free = list(range(n - 1))
    ar = torch.arange(V, device=dev)
    EUex = top2_excluding(c.EU, flops)                                    # [q, m]
    D, Vb = value_bounds(c, flops)
    top_key = flops.reduce(c.EQKE, torch.cummax(c.EQKE, dim=1).values)    # [q, c]: max_{t<=c} EQKE[q,t]
    s_query = flops.ew(c.EQKE[ar, ar] + c.EQKP[:, n - 1])                 # [q]
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=dev)
    # The direct path folded into each position's value (the weights sum to 1):
    # A[q, m, i] = min_o (EU[q,m]-EU[q,o] + EVOU[m,m]-EVOU[m,o] + PVOU[i,m]-PVOU[i,o]).
    A = torch.stack([torch.stack([top2_excluding(flops.ew(c.EU[q][None, :] + c.EVOU + c.PVOU[i][None, :], 2),
                                                 flops)[ar, ar] for i in range(n)], dim=-1)
                     for q in range(V)])                                                   # [q, m, i]
    Aq = top2_excluding(flops.ew(c.EU + c.EVOU + c.PVOU[n - 1][None, :], 2), flops)       # [q, m]: the query

    # q < m: G = the free positions holding m (non-empty), B = the other free ones + the query.
    worst_below = torch.full((V, V, V), float("inf"), dtype=torch.float64, device=dev)   # [q, m, c]
    # q == m: G = the query + some free positions, B = the rest (non-empty).
    worst_max = torch.full((V, V), float("inf"), dtype=torch.float64, device=dev)        # [m, c]
    for size in range(0, n):
        for G in itertools.combinations(free, size):
            B = [j for j in free if j not in G]
            lse_B = flops.ew(top_key + _logsumexp(c.EQKP[:, B], 1, flops)[:, None])           # [q, c]
            b_free = (flops.reduce(Vb[:, :, B], Vb[:, :, B].amin(-1)).T if B
                      else inf.expand(V, V))                                                 # [m, c]
            if G:                                                     # the case q < m
                lse_G = flops.ew(c.EQKE + _logsumexp(c.EQKP[:, list(G)], 1, flops)[:, None])  # [q, m]
                lse_Bq = flops.ew(torch.logaddexp(lse_B, s_query[:, None]))                  # [q, c]
                w_lo = flops.ew(torch.sigmoid(flops.ew(lse_G[:, :, None] - lse_Bq[:, None, :])), 2)
                g = flops.reduce(A[:, :, list(G)], A[:, :, list(G)].amin(-1))[:, :, None]    # [q, m, 1]
                b = flops.ew(torch.minimum(flops.ew(EUex[:, :, None] + b_free[None, :, :]), Aq[:, :, None]))
                bound = _mix(g, b, w_lo, flops)                                               # [q, m, c]
                if not B:                                             # only when the query is c
                    bound = torch.where(ar[:, None, None] == ar[None, None, :], bound, inf)
                worst_below = flops.ew(torch.minimum(worst_below, bound))
            if B:                                                     # the case q == m
                Gq = list(G) + [n - 1]
                lse_G = flops.ew(c.EQKE[ar, ar] + _logsumexp(c.EQKP[:, Gq], 1, flops))       # [m]
                lse_Bm = lse_B                                                               # [m (as q), c]
                w_lo = flops.ew(torch.sigmoid(flops.ew(lse_G[:, None] - lse_Bm)), 2)
                g = flops.reduce(A[ar, ar][:, Gq], A[ar, ar][:, Gq].amin(-1))                  # [m]
                bound = _mix(g[:, None], flops.ew(EUex[ar, ar][:, None] + b_free), w_lo, flops)
                worst_max = flops.ew(torch.minimum(worst_max, bound))
    all_m = flops.reduce(A[ar, ar], A[ar, ar].amin(-1))                                      # [m]
    return worst_below, worst_max, all_m


def _count_certified(c, worst_below: Tensor, worst_max: Tensor, all_m: Tensor) -> tuple[int, dict]:
    V, n = c.d_vocab, c.n_ctx
    eps = safety_margin(c)
    ok_below = (worst_below > eps).cpu()
    ok_max = (worst_max > eps).cpu()
    ok_all = (all_m > eps).cpu()
    n_certified = int(ok_all.sum())
    certified_groups = int(ok_all.sum())
    for m in range(V):
        for cc in range(m):
            n_certified += count_inputs(V, n, m, cc, "max") * int(ok_max[m, cc])
            certified_groups += int(ok_max[m, cc])
            if n > 1:
                below = ok_below[:cc, m, cc]                          # queries q < c
                n_certified += count_inputs(V, n, m, cc, "below") * int(below.sum())
                n_certified += count_inputs(V, n, m, cc, "c") * int(ok_below[cc, m, cc])
                certified_groups += int(below.sum()) + int(ok_below[cc, m, cc])
    return n_certified, {"certified_groups": certified_groups, "eps": eps,
                         "worst_below": worst_below.cpu(), "worst_max": worst_max.cpu(),
                         "all_max": all_m.cpu()}


def _mix(g: Tensor, b: Tensor, w_lo: Tensor, flops: Flops) -> Tensor:
    """min(g, w_lo g + (1 - w_lo) b): the worst average of a G term and a B term when the G weight
    is at least w_lo (broadcast)."""
    mixed = flops.ew(b + flops.ew(w_lo * flops.ew(g - b)))
    return flops.ew(torch.minimum(g.expand_as(mixed), mixed))


def cubic_group_margins(c) -> Tensor:
    """The cubic bound as one table [m, q, c] (the lesson's exercise): a lower bound on the margin
    of every input with max m, query q and largest token below m equal to c; c = m stands for
    "every token is m". Entries of groups that hold no input are +inf."""
    V = c.d_vocab
    worst_below, worst_max, all_m = cubic_worst_cases(c.to(torch.float64), Flops())
    out = worst_below.permute(1, 0, 2).clone()                             # [m, q, c]
    ar = torch.arange(V, device=out.device)
    m, q, cc = torch.meshgrid(ar, ar, ar, indexing="ij")
    out[~((q < m) & (q <= cc) & (cc < m))] = float("inf")
    out[ar, ar] = torch.where(ar[None, :] < ar[:, None], worst_max, torch.tensor(float("inf"), dtype=out.dtype))
    out[ar, ar, ar] = all_m
    if c.n_ctx == 2:                      # one free position: with q < m it holds m, so c = q
        out[(q < m) & (cc > q)] = float("inf")
    return out


def cubic_proof(w: Weights) -> ProofResult:
    """The cubic proof on weights ``w`` (see the module docstring)."""
    return _timed(_cubic, "cubic", "cubic", w)


def uncertified_by_gap(result: ProofResult, V: int, n: int) -> list[int]:
    """How many inputs the cubic proof leaves uncertified, by m - c (index 0: every token is m)."""
    d = result.detail
    eps = d["eps"]
    out = [0] * V
    out[0] = int((d["all_max"] <= eps).sum())
    for m in range(V):
        for c in range(m):
            left = count_inputs(V, n, m, c, "max") * int(d["worst_max"][m, c] <= eps)
            if n > 1:
                left += count_inputs(V, n, m, c, "below") * int((d["worst_below"][:c, m, c] <= eps).sum())
                left += count_inputs(V, n, m, c, "c") * int(d["worst_below"][c, m, c] <= eps)
            out[m - c] += left
    return out
