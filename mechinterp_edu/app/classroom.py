"""Classroom mode: one step at a time, Next/Back, a step counter, large charts.

The current step of each lesson is kept in session state (``step::<lesson>``), so it
survives reruns (a control change re-runs the live computation of the same step)
and page switches.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from mechinterp_edu.app import state
from mechinterp_edu.app.blocks import render_step
from mechinterp_edu.lesson_source import Lesson


def step_key(lesson: int) -> str:
    return f"step::{lesson}"


def jump_key(lesson: int) -> str:
    return f"jump::{lesson}"


def _move(lesson: int, delta: int, count: int) -> None:
    i = min(max(int(st.session_state.get(step_key(lesson), 0)) + delta, 0), count - 1)
    st.session_state[step_key(lesson)] = i
    st.session_state[jump_key(lesson)] = i


def _jump(lesson: int) -> None:
    st.session_state[step_key(lesson)] = int(st.session_state[jump_key(lesson)])


def current_step(lesson: int, count: int) -> int:
    i = int(state.store(step_key(lesson), 0))
    i = min(max(i, 0), count - 1)
    st.session_state[step_key(lesson)] = i
    return i


def _nav_row(lesson: int, i: int, count: int, title: str, where: str) -> None:
    # Presenter clickers send PageDown / PageUp: they drive the top row's buttons.
    keys = {"back": "PageUp", "next": "PageDown"} if where == "top" else {"back": None, "next": None}
    back, middle, nxt = st.columns([1, 3, 1], vertical_alignment="center")
    with back:
        st.button("Back", key=f"back::{where}::{lesson}", icon=":material/arrow_back:", disabled=i == 0,
                  on_click=_move, args=(lesson, -1, count), width="stretch", shortcut=keys["back"])
    with middle:
        st.markdown(f"<div style='text-align:center'><b>Step {i + 1} of {count}</b> · {title}</div>",
                    unsafe_allow_html=True)
        st.progress((i + 1) / count)
    with nxt:
        st.button("Next", key=f"next::{where}::{lesson}", icon=":material/arrow_forward:",
                  icon_position="right", disabled=i == count - 1,
                  on_click=_move, args=(lesson, +1, count), width="stretch", shortcut=keys["next"])


def render_classroom(lesson: Lesson, *, ctx: dict[str, Any], ctx_ok: bool) -> None:
    steps = lesson.steps
    if not steps:
        st.info("This lesson has no steps yet.")
        return
    n = lesson.number
    i = current_step(n, len(steps))
    labels = [f"{k + 1}. {s.title}" for k, s in enumerate(steps)]
    state.seed_widget(jump_key(n), i, lambda v: v == i)
    st.sidebar.selectbox("Jump to step", range(len(steps)), format_func=lambda k: labels[k],
                         key=jump_key(n), on_change=_jump, args=(n,))
    step = steps[i]
    _nav_row(n, i, len(steps), step.title, "top")
    st.header(step.title, anchor=f"step-{step.key}")
    render_step(step, lesson=n, ctx=ctx, ctx_ok=ctx_ok, large=True)
    st.divider()
    _nav_row(n, i, len(steps), step.title, "bottom")
