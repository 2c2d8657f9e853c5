"""Everything slow, cached: lesson sources, models, derivation verdicts, live outputs.

* Lesson sources: ``st.cache_data`` keyed by (path, mtime), so edits show on the next rerun.
* Models: ``st.cache_resource`` around :func:`mechinterp_edu.models.load_model`.
* Derivation verdicts (sympy is slow): ``st.cache_data`` keyed by (name, step).
* Live outputs: ``st.cache_data`` keyed by (chart name, frozen ctx); outputs that do not
  pickle fall back to ``st.cache_resource`` (never mutated by the renderers).

Charts and derivations are looked up through the course map in their own lesson's package
(``mechinterp_edu.lessons.<slug>`` for ``<slug>.name``), so that one lesson whose code is not
written yet does not break the others.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.caching.cache_errors import CacheError, UnserializableReturnValueError

from mechinterp_edu.lesson_source import Lesson, load_lesson


# --------------------------------------------------------------------------- lesson sources
@st.cache_data(show_spinner=False, max_entries=64)
def _parse_lesson(path: str, mtime_ns: int, fill: bool) -> Lesson:
    return load_lesson(Path(path), fill=fill)


def lesson_source(path: Path) -> Lesson:
    """Parse ``path`` (cached until the file changes). Raises LessonFormatError."""
    return _parse_lesson(str(path), path.stat().st_mtime_ns, True)


def lesson_outline(path: Path) -> Lesson:
    """The lesson's structure (front matter, steps) without computing its facts: for the course
    map, which must not pay for every lesson's numbers on its first load."""
    return _parse_lesson(str(path), path.stat().st_mtime_ns, False)


# --------------------------------------------------------------------------- models
@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def model(name: str):
    """The zoo model ``name`` on the course device, loaded once per server."""
    from mechinterp_edu.models import load_model

    return load_model(name)


# --------------------------------------------------------------------------- registries
def _lookup(kind: str, part: str, name: str, find):
    """``find(name)`` for a chart or derivation ``slug.name``; a lesson whose ``part`` module is not
    written yet raises ModuleNotFoundError naming it, a misspelt name a KeyError."""
    from mechinterp_edu import course

    if "." not in name:
        raise KeyError(f"{name!r} is not a {kind} name: expected 'lesson_slug.name', e.g. 'tensor_products.logits'.")
    slug = name.split(".", 1)[0]
    lesson = next((l for l in course.LESSONS if l.slug == slug), None)
    module = f"{lesson.module if lesson else 'mechinterp_edu.lessons.' + slug}.{part}"
    if lesson is None or lesson.part(part) is None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    try:
        return find(name)
    except KeyError:
        raise KeyError(f"The lesson refers to the {kind} {name!r}, but {module} does not "
                       "define it (check the spelling in the lesson source).") from None


def get_chart(name: str):
    """The live chart ``slug.name`` (imports only that lesson's charts module)."""
    from mechinterp_edu.live import registry

    return _lookup("live chart", "charts", name, registry.get_chart)


def get_derivation(name: str):
    from mechinterp_edu.derivations import framework

    return _lookup("derivation", "derivations", name, framework.get_derivation)


# --------------------------------------------------------------------------- derivations
@st.cache_data(show_spinner="Checking the derivation with sympy...", max_entries=256)
def derivation_results(name: str, step: str | None = None) -> list:
    """``check`` (all steps) or ``check_step`` (one step) of a registered derivation."""
    from mechinterp_edu.derivations.framework import check, check_step

    derivation = get_derivation(name)
    if step:
        return [check_step(derivation, derivation.step(step))]
    return check(derivation)


# --------------------------------------------------------------------------- live outputs
Frozen = tuple


def freeze(ctx: dict[str, Any]) -> Frozen:
    """A hashable, order-independent form of ``ctx`` (lists become tuples)."""
    def f(v):
        if isinstance(v, (list, tuple)):
            return tuple(f(x) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((k, f(x)) for k, x in v.items()))
        return v
    return tuple(sorted((k, f(v)) for k, v in ctx.items()))


def thaw(frozen: Frozen) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in frozen}


def _run_chart(name: str, frozen: Frozen):
    return get_chart(name).fn(thaw(frozen))


@st.cache_data(show_spinner=False, max_entries=512)
def _live_data(name: str, frozen: Frozen):
    return _run_chart(name, frozen)


@st.cache_resource(show_spinner=False, max_entries=128)
def _live_resource(name: str, frozen: Frozen):
    return _run_chart(name, frozen)


_UNPICKLABLE: set[str] = set()


def live_output(name: str, ctx: dict[str, Any]):
    """Compute a live chart for ``ctx``, cached. Exceptions propagate (they are not cached)."""
    frozen = freeze(ctx)
    if name not in _UNPICKLABLE:
        try:
            return _live_data(name, frozen)
        except Exception as exc:  # noqa: BLE001 - only a pickling failure falls through
            if not _is_pickling_failure(exc):
                raise
            _UNPICKLABLE.add(name)   # remembered: later calls go straight to cache_resource
    return _live_resource(name, frozen)


def _is_pickling_failure(exc: BaseException) -> bool:
    """st.cache_data could not pickle the output (Streamlit wraps some of these, not all:
    a local lambda raises a bare AttributeError "Can't pickle local object")."""
    while exc is not None:
        if isinstance(exc, (UnserializableReturnValueError, CacheError, pickle.PicklingError)):
            return True
        if isinstance(exc, (AttributeError, TypeError)) and "pickle" in str(exc).lower():
            return True
        exc = exc.__cause__
    return False


def clear_all() -> None:
    """Forget every cached value (the 'Clear caches' button)."""
    st.cache_data.clear()
    st.cache_resource.clear()
    _UNPICKLABLE.clear()
