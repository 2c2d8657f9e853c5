"""Lesson 5 live charts for causal evidence and nulls (the page's model, prompts and seed controls).

* ``ioi_scores.head_effects``: for every head, the change in the mean logit difference when its
  output is mean-ablated, zero-ablated, or patched from the IO/S-swapped prompt at END and at S2:
  four heatmaps on ONE colour scale, with the per-prompt spread of the clean logit difference.
* ``ioi_scores.nulls``: every fraction and share the page reports, beside its sampled
  random-direction null (mean and 95% band).
"""
from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import torch

from mechinterp_edu.charts import heatmap
from mechinterp_edu.lessons.ioi_scores import causal as C
from mechinterp_edu.lessons.ioi_scores import nulls
from mechinterp_edu.live.inputs import with_setup_from
from mechinterp_edu.live.registry import LiveChart, chart_decorator
from mechinterp_edu.lessons.ioi_scores import reference as ref


CHARTS: list[LiveChart] = []
live_chart = chart_decorator(CHARTS)


def _setup(ctx: dict[str, Any]):
    from mechinterp_edu.lessons.ioi_scores.charts import setup   # the page's one cached forward pass
    return setup(ctx)


with_setup = with_setup_from(_setup)


_EFFECTS: dict[int, tuple[Any, dict[str, torch.Tensor]]] = {}


def effects_table(s) -> dict[str, torch.Tensor]:
    """Per-head change of the mean logit difference [n_layers, n_heads] for four interventions
    (cached per page setup, which is itself cached)."""
    hit = _EFFECTS.get(id(s))
    if hit is not None and hit[0] is s:
        return dict(hit[1])
    out = _effects_table(s)
    if len(_EFFECTS) >= 8:
        _EFFECTS.clear()
    _EFFECTS[id(s)] = (s, out)
    return dict(out)


def _effects_table(s) -> dict[str, torch.Tensor]:
    from mechinterp_edu.lessons.ioi_scores.charts import _encode

    b = s.batch.to("cpu")
    w = C.weights_of(s.model, torch.float32)
    swapped = _encode(s.model, C.corrupt_prompts(b.prompts, "swap")).to("cpu")
    args = (b.tokens, b.positions["END"], b.io_tokens, b.s_tokens, swapped.tokens)
    at_end = C.head_effects(w, *args, pos=b.positions["END"])
    at_s2 = C.head_effects(w, *args, pos=b.positions["S2"], kinds=("patch",))
    base = at_end["clean"].mean()
    return {"clean": at_end["clean"],
            "mean-ablated": at_end["mean"].mean(-1) - base, "zero-ablated": at_end["zero"].mean(-1) - base,
            "patched at END (IO, S swapped)": at_end["patch"].mean(-1) - base,
            "patched at S2 (IO, S swapped)": at_s2["patch"].mean(-1) - base}


@live_chart("ioi_scores.head_effects", "Which heads matter to the logit difference?",
            "Change in the mean logit(IO) - logit(S) at END when one head's output is mean-ablated, "
            "zero-ablated, or patched from the prompt with IO and S swapped (at END, at S2). One colour "
            "scale for all four panels.")
@with_setup
def head_effects(s):
    t = effects_table(s)
    clean = t.pop("clean")
    dom = float(torch.stack(list(t.values())).abs().max()) or 1.0
    cfg = s.model.cfg
    panels = [heatmap(v, title=name, x_labels=[f"H{h}" for h in range(cfg.n_heads)],
                      y_labels=[f"L{l}" for l in range(cfg.n_layers)], x_title="head", y_title="layer",
                      width=min(300, 40 * cfg.n_heads), height=min(300, 30 * cfg.n_layers), domain_max=dom)
              for name, v in t.items()]
    return [{"clean logit difference: mean": float(clean.mean()), "per-prompt sd": float(clean.std()),
             "smallest": float(clean.min()), "prompts": len(clean)},
            alt.concat(*panels, columns=2)]


def null_rows(s) -> list[dict[str, Any]]:
    """Measured value, null mean and band for each fraction and share the page reports."""
    inp = s.inp
    rows = []
    for i, (label, kind) in enumerate(zip(inp.labels, inp.kinds)):
        if kind != "head":
            continue
        v = inp.q_components[:, i]
        if float(v.norm(dim=-1).min()) < 1e-9:
            continue
        null = nulls.cos2_null(v, k=1)
        rows.append({"statistic": f"{label}: mean cos² with W_U[IO]",
                     "measured": float(ref.fraction_explained(v, inp.u)),
                     "null mean": null["mean"], "null 2.5%": null["lo"], "null 97.5%": null["hi"],
                     "closed form": null["closed"]})
    tot = s.parts["four_keys_base"].sum(-1)
    share = ref.share_explained(tot, torch.zeros_like(tot))
    null = nulls.four_term_null(inp)
    d = inp.u.shape[-1]
    for i, name in enumerate(ref.TERM_NAMES):
        rows.append({"statistic": f"share of the net score: {name}", "measured": float(share[i]),
                     "null mean": null[name]["mean"], "null 2.5%": null[name]["lo"], "null 97.5%": null[name]["hi"],
                     "closed form": 1 / d ** 2 if i == 0 else float("nan")})
    return rows


@live_chart("ioi_scores.nulls", "Measured fractions and shares beside their random-direction nulls",
            "Each statistic (dot) beside the same statistic with the direction(s) drawn at random "
            "(bar: 95% band; tick: null mean).")
@with_setup
def null_chart(s):
    frame = pd.DataFrame(null_rows(s))
    base = alt.Chart(frame).encode(y=alt.Y("statistic:N", sort=list(frame["statistic"]), title=None))
    band = base.mark_rule(strokeWidth=6, opacity=0.35).encode(x=alt.X("null 2.5%:Q", title="value"),
                                                               x2="null 97.5%:Q")
    tick = base.mark_tick(color="gray", thickness=2).encode(x="null mean:Q")
    dot = base.mark_point(filled=True, color="crimson", size=70).encode(
        x="measured:Q", tooltip=["statistic", alt.Tooltip("measured:Q", format=".4g"),
                                 alt.Tooltip("null mean:Q", format=".3g"), alt.Tooltip("null 2.5%:Q", format=".3g"),
                                 alt.Tooltip("null 97.5%:Q", format=".3g")])
    return [frame, (band + tick + dot).properties(width="container", height=24 * len(frame))]
