"""Live charts and facts for the ``copy_suppressor`` model's head: measures (a), (b), (c).

Appended to lesson 5's ``CHARTS`` by ``charts.py``. The charts ignore the page's model/head
controls: they always show the copy-suppression head of ``copy_suppressor`` (``COPY_HEAD``)
on held-out lists. Every number comes from :mod:`copy_suppression` on the shipped checkpoint.
"""
from __future__ import annotations

import contextlib
import functools
import io
from typing import Any

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.charts import bar, heatmap
from mechinterp_edu.lessons.ioi_scores import copy_suppression as cs
from mechinterp_edu.lessons.ioi_scores import copy_suppressor as recipe
from mechinterp_edu.lessons.ioi_scores.copy_suppressor_data import NAME_IDS, NAMES
from mechinterp_edu.live.registry import LiveChart, chart_decorator

CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)
LAYER, HEAD = recipe.COPY_HEAD
HEAD_LABEL = f"{LAYER}.{HEAD}"


@functools.lru_cache(maxsize=1)
def _model():
    from mechinterp_edu.device import get_device
    from mechinterp_edu.models.zoo import load_model

    with contextlib.redirect_stdout(io.StringIO()):     # the bridge prints device/dtype moves
        return load_model(recipe.NAME, device=get_device())


@functools.lru_cache(maxsize=1)
def _matrices() -> dict[str, torch.Tensor]:
    model = _model()
    eff = cs.effective_embeddings(model, NAME_IDS)
    return {"ov": cs.ov_matrix(model, LAYER, HEAD, NAME_IDS, eff), "qk": cs.qk_matrix(model, LAYER, HEAD, NAME_IDS, eff)}


@functools.lru_cache(maxsize=1)
def _behaviour() -> dict[str, float]:
    tokens, answers = recipe.heldout()
    return cs.behaviour(_model(), LAYER, HEAD, tokens, answers, NAME_IDS)


@functools.lru_cache(maxsize=1)
def copy_suppressor_facts() -> dict[str, object]:
    """Numbers lesson 5's copy-suppressor step states (merge into the lesson's ``facts()``)."""
    m, b = _matrices(), _behaviour()
    tokens, _ = recipe.heldout()
    shares = cs.four_term_shares(cs.four_term_inputs(_model(), LAYER, HEAD, tokens[:500], NAME_IDS), n_null=100)
    n = len(NAMES)
    return {
        "cs_head": HEAD_LABEL, "cs_n_names": n,
        "cs_ov_n": round(cs.own_rank_fraction(m["ov"], 3, True) * n), "cs_ov_chance": 3 / n,
        "cs_qk_n": round(cs.own_rank_fraction(m["qk"], 1, False) * n), "cs_qk_chance": 1 / n,
        "cs_n_prompts": b["n_prompts"], "cs_n_predicted_present": b["n_predicted_present"],
        "cs_attn_to_x": b["attn_to_x"], "cs_dla_x": b["dla_x"],
        "cs_p_x": b["p_x"], "cs_p_x_ablated": b["p_x_ablated"],
        "cs_loss": b["loss"], "cs_loss_ablated": b["loss_ablated"], "cs_ece": b["ece"], "cs_ece_ablated": b["ece_ablated"],
        "cs_share_par_par": shares["d_q_par_k_par"],
        "cs_null_hi": shares["d_null_hi"], "cs_null_level": cs.NULL_QUANTILES[1],
        "cs_share_largest_other": max(shares[f"d_{t}"] for t in cs.TERMS[1:]),
    }


def _matrix_chart(matrix: torch.Tensor, title: str, x_title: str, y_title: str) -> alt.Chart:
    return heatmap(matrix, title=title, x_labels=list(NAMES), y_labels=list(NAMES),
                   x_title=x_title, y_title=y_title, width=420, height=420)


@live_chart("ioi_scores.copy_suppressor_ov", f"Copy suppressor (a): what head {HEAD_LABEL} writes",
            "Row X: the logits over names that the head's OV circuit writes when it attends to a position "
            "holding X alone (effective embedding, no biases). A copy-suppression head has a negative diagonal.")
def copy_suppressor_ov(ctx: dict[str, Any]):
    ov = _matrices()["ov"]
    n = len(NAMES)
    return [{"names whose own logit is among the 3 most suppressed": round(cs.own_rank_fraction(ov, 3, True), 4),
             "chance (3 / names)": round(3 / n, 4)},
            _matrix_chart(ov - ov.mean(-1, keepdim=True), "OV logits (row mean removed)",
                          "logit of name", "attended name X")]


@live_chart("ioi_scores.copy_suppressor_qk", f"Copy suppressor (b): where head {HEAD_LABEL} looks",
            "Row X: the score of every name's key when the query is formed from the unembedding W_U[X]. "
            "A head that attends to the name being predicted has its largest score on the diagonal.")
def copy_suppressor_qk(ctx: dict[str, Any]):
    qk = _matrices()["qk"]
    n = len(NAMES)
    return [{"names whose own key scores highest": round(cs.own_rank_fraction(qk, 1, False), 4),
             "chance (1 / names)": round(1 / n, 4)},
            _matrix_chart(qk - qk.mean(-1, keepdim=True), "QK scores (row mean removed)",
                          "key: name Y", "query: W_U[X]")]


@live_chart("ioi_scores.copy_suppressor_behaviour", f"Copy suppressor (c): head {HEAD_LABEL} on held-out lists",
            "On held-out lists whose last name's favourite successor (as predicted before the head) is already in "
            "the list: where the head looks, what it writes, and what the model does without it (mean-ablated).")
def copy_suppressor_behaviour(ctx: dict[str, Any]):
    b = _behaviour()
    table = pd.DataFrame([
        {"": "with the head", "P(predicted name X)": b["p_x"], "loss (all prompts)": b["loss"], "ECE": b["ece"]},
        {"": "head mean-ablated", "P(predicted name X)": b["p_x_ablated"], "loss (all prompts)": b["loss_ablated"],
         "ECE": b["ece_ablated"]},
    ])
    return [{"prompts where the prediction X is in the list": f"{b['n_predicted_present']} of {b['n_prompts']}",
             "mean attention END -> X": round(b["attn_to_x"], 4),
             "mean direct logit attribution to X": round(b["dla_x"], 4),
             "share of prompts with negative attribution": round(b["dla_x_negative"], 4)},
            bar([b["p_x"], b["p_x_ablated"]], ["with the head", "head mean-ablated"],
                title="Model's probability of the already-listed prediction X", y_title="mean P(X)"),
            table]
