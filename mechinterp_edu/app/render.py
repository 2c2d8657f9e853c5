"""Draw a live output with Streamlit.

A live output (see the lessons' ``charts.py``) is an altair chart, a pandas DataFrame, a
markdown string, a dict of metrics, a list of derivation ``StepResult`` verdicts, or a list of
any of these (drawn in order).

Every chart goes through :func:`mechinterp_edu.charts.fit_layout`: it is drawn at the width
of its container, whatever widths the lesson's code asked for (concatenations and facets
become single views). ``large=True`` (classroom mode) adds projector-sized labels and caps
the height so that a chart fits a 1280x720 screen.
"""
from __future__ import annotations

import numbers
import re
from collections import OrderedDict
from typing import Any, Callable

import altair as alt
import pandas as pd
import streamlit as st

from mechinterp_edu.charts import Fitted, fit_layout
from mechinterp_edu.derivations.framework import StepResult

METRICS_PER_ROW = {False: 3, True: 4}
MAX_TABLE_METRICS = 8
ROW_MAX_WIDTH = {False: 380, True: 640}   # two asked-for widths up to this share a row of columns
LARGE_MAX_HEIGHT = 230                    # plot height in classroom mode (a 1280x720 screen)
LARGE_TABLE_HEIGHT = 380

# (derivation name) -> (label, callback) that shows the step where it is derived; set by the page.
StepLink = Callable[[str], "tuple[str, Callable[[], None]] | None"]


def render_output(out: Any, *, large: bool = False, link: StepLink | None = None) -> None:
    if out is None:
        st.caption("(this step has nothing to show)")
    elif isinstance(out, alt.TopLevelMixin):
        render_chart(out, large=large)
    elif isinstance(out, (pd.DataFrame, pd.Series)) or type(out).__name__ == "Styler":
        render_table(out, large=large)
    elif isinstance(out, str):
        markdown(out)
    elif isinstance(out, StepResult):
        render_verdicts([out], link=link)
    elif isinstance(out, dict):
        render_metrics(out, large=large)
    elif isinstance(out, (list, tuple)):
        if out and all(isinstance(x, StepResult) for x in out):
            render_verdicts(list(out), link=link)
        else:
            for item in out:
                render_output(item, large=large, link=link)
    elif hasattr(out, "detach") or type(out).__module__ == "numpy":
        _render_array(out, large=large)
    elif isinstance(out, numbers.Number):
        render_metrics({"value": out}, large=large)
    else:
        st.write(out)


def render_table(frame: Any, *, large: bool = False) -> None:
    kwargs = {"height": LARGE_TABLE_HEIGHT} if large and len(getattr(frame, "index", ())) > 9 else {}
    st.dataframe(frame, width="stretch", **kwargs)


_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
# A paragraph that is one line of $$...$$: shown as display math (block form), not inline.
_LONE_MATH = re.compile(r"(^|\n\n)[ \t]*\$\$([^\n]+?)\$\$[ \t]*(?=\n\n|$)")


def normalize_math(md: str) -> str:
    """Put display math that spans lines (``$$a\n+ b$$``) in block form (``$$`` on lines of
    their own), so that a continuation line is not read as markdown (``+ b`` as a list item)
    and KaTeX gets the whole formula; a paragraph that is one line of ``$$...$$`` also becomes a
    block (else it is drawn as inline math). Fenced code is left alone."""
    parts = re.split(r"(^(?:```|~~~).*?^(?:```|~~~)[^\n]*$)", md, flags=re.MULTILINE | re.DOTALL)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 1:                       # a fenced code block
            out.append(part)
            continue
        part = _DISPLAY_MATH.sub(
            lambda m: f"\n\n$$\n{m.group(1).strip()}\n$$\n\n" if "\n" in m.group(1) else m.group(0), part)
        out.append(_LONE_MATH.sub(lambda m: f"{m.group(1)}$$\n{m.group(2).strip()}\n$$", part))
    return "".join(out)


def markdown(md: str) -> None:
    st.markdown(normalize_math(md))


# --------------------------------------------------------------------------- charts
def render_chart(chart: Any, *, large: bool = False) -> None:
    """Draw ``chart`` so that it fits its container (see :func:`fit_layout`)."""
    _draw(fit_layout(chart, large=large, max_height=LARGE_MAX_HEIGHT if large else None), large)


