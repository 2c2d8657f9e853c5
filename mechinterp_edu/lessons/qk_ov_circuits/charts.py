"""Lesson 2 live charts: full QK / OV circuits with token labels, top token pairs, the positional
QK circuit, FactoredMatrix spectra and the eigenvalue copying score of every head.

Controls: ``model``, ``head``, ``top_k``, ``prompt`` (see the lesson's front matter). Model
loading and prompt parsing are shared with lesson 1 (:mod:`mechinterp_edu.live.toy_setup`).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.charts import bar, heatmap
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.live.toy_setup import Setup, cached_weights, model_scores_and_logits, with_setup
from mechinterp_edu.lessons.qk_ov_circuits import reference as ref

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)


@functools.lru_cache(maxsize=8)
def _circuits(name: str) -> dict[str, torch.Tensor]:
    """Every head's circuits for a model actually used (``Setup.name``: fallback already resolved)."""
    w, _ = cached_weights(name)
    return {
        "qk": ref.full_qk_circuit(w["W_E"], w["W_Q"], w["W_K"]),
        "ov": ref.full_ov_circuit(w["W_E"], w["W_V"], w["W_O"], w["W_U"]),
        "pos": ref.positional_qk(w["W_pos"], w["W_Q"], w["W_K"]),
        "copy": ref.copying_score(w["W_E"], w["W_V"], w["W_O"], w["W_U"]),
        "eig": ref.ov_eigenvalues(w["W_E"], w["W_V"], w["W_O"], w["W_U"]),
    }


def _square(s: Setup, n: int) -> dict[str, int]:
    side = max(240, min(640, 11 * n + 40))
    return {"width": side, "height": side}


def _top_k(ctx: dict[str, Any]) -> int:
    try:
        return max(1, min(100, int(ctx.get("top_k", 10) or 10)))
    except (TypeError, ValueError):
        return 10


@live_chart("qk_ov_circuits.qk_heatmap", "Full QK circuit of one head",
            "W_E W_Q^h (W_E W_K^h)^T, unscaled: row = query (destination) token, column = key (source) token.")
@with_setup
def qk_heatmap(s: Setup):
    qk = _circuits(s.name)["qk"][s.head]
    return heatmap(qk, title=f"full QK circuit, head {s.head}", x_labels=s.vocab_labels, y_labels=s.vocab_labels,
                   x_title="key (source) token", y_title="query (destination) token", **_square(s, qk.shape[0]))


@live_chart("qk_ov_circuits.ov_heatmap", "Full OV circuit of one head",
            "W_E W_V^h W_O^h W_U: row = source token attended to, column = output logit.")
@with_setup
def ov_heatmap(s: Setup):
    ov = _circuits(s.name)["ov"][s.head]
    return heatmap(ov, title=f"full OV circuit, head {s.head}", x_labels=s.vocab_labels, y_labels=s.vocab_labels,
                   x_title="output token (logit)", y_title="source token (attended to)", **_square(s, ov.shape[0]))


@live_chart("qk_ov_circuits.positional_qk", "Positional QK circuit of one head",
            "W_pos W_Q^h (W_pos W_K^h)^T, unscaled. Entries above the diagonal are never used by a "
            "causal model and are left blank.")
@with_setup
def positional_qk_chart(s: Setup):
    pos = _circuits(s.name)["pos"][s.head].clone()
    n = pos.shape[0]
    pos = pos.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("nan"))
    return heatmap(pos, title=f"positional QK circuit, head {s.head}", x_title="key position",
                   y_title="query position", **_square(s, n))


def _pairs_frame(matrix: torch.Tensor, k: int, labels: list[str], row: str, col: str, largest: bool) -> pd.DataFrame:
    rows = ref.top_token_pairs(matrix, k, largest=largest)
    return pd.DataFrame([{row: labels[i], col: labels[j], "value": v} for i, j, v in rows])


@live_chart("qk_ov_circuits.top_pairs", "Top token pairs of one head",
            "The k largest entries of the full QK circuit (which query attends to which key) and of the "
            "full OV circuit (attending to which source raises which output).")
def top_pairs(ctx: dict[str, Any]):
    k = _top_k(ctx)

    @with_setup
    def inner(s: Setup):
        c = _circuits(s.name)
        return [f"**QK, head {s.head}:** largest scores (query attends to key)",
                _pairs_frame(c["qk"][s.head], k, s.vocab_labels, "query token", "key token", True),
                f"**OV, head {s.head}:** largest logit increases (attending to source raises output)",
                _pairs_frame(c["ov"][s.head], k, s.vocab_labels, "source token", "output token", True),
                f"**OV, head {s.head}:** largest logit decreases",
                _pairs_frame(c["ov"][s.head], k, s.vocab_labels, "source token", "output token", False)]
    return inner(ctx)


