"""Lesson 4 live charts for the compact proofs: the frontier (bound against FLOPs), where the cubic
proof succeeds, the rank-one score-gap floor against the truth, and the false proof steps.

Controls used: ``model`` (max_of_4 | untrained). Charts take their width from the page
(``width="container"``) or stay under 600 px, so nothing runs off-screen at 1440 px.
"""
from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.lessons.max_of_k.paper_figures import PAPER_FIGURES, PAPER_SOURCE
from mechinterp_edu.live.registry import LiveChart, chart_decorator

CHARTS: list[LiveChart] = []          # lesson 4's charts.py appends these to its CHARTS
live_chart = chart_decorator(CHARTS)

def _results(which: str):
    from mechinterp_edu.lessons.max_of_k.facts import proof_results
    return proof_results(which)


def _which(ctx: dict[str, Any]) -> str:
    return "untrained" if str(ctx.get("model") or "max_of_4") == "untrained" else "trained"


def frontier_frame() -> pd.DataFrame:
    """Every strategy on both models, plus the paper's figures where it reports them."""
    rows = []
    for which, label in (("trained", "max_of_4 (shipped)"), ("untrained", "untrained")):
        for r in _results(which):
            rows.append({"model": label, "strategy": r.name, "kind": r.kind, "bound": r.bound,
                         "FLOPs": float(r.flops), "source": "this course (measured)"})
    for fig in PAPER_FIGURES:
        rows.append({"model": "Gross et al. 2024 (max-of-4)", "strategy": fig["strategy"], "kind": fig["kind"],
                     "bound": fig["bound"], "FLOPs": float(fig["flops"]), "source": PAPER_SOURCE})
    return pd.DataFrame(rows)


@live_chart("max_of_k.proofs_frontier", "The frontier: proof length against bound",
            "Each strategy's accuracy bound against the floating-point operations it performed (log scale), "
            "on the shipped and the untrained model.")
def proofs_frontier(ctx: dict[str, Any]):
    frame = frontier_frame()
    base = alt.Chart(frame).encode(
        x=alt.X("FLOPs:Q", scale=alt.Scale(type="log"), title="FLOPs performed (log scale)"),
        y=alt.Y("bound:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy lower bound"),
        color=alt.Color("strategy:N", title="strategy"),
        shape=alt.Shape("model:N", title="model"),
        tooltip=["model", "strategy", "kind", alt.Tooltip("bound:Q", format=".6f"),
                 alt.Tooltip("FLOPs:Q", format=",.0f"), "source"])
    chart = (base.mark_point(size=120, filled=True) + base.mark_line(opacity=0.3).encode(detail="model:N")) \
        .properties(width="container", height=300, title="accuracy bound against proof cost")
    shown = frame[["model", "strategy", "kind", "bound", "FLOPs"]].copy()
    shown["FLOPs"] = shown["FLOPs"].map(lambda v: f"{v:,.0f}")
    note = (f"The paper's figures ({PAPER_SOURCE}) are drawn beside ours." if PAPER_FIGURES else
            "The paper's own max-of-4 figures are not drawn: none could be read from a citable stored source "
            "(see paper_figures.py), so none are shown rather than numbers from memory.")
    return [chart, shown, note]


@live_chart("max_of_k.cubic_map", "Where the cubic proof succeeds",
            "For each max token m and largest other token c: the smallest margin bound over the queries. "
            "Positive (blue) groups are certified for every query.")
