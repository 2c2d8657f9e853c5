"""Altair charts shared by every lesson: honest heatmaps, bars and histograms.

Heatmaps use a diverging scale centred on 0 (symmetric domain [-m, m]) unless the
data are probabilities (``kind="prob"``: sequential scale on [0, 1]), and label
axes with token strings when given.

:func:`fit_layout` is how the app draws any chart: concatenated and faceted views become
single views, each as wide as its container (never a sum of pixel widths), with projector
sizes in classroom mode.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
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


# --------------------------------------------------------------------------- fitting a page
# The app draws every chart at the width of its container (the main column, or a column of
# it), whatever pixel widths a lesson's code asked for. Vega-Lite cannot stretch a
# concatenated or faceted view to its container, so those are split into single views first:
# ``fit_layout`` turns any altair chart into a tree of Row / Stack nodes whose leaves are
# single-view Vega-Lite specs with ``width: "container"``.
COMPOSITE = {"hconcat": "row", "vconcat": "stack", "concat": "stack"}
FACET_CHANNELS = ("column", "row", "facet")
MAX_FACETS = 8
BAND_PX, LARGE_BAND_PX = 18, 22     # least height of a heatmap row (labels at 12 / 16 px)
LARGE_AXIS = {"labelFontSize": 16, "titleFontSize": 18, "labelColor": "#1a1a1a", "titleColor": "#1a1a1a",
              "labelLimit": 120}
LARGE_CONFIG = {"axis": LARGE_AXIS, "legend": {"labelFontSize": 16, "titleFontSize": 17, "labelColor": "#1a1a1a",
                                                 "titleColor": "#1a1a1a", "symbolSize": 160},
                "header": {"labelFontSize": 16, "titleFontSize": 17, "labelColor": "#1a1a1a"},
                "title": {"fontSize": 20, "color": "#1a1a1a"}}


@dataclass
class Fitted:
    """A node of a fitted chart: ``kind`` "leaf" (``spec`` set), "row" or "stack" (``parts``).
    ``width`` is the pixel width the lesson's code asked for (a hint for laying out a row)."""
    kind: str
    spec: dict | None = None
    parts: list["Fitted"] = field(default_factory=list)
    width: float | None = None

    def leaves(self) -> list[dict]:
        return [self.spec] if self.kind == "leaf" else [s for p in self.parts for s in p.leaves()]


def fit_layout(chart, *, large: bool = False, max_height: int | None = None) -> Fitted:
    """Split ``chart`` (altair object or Vega-Lite dict) into single views that each take the
    width of their container. ``large``: projector sizes (labels >= 16 px, taller plots capped at
    ``max_height``). Log-scale bars get a baseline at the plot's edge (a bar from 0 has no log)."""
    spec = chart.to_dict() if hasattr(chart, "to_dict") else copy.deepcopy(dict(chart))
    shared = {k: spec.pop(k) for k in ("datasets", "config", "$schema") if k in spec}
    config = copy.deepcopy(shared.get("config", {}))
    if large:
        for key, value in LARGE_CONFIG.items():
            config[key] = {**config.get(key, {}), **value}
    shared["config"] = config
    return _split(spec, shared, {}, large=large, max_height=max_height)


def _split(spec: dict, shared: dict, inherit: dict, *, large: bool, max_height: int | None) -> Fitted:
    for key, kind in COMPOSITE.items():
        if key in spec:
            passed = {**inherit, **{k: spec[k] for k in ("data", "transform", "params") if k in spec}}
            parts = [_split(dict(child), shared, passed, large=large, max_height=max_height)
                     for child in spec[key]]
            if "title" in spec and parts and parts[0].kind == "leaf":
                parts[0].spec.setdefault("title", spec["title"])
            return Fitted(kind, parts=parts, width=sum(p.width or 0 for p in parts) or None)
    spec = {**inherit, **spec}
    if "transform" in inherit and "transform" in spec and spec["transform"] is not inherit["transform"]:
        spec["transform"] = list(inherit["transform"]) + list(spec["transform"])
    facets = _facet_split(spec, shared)
    if facets is not None:
        return Fitted("row" if facets[0] == "column" else "stack", width=facets[2],
                      parts=[_leaf(s, shared, large=large, max_height=max_height) for s in facets[1]])
    return _leaf(spec, shared, large=large, max_height=max_height)