@live_chart("qk_ov_circuits.copying_scores", "Copying score of every head",
            "Re(sum of eigenvalues) / sum of |eigenvalues| of each head's full OV circuit.")
@with_setup
def copying_scores(s: Setup):
    c = _circuits(s.name)
    eig = c["eig"]
    scores = c["copy"]
    table = pd.DataFrame({
        "head": list(range(len(scores))),
        "copying score": scores.tolist(),
        "trace (= sum of eigenvalues)": c["ov"].diagonal(dim1=-2, dim2=-1).sum(-1).tolist(),
        "sum |eigenvalue|": eig.abs().sum(-1).tolist(),
        "complex eigenvalues": (eig.imag.abs() > 1e-9 * eig.abs().amax(-1, keepdim=True)).sum(-1).tolist(),
    })
    return [bar(scores, [f"head {h}" for h in range(len(scores))], title="copying score per head",
                y_title="copying score"), table]


@live_chart("qk_ov_circuits.eigenvalues", "Eigenvalues of one head's OV circuit",
            "The nonzero spectrum (FactoredMatrix: d_head eigenvalues) in the complex plane.")
@with_setup
def eigenvalues(s: Setup):
    eig = _circuits(s.name)["eig"][s.head]
    frame = pd.DataFrame({"real part": eig.real.tolist(), "imaginary part": eig.imag.tolist(),
                          "modulus": eig.abs().tolist()})
    m = float(eig.abs().max()) or 1.0
    scale = alt.Scale(domain=[-1.1 * m, 1.1 * m])
    chart = (alt.Chart(frame, title=f"OV eigenvalues, head {s.head}")
             .mark_circle(size=80)
             .encode(x=alt.X("real part:Q", scale=scale), y=alt.Y("imaginary part:Q", scale=scale),
                     tooltip=[alt.Tooltip(c, format=".4g") for c in frame.columns])
             .properties(width=320, height=320))
    return [chart, {"copying score": float(_circuits(s.name)["copy"][s.head])}]


@live_chart("qk_ov_circuits.factored", "Low rank: singular values through FactoredMatrix",
            "Singular values of the full QK and OV circuits of one head; at most d_head are nonzero.")
@with_setup
def factored(s: Setup):
    w = s.weights
    qk = ref.qk_factored(w["W_E"], w["W_Q"], w["W_K"])
    ov = ref.ov_factored(w["W_E"], w["W_V"], w["W_O"], w["W_U"])
    d_head = int(w["W_Q"].shape[-1])
    sq, so = qk.S[s.head], ov.S[s.head]
    full_qk = _circuits(s.name)["qk"][s.head]
    full_sv = torch.linalg.svdvals(full_qk)
    return [
        bar(torch.cat([sq, so]), [f"QK σ{i}" for i in range(len(sq))] + [f"OV σ{i}" for i in range(len(so))],
            title=f"singular values, head {s.head} (FactoredMatrix.S)", y_title="singular value"),
        {"d_head": d_head, "d_vocab": int(full_qk.shape[0]),
         "rank of the full QK (numerical)": int(torch.linalg.matrix_rank(full_qk)),
         "max |FactoredMatrix.S - svdvals(full QK)[:d_head]|": float((sq - full_sv[: len(sq)]).abs().max()),
         "largest singular value beyond d_head": float(full_sv[len(sq):].max()) if len(full_sv) > len(sq) else 0.0},
    ]


@live_chart("qk_ov_circuits.prompt_decomposition", "A prompt's scores as four bilinear terms",
            "token-token, token-position, position-token and position-position terms of one head's "
            "scores on the prompt; their scaled, masked sum against the model's own q.k.")
@with_setup
def prompt_decomposition(s: Setup):
    w = s.weights
    parts = ref.qk_score_decomposition(s.tokens, w["W_E"], w["W_pos"], w["W_Q"], w["W_K"])
    d_head = w["W_Q"].shape[-1]
    total = sum(parts.values()) / math.sqrt(d_head)
    n = total.shape[-1]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    _, model_scores, _ = model_scores_and_logits(s)
    diff = float((total[s.head][~future] - model_scores[s.head][~future]).abs().max())
    qk = _circuits(s.name)["qk"][s.head]
    lookup = qk[s.tokens][:, s.tokens]
    m = max(float(p[s.head].masked_fill(future, 0).abs().max()) for p in parts.values()) or 1.0
    charts = [heatmap(p[s.head].masked_fill(future, float("nan")), title=f"{name} term, head {s.head}",
                      x_labels=s.labels, y_labels=s.labels, x_title="key position", y_title="query position",
                      width=260, height=260, domain_max=m) for name, p in parts.items()]
    return charts + [{"max |(sum of terms)/sqrt(d_head) - model scores|": diff,
                      "max |token-token term - full QK read at the prompt's pairs|":
                          float((parts["token-token"][s.head] - lookup).abs().max())}]
