"""Shared handling of the page's control values for live charts."""
from __future__ import annotations

import functools
from typing import Any, Callable


class InputProblem(ValueError):
    """A control value the chart cannot use; the message says what to change."""


def with_setup_from(setup: Callable[[dict[str, Any]], Any]) -> Callable:
    """Decorator factory for charts written as ``fn(setup_object)``.

    ``setup(ctx)`` validates the controls and builds what the charts need (it returns an
    object with a ``notes`` list). A bad control becomes a one-line markdown message instead
    of an exception; notes (e.g. "head 5 wrapped to 1") are shown above the chart.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(ctx: dict[str, Any]):
            try:
                s = setup(ctx)
            except InputProblem as exc:
                return f"**Cannot draw this chart:** {exc}"
            out = fn(s)
            out = out if isinstance(out, list) else [out]
            return [f"*Note:* {n}" for n in s.notes] + out
        return wrapper
    return decorate