def _facet_split(spec: dict, shared: dict) -> tuple[str, list[dict], float | None] | None:
    """A faceted view as one filtered view per facet value (None when it is not faceted or
    its data are not inline)."""
    if "facet" in spec and "spec" in spec:           # top-level facet operator
        inner = dict(spec["spec"])
        facet = spec["facet"]
        channel = "column" if "field" in facet else next(iter(facet))
        encoding = {**inner.get("encoding", {}), channel: facet if "field" in facet else facet[channel]}
        spec = {**{k: v for k, v in spec.items() if k not in ("facet", "spec", "columns")}, **inner,
                "encoding": encoding}
    encoding = spec.get("encoding", {})
    channel = next((c for c in FACET_CHANNELS if c in encoding), None)
    if channel is None:
        return None
    fdef = encoding[channel]
    values = _data_values(spec.get("data"), shared)
    name = fdef.get("field") if isinstance(fdef, dict) else None
    if values is None or name is None:
        return None
    seen = list(dict.fromkeys(row.get(name) for row in values))
    if not seen or len(seen) > MAX_FACETS:
        return None
    label = fdef.get("title")
    parts = []
    for value in seen:
        part = {k: v for k, v in spec.items() if k != "encoding"}
        part["encoding"] = {k: v for k, v in encoding.items() if k != channel}
        part["transform"] = list(spec.get("transform", [])) + [{"filter": {"field": name, "equal": value}}]
        part["title"] = f"{label}: {value}" if label else str(value)
        parts.append(part)
    width = spec.get("width")
    return channel, parts, (width * len(parts) if isinstance(width, (int, float)) else None)


def _data_values(data: dict | None, shared: dict) -> list[dict] | None:
    if not isinstance(data, dict):
        return None
    if "values" in data:
        return data["values"]
    return shared.get("datasets", {}).get(data.get("name"))


def _leaf(spec: dict, shared: dict, *, large: bool, max_height: int | None) -> Fitted:
    spec = {**copy.deepcopy(spec), **{k: v for k, v in shared.items() if k != "config"}}
    spec["config"] = copy.deepcopy(shared.get("config", {}))
    asked = spec.get("width")
    spec["width"] = "container"
    spec["autosize"] = {"type": "fit-x", "contains": "padding"}
    for layer in spec.get("layer", []):
        layer.pop("width", None)
        _log_scale_repair(layer)
    _log_scale_repair(spec)
    height = spec.get("height")
    if large and isinstance(height, (int, float)):
        height = int(height * 1.3)
    rows = _band_count(spec, shared)
    if rows and isinstance(height, (int, float)):   # every row label readable
        height = max(height, rows * (LARGE_BAND_PX if large else BAND_PX))
    if max_height and isinstance(height, (int, float)):
        height = min(int(height), max_height)
    if height is not None:
        spec["height"] = height
    return Fitted("leaf", spec=spec, width=asked if isinstance(asked, (int, float)) else None)


def _band_count(spec: dict, shared: dict) -> int:
    """How many rows a discrete y axis has (0 when it is not discrete or the data are not inline)."""
    y = spec.get("encoding", {}).get("y") or {}
    if y.get("type") not in ("nominal", "ordinal") or "field" not in y:
        return 0
    values = _data_values(spec.get("data"), shared)
    return len({row.get(y["field"]) for row in values}) if values else 0


def _log_scale_repair(spec: dict) -> None:
    """A log axis drops values <= 0 (one zero would make the whole domain infinite and the chart
    empty), and bars on it are not stacked (a stack starts at 0, and log 0 is -inf: Vega-Lite
    would draw nothing at all)."""
    mark = spec.get("mark")
    encoding = spec.get("encoding", {})
    for channel in ("y", "x"):
        enc = encoding.get(channel) or {}
        if ((enc.get("scale") or {}).get("type")) != "log":
            continue
        if "field" in enc:
            spec["transform"] = list(spec.get("transform", [])) + [{"filter": {"field": enc["field"], "gt": 0}}]
        if (mark if isinstance(mark, str) else (mark or {}).get("type")) == "bar":
            enc.setdefault("stack", None)