def _draw(node: Fitted, large: bool) -> None:
    if node.kind == "leaf":
        st.vega_lite_chart(node.spec, width="stretch")
        return
    side_by_side = (node.kind == "row" and 1 < len(node.parts) <= (3 if large else 2)
                    and all(p.kind == "leaf" and (p.width or 0) <= ROW_MAX_WIDTH[large] for p in node.parts))
    if side_by_side:
        for col, part in zip(st.columns(len(node.parts)), node.parts):
            with col:
                _draw(part, large)
    else:
        for part in node.parts:
            _draw(part, large)


# --------------------------------------------------------------------------- metrics
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


def render_metrics(metrics: dict[str, Any], *, large: bool = False) -> None:
    """A few scalars as st.metric tiles (rows of at most 3, or 4 in classroom mode; values wrap,
    never truncate: see :mod:`.style`); many (or nested) values as a table."""
    if not metrics:
        st.caption("(no metrics)")
        return
    simple = all(not isinstance(v, (dict, list, tuple)) or _is_metric_spec(v) for v in metrics.values())
    if not simple or len(metrics) > MAX_TABLE_METRICS:
        rows = [{"metric": str(k), "value": format_value(v["value"] if _is_metric_spec(v) else v)}
                for k, v in metrics.items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        return
    items = list(metrics.items())
    per_row = METRICS_PER_ROW[large]
    for start in range(0, len(items), per_row):
        chunk = items[start:start + per_row]
        for col, (label, value) in zip(st.columns(per_row), chunk):
            with col:
                if _is_metric_spec(value):
                    st.metric(str(label), format_value(value["value"]),
                              delta=None if value.get("delta") is None else format_value(value["delta"]),
                              help=value.get("help"))
                else:
                    st.metric(str(label), format_value(value))


def _is_metric_spec(v: Any) -> bool:
    return isinstance(v, dict) and "value" in v


# --------------------------------------------------------------------------- verdicts
def verdict_label(title: str, results: list[StepResult]) -> str:
    """One line: the derivation and sympy's verdict on it (no timings)."""
    failed = [r for r in results if not r.passed]
    n = len(results)
    if not failed:
        what = "proven" if n == 1 else f"all {n} steps proven"
        return f":green[**{what}**] · {title}"
    return f":red[**{len(failed)} of {n} failed**] · {title}"


def render_verdict_group(title: str, results: list[StepResult], *, link: StepLink | None = None,
                         name: str | None = None) -> None:
    """A derivation as ONE line (title and sympy's verdict, red when a step fails) with its steps
    in a closed expander. ``link`` adds a button to the step that derives it (summaries)."""
    ok = all(r.passed for r in results)
    target = link(name) if (link is not None and name) else None
    where = st.columns([5, 1], vertical_alignment="center") if target else [st.container()]
    with where[0]:
        with st.expander(verdict_label(title, results), expanded=False,
                         icon=":material/check_circle:" if ok else ":material/cancel:"):
            for r in results:
                st.latex(r.statement)
                mark = ":green-badge[:material/check: proven]" if r.passed else ":red-badge[:material/close: failed]"
                st.markdown(f"{mark} &nbsp; `{r.step}` — {escape_markdown(r.detail)}")
                if r.explanation:
                    st.caption(r.explanation)
    if target:
        label, go = target
        with where[1]:
            st.button(label.split(":")[0], key=f"goto::{name}::{label}", on_click=go, type="tertiary",
                      icon=":material/arrow_forward:", help=f"Go to {label}", width="stretch")


def render_verdicts(results: list[StepResult], *, link: StepLink | None = None) -> None:
    """Verdicts grouped by derivation, one line each (a summary links to the steps instead of
    repeating them)."""
    groups: OrderedDict[str, list[StepResult]] = OrderedDict()
    for r in results:
        groups.setdefault(r.derivation, []).append(r)
    for name, rs in groups.items():
        render_verdict_group(_derivation_title(name), rs, link=link, name=name)


def _derivation_title(name: str) -> str:
    try:
        from mechinterp_edu.app import cache
        return cache.get_derivation(name).title
    except Exception:  # noqa: BLE001 - a title is a nicety
        return name


_MD_SPECIAL = set("\\`*_{}[]<>()#+!|$~:")


def escape_markdown(text: str) -> str:
    """Plain text shown through st.markdown unchanged (no emphasis, links, LaTeX or colours)."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))


def _render_array(arr: Any, *, large: bool) -> None:
    if hasattr(arr, "detach"):
        arr = arr.detach().to("cpu").numpy()
    if getattr(arr, "ndim", 0) == 0:
        render_metrics({"value": arr}, large=large)
    elif arr.ndim <= 2:
        render_table(pd.DataFrame(arr.reshape(arr.shape[0], -1)), large=large)
    else:
        st.write(f"array of shape {tuple(arr.shape)}")
