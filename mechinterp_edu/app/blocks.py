"""Draw one lesson step: its markdown, code cells, derivations, live charts and exercise cards.

Every block that computes something is wrapped: an error becomes one ``st.error``
line (what went wrong, what to do) and the rest of the page still renders.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from mechinterp_edu.app import cache, render
from mechinterp_edu.app.errors import explain, log_exception
from mechinterp_edu.lesson_source import Block, LessonStep

EXERCISES_PAGE = "mechinterp_edu/app/pages/exercises.py"


def render_step(step: LessonStep, *, lesson: int, ctx: dict[str, Any], ctx_ok: bool,
                large: bool = False) -> None:
    for block in step.blocks:
        render_block(block, lesson=lesson, ctx=ctx, ctx_ok=ctx_ok, large=large)


def render_block(block: Block, *, lesson: int, ctx: dict[str, Any], ctx_ok: bool, large: bool) -> None:
    if block.kind == "markdown":
        render.markdown(block.text)
    elif block.kind == "code":
        st.code(block.text, language="python")
    elif block.kind == "derivation":
        derivation_block(block.text)
    elif block.kind == "chart":
        chart_block(block.text, ctx=ctx, ctx_ok=ctx_ok, large=large)
    elif block.kind == "exercise":
        exercise_card(lesson, block.text)
    else:  # a kind added to the parser later: show its text rather than fail
        st.markdown(block.text)


def derivation_block(ref: str) -> None:
    name, _, step = ref.partition(":")
    name, step = name.strip(), step.strip() or None
    with st.container(border=True):
        try:
            derivation = cache.get_derivation(name)
            label = derivation.title + (f" — step `{step}`" if step else "")
            st.markdown(f"**Derivation:** {label}")
            results = cache.derivation_results(name, step)
        except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
            log_exception(exc, f"derivation {ref}")
            st.error(explain(exc, f"The derivation `{ref}`"), icon=":material/error:")
            return
        render.render_verdicts(results)


def chart_block(name: str, *, ctx: dict[str, Any], ctx_ok: bool, large: bool) -> None:
    with st.container(border=True):
        try:
            chart = cache.get_chart(name)
        except Exception as exc:  # noqa: BLE001
            log_exception(exc, f"live chart {name}")
            st.error(explain(exc, f"The live chart `{name}`"), icon=":material/error:")
            return
        st.markdown(f"**{chart.title}**")
        if chart.description:
            st.caption(chart.description)
        if not ctx_ok:
            st.warning("This live chart waits until the controls are fixed (see the message at the top).",
                       icon=":material/pause:")
            return
        try:
            with st.spinner(f"Computing {chart.title}..."):
                out = cache.live_output(name, ctx)
            render.render_output(out, large=large)
        except Exception as exc:  # noqa: BLE001
            log_exception(exc, f"live chart {name}")
            st.error(explain(exc, f"The live chart “{chart.title}”"), icon=":material/error:")


def exercise_card(lesson: int, name: str) -> None:
    from mechinterp_edu.grader.spec import exercises_for

    with st.container(border=True):
        st.markdown(f":material/edit_note: **Exercise: `{name}`**")
        exercise, failed = None, False
        try:
            exercise = next((e for e in exercises_for(lesson) if e.name == name), None)
        except Exception as exc:  # noqa: BLE001
            log_exception(exc, f"exercise {name}")
            failed = True
            st.caption(explain(exc, f"Grading for lesson {lesson}"))
        if exercise is not None:
            if exercise.summary:
                st.markdown(exercise.summary)
            stars = "★" * exercise.difficulty + "☆" * max(0, 3 - exercise.difficulty)
            st.caption(f"difficulty {stars} · about {exercise.minutes} min · {exercise.points} points")
        elif not failed:
            st.caption(f"`{name}` is not registered with the grader yet.")
        st.page_link(EXERCISES_PAGE, label="Open it on the Exercises page", icon=":material/arrow_forward:",
                     query_params={"lesson": str(lesson), "exercise": name})
