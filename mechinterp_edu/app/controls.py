"""Front-matter controls -> widgets -> ``ctx`` (the dict live charts receive).

Kinds (see :mod:`mechinterp_edu.lesson_source`): ``select`` (options), ``int`` (min, max),
``float`` (min, max, step), ``text``, ``bool``, ``multiselect`` (options); each may have
``label`` and ``help``. Values are remembered per lesson in session state, so the
classroom page and the lesson page share them and a page switch loses nothing.

:func:`validate` checks values and returns clear messages (what is wrong, what to do);
a page with problems shows them and pauses its live charts instead of failing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from mechinterp_edu.app import state

MAX_TEXT_CHARS = 400
SLIDER_MAX_RANGE = 64


@dataclass
class Control:
    name: str
    kind: str
    label: str
    help: str | None
    default: Any
    options: list[Any]
    min: Any = None
    max: Any = None
    step: Any = None


def parse_controls(specs: list[dict[str, Any]]) -> tuple[list[Control], list[str]]:
    """Normalise the front-matter list; problems in the spec itself become messages."""
    controls, problems = [], []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "name" not in spec:
            problems.append(f"Control #{i + 1} in the lesson's front matter has no `name`; it is ignored.")
            continue
        kind = str(spec.get("kind", "text"))
        options = list(spec.get("options") or [])
        c = Control(
            name=str(spec["name"]), kind=kind, label=str(spec.get("label") or spec["name"]),
            help=spec.get("help"), default=spec.get("default"), options=options,
            min=spec.get("min"), max=spec.get("max"), step=spec.get("step"),
        )
        if kind in ("select", "multiselect") and not options:
            problems.append(f"Control `{c.name}` is a {kind} without `options`; it is ignored.")
            continue
        if kind not in ("select", "int", "float", "text", "bool", "multiselect"):
            problems.append(f"Control `{c.name}` has unknown kind `{kind}` (known: select, int, float, "
                            "text, bool, multiselect); its default value is used.")
        controls.append(c)
    return controls, problems


def default_value(c: Control) -> Any:
    if c.kind == "select":
        return c.default if c.default in c.options else c.options[0]
    if c.kind == "multiselect":
        default = c.default if isinstance(c.default, list) else ([c.default] if c.default is not None else [])
        return [v for v in default if v in c.options]
    if c.kind == "int":
        v = int(c.default) if c.default is not None else int(c.min or 0)
        return _clamp(v, c)
    if c.kind == "float":
        v = float(c.default) if c.default is not None else float(c.min or 0.0)
        return _clamp(v, c)
    if c.kind == "bool":
        return bool(c.default)
    if c.kind == "text":
        return "" if c.default is None else str(c.default)
    return c.default


def _clamp(v, c: Control):
    if c.min is not None:
        v = max(v, type(v)(c.min))
    if c.max is not None:
        v = min(v, type(v)(c.max))
    return v


def _valid(c: Control, v: Any) -> bool:
    if c.kind == "select":
        return v in c.options
    if c.kind == "multiselect":
        return isinstance(v, list) and all(x in c.options for x in v)
    if c.kind == "int":
        return isinstance(v, int) and not isinstance(v, bool) and _clamp(v, c) == v
    if c.kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and _clamp(float(v), c) == v
    if c.kind == "bool":
        return isinstance(v, bool)
    if c.kind == "text":
        return isinstance(v, str)
    return True


def store_key(lesson: int) -> str:
    return f"ctx::{lesson}"


def widget_key(lesson: int, name: str) -> str:
    return f"ctl::{lesson}::{name}"


def _reset(lesson: int, names: list[str]) -> None:
    state.forget(store_key(lesson), *(widget_key(lesson, n) for n in names))


def render_controls(lesson: int, specs: list[dict[str, Any]], where=None) -> tuple[dict[str, Any], list[str]]:
    """Draw the widgets (in ``where``, default the sidebar); return (ctx, spec problems)."""
    where = where if where is not None else st.sidebar
    controls, problems = parse_controls(specs)
    if not controls:
        return {}, problems
    remembered: dict[str, Any] = state.store(store_key(lesson), {})
    ctx: dict[str, Any] = {}
    with where:
        st.subheader("Controls")
        for c in controls:
            key = widget_key(lesson, c.name)
            initial = remembered.get(c.name, default_value(c))
            state.seed_widget(key, initial if _valid(c, initial) else default_value(c), lambda v, c=c: _valid(c, v))
            ctx[c.name] = _widget(c, key)
        st.button("Reset controls", key=f"reset::{lesson}", on_click=_reset,
                  args=(lesson, [c.name for c in controls]), help="Go back to the lesson's default values.")
    remembered.update(ctx)
    return ctx, problems


def _widget(c: Control, key: str) -> Any:
    if c.kind == "select":
        return st.selectbox(c.label, c.options, key=key, help=c.help, format_func=str)
    if c.kind == "multiselect":
        return st.multiselect(c.label, c.options, key=key, help=c.help, format_func=str)
    if c.kind == "int":
        if c.min is not None and c.max is not None and int(c.max) - int(c.min) <= SLIDER_MAX_RANGE \
                and int(c.max) > int(c.min):
            return st.slider(c.label, int(c.min), int(c.max), key=key, step=1, help=c.help)
        return st.number_input(c.label, min_value=None if c.min is None else int(c.min),
                               max_value=None if c.max is None else int(c.max), step=1, key=key, help=c.help)
    if c.kind == "float":
        step = float(c.step) if c.step is not None else None
        if c.min is not None and c.max is not None and float(c.max) > float(c.min):
            return st.slider(c.label, float(c.min), float(c.max), key=key,
                             step=step or (float(c.max) - float(c.min)) / 100, help=c.help)
        return st.number_input(c.label, min_value=None if c.min is None else float(c.min),
                               max_value=None if c.max is None else float(c.max), step=step or 0.1,
                               key=key, help=c.help)
    if c.kind == "bool":
        return st.toggle(c.label, key=key, help=c.help)
    if c.kind == "text":
        return st.text_input(c.label, key=key, help=c.help, max_chars=MAX_TEXT_CHARS)
    st.caption(f"{c.label}: {c.default!r} (fixed)")
    return c.default


def validate(specs: list[dict[str, Any]], ctx: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Clean ``ctx`` (text stripped) and list what is wrong with it, each with what to do."""
    controls, _ = parse_controls(specs)
    clean = dict(ctx)
    problems = []
    for c in controls:
        v = ctx.get(c.name)
        if c.kind == "text":
            text = " ".join(str(v or "").split())       # tabs / newlines / repeated spaces -> one space
            clean[c.name] = text
            example = f" e.g. `{c.default}`" if c.default else ""
            if not text:
                problems.append(f"**{c.label}** is empty. Type something in the sidebar{example}, "
                                "or press **Reset controls**.")
            elif len(text) > MAX_TEXT_CHARS:
                problems.append(f"**{c.label}** is {len(text)} characters long; the limit is "
                                f"{MAX_TEXT_CHARS}. Shorten it.")
            elif any(not ch.isprintable() for ch in text):
                problems.append(f"**{c.label}** contains control characters. Retype it using plain text.")
        elif c.kind == "multiselect" and not v and c.default:
            problems.append(f"**{c.label}**: choose at least one option in the sidebar, "
                            "or press **Reset controls**.")
        elif c.kind in ("int", "float", "select") and not _valid(c, v):
            problems.append(f"**{c.label}** has the value {v!r}, which is not allowed here. "
                            "Press **Reset controls**.")
    return clean, problems
