"""Altair charts shared by every lesson: honest heatmaps, bars and histograms.

Heatmaps use a diverging scale centred on 0 (symmetric domain [-m, m]) unless the
data are probabilities (``kind="prob"``: sequential scale on [0, 1]), and label
axes with token strings when given.
"""
from __future__ import annotations

from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd


def _to_numpy(matrix) -> np.ndarray:
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().to("cpu").double().numpy()
    return np.asarray(matrix, dtype=float)


def heatmap(matrix, *, title: str = "", x_labels: Sequence[str] | None = None,
            y_labels: Sequence[str] | None = None, x_title: str = "column",
            y_title: str = "row", kind: str = "diverging", width: int = 320,
            height: int = 320, domain_max: float | None = None) -> alt.Chart:
    """Heatmap of a 2-D array. ``kind``: "diverging" (centred on 0) or "prob" ([0, 1])."""
    data = _to_numpy(matrix)
    if data.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {data.shape}")
    rows, cols = data.shape
    x_labels = [str(v) for v in (x_labels if x_labels is not None else range(cols))]
    y_labels = [str(v) for v in (y_labels if y_labels is not None else range(rows))]
    # Make labels unique (repeated tokens in a prompt) while keeping their order.
    x_labels = _unique(x_labels)
    y_labels = _unique(y_labels)
    frame = pd.DataFrame({
        "row": np.repeat(y_labels, cols),
        "col": np.tile(x_labels, rows),
        "value": data.reshape(-1),
    })
    if kind == "prob":
        scale = alt.Scale(scheme="blues", domain=[0, 1])
    else:
        m = float(domain_max if domain_max is not None else np.nanmax(np.abs(data))) or 1.0
        scale = alt.Scale(scheme="redblue", domain=[-m, m], reverse=True)
    return (
        alt.Chart(frame, title=title)
        .mark_rect()
        .encode(
            x=alt.X("col:N", sort=x_labels, title=x_title),
            y=alt.Y("row:N", sort=y_labels, title=y_title),
            color=alt.Color("value:Q", scale=scale, title="value"),
            tooltip=["row", "col", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(width=width, height=height)
    )


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if label in seen:
            seen[label] += 1
            out.append(f"{label} ({seen[label]})")
        else:
            seen[label] = 0
            out.append(label)
    return out


def bar(values, labels: Sequence[str], *, title: str = "", x_title: str = "",
        y_title: str = "value", width: int = 480, height: int = 240) -> alt.Chart:
    data = _to_numpy(values).reshape(-1)
    frame = pd.DataFrame({"label": [str(l) for l in labels], "value": data})
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(x=alt.X("label:N", sort=list(frame["label"]), title=x_title),
                y=alt.Y("value:Q", title=y_title),
                color=alt.condition(alt.datum.value >= 0, alt.value("#3b6fb6"), alt.value("#c0392b")),
                tooltip=["label", alt.Tooltip("value:Q", format=".4g")])
        .properties(width=width, height=height)
    )


def line(x, ys: dict[str, Sequence[float]], *, title: str = "", x_title: str = "x",
         y_title: str = "value", width: int = 480, height: int = 240) -> alt.Chart:
    x = _to_numpy(x).reshape(-1)
    frame = pd.concat([pd.DataFrame({"x": x, "value": _to_numpy(v).reshape(-1), "series": name})
                       for name, v in ys.items()])
    return (
        alt.Chart(frame, title=title)
        .mark_line(point=True)
        .encode(x=alt.X("x:Q", title=x_title), y=alt.Y("value:Q", title=y_title),
                color="series:N", tooltip=["series", "x", alt.Tooltip("value:Q", format=".4g")])
        .properties(width=width, height=height)
    )


def histogram(samples: dict[str, Sequence[float]], *, title: str = "", x_title: str = "value",
              bins: int = 60, width: int = 560, height: int = 280) -> alt.Chart:
    frame = pd.concat([pd.DataFrame({"value": _to_numpy(v).reshape(-1), "series": name})
                       for name, v in samples.items()])
    return (
        alt.Chart(frame, title=title)
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(x=alt.X("value:Q", bin=alt.Bin(maxbins=bins), title=x_title),
                y=alt.Y("count()", stack=None, title="count"),
                color=alt.Color("series:N", title=""))
        .properties(width=width, height=height)
    )
