"""Charts that fit their container (mechinterp_edu.charts.fit_layout) and the app's code cells
(mechinterp_edu.app.code_cells), without a browser.

The fitted specs are checked against the charts' own data: a facet split must partition the
rows exactly as pandas does, and every view must draw from the rows it was given.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

from mechinterp_edu.charts import LARGE_BAND_PX, fit_layout, heatmap

FRAME = pd.DataFrame({"x": [1, 2, 3, 4, 5, 6], "y": [1.0, 0.5, 0.25, 2.0, 3.0, 0.0],
                      "group": ["a", "a", "b", "b", "c", "c"]})


def _rows(spec: dict) -> list[dict]:
    """The rows a single-view spec draws (its inline dataset, after its filters), computed here."""
    data = spec["data"]
    rows = data["values"] if "values" in data else spec["datasets"][data["name"]]
    for t in spec.get("transform", []):
        f = t["filter"]
        if "equal" in f:
            rows = [r for r in rows if r[f["field"]] == f["equal"]]
        if "gt" in f:
            rows = [r for r in rows if r[f["field"]] > f["gt"]]
    return rows


def test_a_single_chart_takes_the_container_width_whatever_width_it_asked_for():
    chart = alt.Chart(FRAME).mark_line().encode(x="x:Q", y="y:Q").properties(width=2324, height=200)
    fitted = fit_layout(chart)
    assert fitted.kind == "leaf" and fitted.width == 2324
    assert fitted.spec["width"] == "container" and fitted.spec["height"] == 200
    assert fitted.spec["autosize"]["type"] == "fit-x"          # the height is the plot's, axes come on top
    assert len(_rows(fitted.spec)) == len(FRAME)


def test_concatenations_become_single_views_with_their_own_data():
    a = alt.Chart(FRAME).mark_bar().encode(x="x:O", y="y:Q").properties(width=600)
    other = pd.DataFrame({"x": [7, 8], "y": [1.0, 2.0]})
    b = alt.Chart(other).mark_point().encode(x="x:Q", y="y:Q").properties(width=700)
    c = alt.Chart(FRAME).mark_rect().encode(x="x:O", y="group:N").properties(width=500)
    fitted = fit_layout(alt.hconcat(a, alt.vconcat(b, c), title="three views"))
    assert fitted.kind == "row" and [p.kind for p in fitted.parts] == ["leaf", "stack"]
    leaves = fitted.leaves()
    assert len(leaves) == 3 and all(s["width"] == "container" for s in leaves)
    assert "hconcat" not in str(leaves) and "vconcat" not in str(leaves)
    assert [len(_rows(s)) for s in leaves] == [len(FRAME), len(other), len(FRAME)]
    assert [r["x"] for r in _rows(leaves[1])] == [7, 8]
    assert leaves[0]["title"] == "three views"


def test_a_faceted_chart_is_split_into_one_view_per_value_partitioning_the_rows():
    chart = (alt.Chart(FRAME).mark_bar().encode(x="x:O", y="y:Q", column=alt.Column("group:N", title="g"))
             .properties(width=220))
    fitted = fit_layout(chart)
    assert fitted.kind == "row" and len(fitted.parts) == 3
    leaves = fitted.leaves()
    assert all("column" not in s["encoding"] for s in leaves)
    assert [s["title"] for s in leaves] == ["g: a", "g: b", "g: c"]
    for spec, (value, part) in zip(leaves, FRAME.groupby("group", sort=False)):
        assert [r["x"] for r in _rows(spec)] == part["x"].tolist(), value


def test_log_scales_drop_non_positive_values_and_bars_on_them_are_not_stacked():
    chart = alt.Chart(FRAME).mark_bar().encode(x="x:O", y=alt.Y("y:Q", scale=alt.Scale(type="log")))
    spec = fit_layout(chart).spec
    assert spec["encoding"]["y"]["stack"] is None
    kept = _rows(spec)
    assert len(kept) == int((FRAME["y"] > 0).sum()) and min(r["y"] for r in kept) > 0


def test_heatmap_rows_stay_readable_and_classroom_sizes_apply():
    m = np.arange(40 * 3, dtype=float).reshape(40, 3)
    small = heatmap(m, height=100)
    assert fit_layout(small).spec["height"] >= 40 * 18
    large = fit_layout(small, large=True, max_height=260).spec
    assert large["height"] == 260                                # capped for a 1280x720 screen
    assert large["config"]["axis"]["labelFontSize"] >= 16 and large["config"]["legend"]["labelFontSize"] >= 16
    few = fit_layout(heatmap(np.eye(3), height=40), large=True, max_height=260).spec
    assert few["height"] == 3 * LARGE_BAND_PX


# --------------------------------------------------------------------------- code cells
def test_a_cell_runs_after_the_cells_above_it_and_shows_prints_and_its_last_value():
    from mechinterp_edu.app.code_cells import Kernel

    cells = ["a = 6\nprint('a is', a)", "b = a * 7\nb", "print(b)\nb / (a - 6)", "def f(:\n  pass"]
    k = Kernel()
    second = k.run(cells, 1)
    assert second.value == "42" and second.error is None and not second.notes
    assert k.runs[0].stdout == "a is 6\n" and k.done == {0, 1}
    third = k.run(cells, 2)
    assert third.stdout == "42\n" and third.error.startswith("ZeroDivisionError") and "line 2 of the cell" in third.error
    fourth = k.run(cells, 3)
    assert fourth.error.startswith("SyntaxError on line 1")
    again = Kernel().run(["undefined_name + 1", "2 + 2"], 1)        # a failing cell above is noted, not fatal
    assert again.value == "4" and "NameError" in again.notes[0]


@pytest.mark.parametrize("source, shown", [("x = 1", None), ("None", None), ("'a' * 3", "'aaa'")])
def test_only_a_last_expression_with_a_value_is_shown(source, shown):
    from mechinterp_edu.app.code_cells import Kernel

    assert Kernel().run([source], 0).value == shown
