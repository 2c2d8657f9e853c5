"""Draw a live output with Streamlit.

A live output (see :mod:`mechinterp_edu.live.registry`) is an altair chart, a pandas
DataFrame, a markdown string, a dict of metrics, a list of derivation ``StepResult``
verdicts, or a list of any of these (drawn in order). ``large=True`` (classroom mode)
stretches charts and tables to the page width and makes charts taller.
"""
from __future__ import annotations

import numbers
import re
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from mechinterp_edu.derivations.framework import StepResult

MAX_METRIC_COLUMNS = 6
LARGE_CHART_HEIGHT_FACTOR = 1.5


def render_output(out: Any, *, large: bool = False) -> None:
    if out is None:
        st.caption("(this step has nothing to show)")
    elif isinstance(out, alt.TopLevelMixin):
        render_chart(out, large=large)
    elif isinstance(out, (pd.DataFrame, pd.Series)) or type(out).__name__ == "Styler":
        st.dataframe(out, width="stretch" if large else "content")
    elif isinstance(out, str):
        markdown(out)
    elif isinstance(out, StepResult):
        render_verdicts([out])
    elif isinstance(out, dict):
        render_metrics(out)
    elif isinstance(out, (list, tuple)):
        if out and all(isinstance(x, StepResult) for x in out):
            render_verdicts(list(out))
        else:
            for item in out:
                render_output(item, large=large)
    elif hasattr(out, "detach") or type(out).__module__ == "numpy":
        _render_array(out, large=large)
    elif isinstance(out, numbers.Number):
        st.metric("value", format_value(out))
    else:
        st.write(out)


_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)


def normalize_math(md: str) -> str:
    """Put display math that spans lines (``$$a\n+ b$$``) in block form (``$$`` on lines of
    their own), so that a continuation line is not read as markdown (``+ b`` as a list item)
    and KaTeX gets the whole formula. Fenced code is left alone."""
    parts = re.split(r"(^(?:```|~~~).*?^(?:```|~~~)[^\n]*$)", md, flags=re.MULTILINE | re.DOTALL)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:                       # a fenced code block
            out.append(part)
            continue
        out.append(_DISPLAY_MATH.sub(
            lambda m: f"\n\n$$\n{m.group(1).strip()}\n$$\n\n" if "\n" in m.group(1) else m.group(0), part))
    return "".join(out)


def markdown(md: str) -> None:
    st.markdown(normalize_math(md))


def render_chart(chart: alt.TopLevelMixin, *, large: bool = False) -> None:
    if large and isinstance(chart, alt.Chart) and isinstance(chart.height, numbers.Number):
        chart = chart.properties(height=int(chart.height * LARGE_CHART_HEIGHT_FACTOR))
    st.altair_chart(chart, width="stretch" if large else "content")


def format_value(v: Any) -> str:
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        return f"{float(v):.4g}"
    return str(v)


def render_metrics(metrics: dict[str, Any]) -> None:
    """A few scalars as st.metric columns; many (or nested) values as a table."""
    if not metrics:
        st.caption("(no metrics)")
        return
    simple = all(not isinstance(v, (dict, list, tuple)) or _is_metric_spec(v) for v in metrics.values())
    if simple and len(metrics) <= MAX_METRIC_COLUMNS:
        for col, (label, value) in zip(st.columns(len(metrics)), metrics.items()):
            with col:
                if _is_metric_spec(value):
                    st.metric(str(label), format_value(value["value"]),
                              delta=None if value.get("delta") is None else format_value(value["delta"]),
                              help=value.get("help"))
                else:
                    st.metric(str(label), format_value(value))
        return
    rows = [{"metric": str(k), "value": format_value(v["value"] if _is_metric_spec(v) else v)}
            for k, v in metrics.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def _is_metric_spec(v: Any) -> bool:
    return isinstance(v, dict) and "value" in v


def render_verdicts(results: list[StepResult]) -> None:
    """One row per derivation step: the statement (LaTeX), the verdict, and why."""
    for r in results:
        with st.container(border=True):
            st.latex(r.statement)
            badge = ":green-badge[:material/check: proven]" if r.passed else ":red-badge[:material/close: failed]"
            st.markdown(f"{badge} &nbsp; `{r.step}` — {escape_markdown(r.detail)} ({r.seconds:.2f} s)")
            if r.explanation:
                st.caption(r.explanation)


_MD_SPECIAL = set("\\`*_{}[]<>()#+!|$~:")


def escape_markdown(text: str) -> str:
    """Plain text shown through st.markdown unchanged (no emphasis, links, LaTeX or colours)."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))


def _render_array(arr: Any, *, large: bool) -> None:
    if hasattr(arr, "detach"):
        arr = arr.detach().to("cpu").numpy()
    if getattr(arr, "ndim", 0) == 0:
        st.metric("value", format_value(arr))
    elif arr.ndim <= 2:
        st.dataframe(pd.DataFrame(arr.reshape(arr.shape[0], -1)), width="stretch" if large else "content")
    else:
        st.write(f"array of shape {tuple(arr.shape)}")
