"""Live charts: functions that compute one lesson step on a model and return something to show.

A live chart takes the control values of the lesson page as ``ctx`` (a plain dict,
e.g. ``{"model": "skip_trigrams", "head": 0, "prompt": "3 1 4"}``) and returns a
*live output*: an ``altair.Chart``, a ``pandas.DataFrame``, a markdown ``str``, a
``dict`` of metrics (label -> number/str), a list of ``StepResult`` verdicts from
the derivation framework, or a list of any of these (shown in order).
The app renders them with Streamlit; notebooks display them with IPython.

    @live_chart("tensor_products.attention_pattern", "Attention pattern of one head")
    def attention_pattern(ctx):
        ...
        return heatmap(...)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

LiveOutput = Any


@dataclass(frozen=True)
class LiveChart:
    name: str
    title: str
    fn: Callable[[dict[str, Any]], LiveOutput]
    description: str = ""


_REGISTRY: dict[str, LiveChart] = {}


def live_chart(name: str, title: str, description: str = "") -> Callable:
    def decorate(fn: Callable[[dict[str, Any]], LiveOutput]):
        _REGISTRY[name] = LiveChart(name, title, fn, description)
        return fn
    return decorate


def _import_all() -> None:
    from mechinterp_edu.course import LESSONS
    for lesson in LESSONS:
        importlib.import_module(lesson.live)


def get_chart(name: str) -> LiveChart:
    if name not in _REGISTRY:
        _import_all()
    if name not in _REGISTRY:
        raise KeyError(f"No live chart {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def all_charts() -> list[LiveChart]:
    _import_all()
    return list(_REGISTRY.values())


def compute(name: str, ctx: dict[str, Any] | None = None) -> LiveOutput:
    """Run a live chart with ``ctx`` (missing keys take the lesson's defaults)."""
    from mechinterp_edu.course import LESSONS
    from mechinterp_edu.lesson_source import load_lesson

    chart = get_chart(name)
    full: dict[str, Any] = {}
    for lesson in LESSONS:
        if lesson.live.rsplit(".", 1)[-1] == name.split(".", 1)[0]:
            full.update(load_lesson(lesson.number).default_context())
    full.update(ctx or {})
    return chart.fn(full)
