"""Draw one lesson step: its markdown, code cells, derivations, live charts and exercise cards.

Every block that computes something is wrapped: an error becomes one ``st.error``
line (what went wrong, what to do) and the rest of the page still renders.
A derivation is one line (its title and sympy's verdict) with the steps in an expander; a
code cell has a Run button (see :mod:`.code_cells`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from mechinterp_edu.app import cache, render
from mechinterp_edu.app.code_cells import CellRun, Kernel
from mechinterp_edu.app.errors import explain, log_exception
from mechinterp_edu.lesson_source import Block, Lesson, LessonStep

EXERCISES_PAGE = "mechinterp_edu/app/pages/exercises.py"


@dataclass
class PageContext:
    """What a block needs to know about the page it is on."""
    lesson: int
    ctx: dict[str, Any]
    ctx_ok: bool
    large: bool = False
    source: Lesson | None = None                 # the whole lesson (code cells run in order)
    link: render.StepLink | None = None          # derivation name -> button to the step deriving it


def render_step(step: LessonStep, page: PageContext) -> None:
    for block in step.blocks:
        render_block(block, page)


def render_block(block: Block, page: PageContext) -> None:
    if block.kind == "markdown":
        render.markdown(block.text)
    elif block.kind == "code":
        code_block(block, page)
    elif block.kind == "derivation":
        derivation_block(block.text)
    elif block.kind == "chart":
        chart_block(block.text, page)
    elif block.kind == "exercise":
        exercise_card(page.lesson, block.text)
    else:  # a kind added to the parser later: show its text rather than fail
        st.markdown(block.text)


# --------------------------------------------------------------------------- code cells
def kernel(lesson: int) -> Kernel:
    key = f"kernel::{lesson}"
    if not isinstance(st.session_state.get(key), Kernel):
        st.session_state[key] = Kernel()
    return st.session_state[key]


def code_block(block: Block, page: PageContext) -> None:
    st.code(block.text, language="python", wrap_lines=page.large)
    cells = [b for s in page.source.steps for b in s.blocks if b.kind == "code"] if page.source else [block]
    index = next((i for i, b in enumerate(cells) if b.line == block.line), None)
    if index is None:
        return
    k = kernel(page.lesson)
    pending = [i + 1 for i in range(index) if i not in k.done]
    help_ = ("Runs this cell in your own namespace for this lesson"
             + (f", after cell(s) {', '.join(map(str, pending))} above it, which define what it uses." if pending
                else "."))
    texts = [b.text for b in cells]
    st.button("Run", key=f"run::{page.lesson}::{block.line}", icon=":material/play_arrow:", help=help_,
              on_click=_run_cell, args=(page.lesson, texts, index))
    result = k.runs.get(index)
    if result is not None:
        show_run(result)


def _run_cell(lesson: int, cells: list[str], index: int) -> None:
    kernel(lesson).run(cells, index)


def show_run(result: CellRun) -> None:
    for note in result.notes:
        st.warning(note, icon=":material/warning:")
    if result.stdout:
        st.code(result.stdout.rstrip("\n"), language="text")
    if result.value is not None:
        st.code(result.value, language="text")
    if result.error:
        st.error(result.error, icon=":material/error:")
    elif not result.stdout and result.value is None:
        st.caption("(ran; no output)")


# --------------------------------------------------------------------------- derivations
def derivation_block(ref: str) -> None:
    name, _, step = ref.partition(":")
    name, step = name.strip(), step.strip() or None
    try:
        derivation = cache.get_derivation(name)
        title = derivation.title + (f" — step `{step}`" if step else "")
        results = cache.derivation_results(name, step)
    except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
        log_exception(exc, f"derivation {ref}")
        st.error(explain(exc, f"The derivation `{ref}`"), icon=":material/error:")
        return
    render.render_verdict_group(title, results, name=name)


# --------------------------------------------------------------------------- live charts
def chart_header(name: str, *, continued: bool = False):
    """The chart's registry entry after drawing its title (None, with an error shown, if unknown)."""
    try:
        chart = cache.get_chart(name)
    except Exception as exc:  # noqa: BLE001
        log_exception(exc, f"live chart {name}")
        st.error(explain(exc, f"The live chart `{name}`"), icon=":material/error:")
        return None
    st.markdown(f"**{chart.title}**" + (" (continued)" if continued else ""))
    if chart.description and not continued:
        st.caption(chart.description)
    return chart


def chart_output(name: str, page: PageContext, title: str):
    """The live output for the page's controls, or None after showing why there is none."""
    if not page.ctx_ok:
        st.warning("This live chart waits until the controls are fixed (see the message at the top).",
                   icon=":material/pause:")
        return None
    try:
        with st.spinner(f"Computing {title}..."):
            return cache.live_output(name, page.ctx)
    except Exception as exc:  # noqa: BLE001
        log_exception(exc, f"live chart {name}")
        st.error(explain(exc, f"The live chart “{title}”"), icon=":material/error:")
        return None


def chart_block(name: str, page: PageContext) -> None:
    with st.container(border=True):
        chart = chart_header(name)
        if chart is None:
            return
        out = chart_output(name, page, chart.title)
        if out is None:
            return
        try:
            render.render_output(out, large=page.large, link=page.link)
        except Exception as exc:  # noqa: BLE001
            log_exception(exc, f"live chart {name}")
            st.error(explain(exc, f"The live chart “{chart.title}”"), icon=":material/error:")


# --------------------------------------------------------------------------- exercises
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