def cubic_map(ctx: dict[str, Any]):
    r = _results(_which(ctx))[1]
    below, at_max = r.detail["worst_below"], r.detail["worst_max"]        # [q, m, c], [m, c]
    V = at_max.shape[0]
    worst = torch.minimum(below.amin(0), at_max)                            # [m, c]
    worst = torch.where(torch.ones(V, V, dtype=torch.bool).tril(-1), worst, torch.tensor(float("nan")))
    m, c = torch.meshgrid(torch.arange(V), torch.arange(V), indexing="ij")
    frame = pd.DataFrame({"max token m": m.reshape(-1), "largest other token c": c.reshape(-1),
                          "worst margin bound": worst.reshape(-1).clamp(-20, 20)}).dropna()
    heat = (alt.Chart(frame).mark_rect()
            .encode(x=alt.X("largest other token c:O", axis=alt.Axis(values=list(range(0, V, 8)))),
                    y=alt.Y("max token m:O", sort="descending", axis=alt.Axis(values=list(range(0, V, 8)))),
                    color=alt.Color("worst margin bound:Q", scale=alt.Scale(scheme="redblue", domainMid=0)),
                    tooltip=["max token m", "largest other token c",
                             alt.Tooltip("worst margin bound:Q", format=".3f")])
            .properties(width=360, height=360, title="cubic proof: worst margin bound over queries"))
    gap = (m - c)[torch.ones(V, V, dtype=torch.bool).tril(-1)]
    ok = (worst > 0)[torch.ones(V, V, dtype=torch.bool).tril(-1)]
    by_gap = pd.DataFrame({"gap m - c": gap.numpy(), "certified for every query": ok.numpy()}) \
        .groupby("gap m - c").mean().reset_index()
    curve = (alt.Chart(by_gap).mark_line(point=True)
             .encode(x=alt.X("gap m - c:Q"), y=alt.Y("certified for every query:Q", scale=alt.Scale(domain=[0, 1])))
             .properties(width=360, height=200, title="share of (m, c) groups certified, by gap"))
    return [{"bound": r.bound, "inputs certified": r.n_certified, "groups certified": r.detail["certified_groups"]},
            heat, curve]


@live_chart("max_of_k.rank_one_gap", "The rank-one floor on the score gap",
            "For each max token m (with c = m - 1): the true smallest score gap over queries, and the floors the "
            "subcubic proofs derive from EQKE ~ sigma1 u v^T with the residual bounded by max |R| or by sigma2.")
def rank_one_gap(ctx: dict[str, Any]):
    from mechinterp_edu.lessons.max_of_k.proof_exercises import rank_one_residual_bound
    from mechinterp_edu.lessons.max_of_k.reference import eqke

    w = _weights(_which(ctx))
    E = eqke(w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    V = E.shape[0]
    S = torch.linalg.svdvals(E)
    floor = rank_one_residual_bound(E)
    rho = _rho(E)
    rows = []
    for mm in range(1, V):
        c = mm - 1
        truth = float((E[:, mm:mm + 1] - E[:, : c + 1]).min())
        rows += [{"max token m": mm, "series": "true smallest gap", "score gap": truth},
                 {"max token m": mm, "series": "floor, rho = max|R|", "score gap": float(floor[mm, c])},
                 {"max token m": mm, "series": "floor, rho = sigma2",
                  "score gap": float(floor[mm, c]) - 2 * (float(S[1]) - rho)}]
    chart = (alt.Chart(pd.DataFrame(rows)).mark_line(point=True)
             .encode(x="max token m:Q", y=alt.Y("score gap:Q"), color="series:N",
                     tooltip=["max token m", "series", alt.Tooltip("score gap:Q", format=".3f")])
             .properties(width="container", height=260,
                         title="score gap between m and the best key below it (c = m - 1)"))
    return [{"sigma1": float(S[0]), "sigma2": float(S[1]), "max |R|": rho}, chart]


def _rho(E: torch.Tensor) -> float:
    U, S, Vh = torch.linalg.svd(E)
    return float((E - S[0] * torch.outer(U[:, 0], Vh[0])).abs().max())


def _weights(which: str):
    from mechinterp_edu.lessons.max_of_k.facts import proof_weights
    return proof_weights(which)


@live_chart("max_of_k.proof_false_steps", "Tempting wrong steps, checked",
            "The false variant of each proof step, with sympy's verdict (each one fails).")
def proof_false_steps(ctx: dict[str, Any]):
    from mechinterp_edu.derivations.framework import check
    from mechinterp_edu.lessons.max_of_k.proof_steps import PROOFS_FALSE
    return check(PROOFS_FALSE)
