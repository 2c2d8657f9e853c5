"""Live charts: functions that compute one lesson step on a model and return something to show.

A live chart takes the control values of the lesson page as ``ctx`` (a plain dict,
e.g. ``{"model": "skip_trigrams", "head": 0, "prompt": "3 1 4"}``) and returns a
*live output*: an ``altair.Chart``, a ``pandas.DataFrame``, a markdown ``str``, a
``dict`` of metrics (label -> number/str), a list of ``StepResult`` verdicts from
the derivation framework, or a list of any of these (shown in order).
The app renders them with Streamlit; notebooks display them with IPython.

    CHARTS: list[LiveChart] = []               # in lessons/<slug>/charts.py
    live_chart = chart_decorator(CHARTS)

    @live_chart("tensor_products.attention_pattern", "Attention pattern of one head")
    def attention_pattern(ctx):
        ...
        return heatmap(...)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

LiveOutput = Any


@dataclass(frozen=True)
class LiveChart:
    name: str
    title: str
    fn: Callable[[dict[str, Any]], LiveOutput]
    description: str = ""


def chart_decorator(charts: list[LiveChart]) -> Callable:
    """``live_chart = chart_decorator(CHARTS)``: a decorator that appends each chart to a lesson's list."""
    def live_chart(name: str, title: str, description: str = "") -> Callable:
        def decorate(fn: Callable[[dict[str, Any]], LiveOutput]):
            charts.append(LiveChart(name, title, fn, description))
            return fn
        return decorate
    return live_chart


def _lesson_of(name: str):
    from mechinterp_edu.course import LESSONS
    slug = name.split(".", 1)[0]
    return next((lesson for lesson in LESSONS if lesson.slug == slug), None)


def all_charts() -> list[LiveChart]:
    """Every lesson's CHARTS, in course order (read through the course map)."""
    from mechinterp_edu.course import all_parts
    return all_parts("charts")


def get_chart(name: str) -> LiveChart:
    """Look up ``"<lesson slug>.<chart>"``."""
    from mechinterp_edu.course import parts
    lesson = _lesson_of(name)
    for chart in parts(lesson, "charts") if lesson else ():
        if chart.name == name:
            return chart
    raise KeyError(f"No live chart {name!r}; known: {sorted(c.name for c in all_charts())}")


def compute(name: str, ctx: dict[str, Any] | None = None) -> LiveOutput:
    """Run a live chart with ``ctx`` (missing keys take the lesson's defaults)."""
    from mechinterp_edu.lesson_source import load_lesson

    chart = get_chart(name)
    full: dict[str, Any] = {}
    lesson = _lesson_of(name)
    if lesson is not None and lesson.source_path.exists():
        full.update(load_lesson(lesson.source_path, fill=False).default_context())
    full.update(ctx or {})
    return chart.fn(full)
