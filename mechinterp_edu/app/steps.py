"""One step at a time: which step of a lesson is shown, the URL, and the Back / Next row.

The current step of each lesson lives in session state (``step::<lesson>``) and in the URL
(``?step=<key>``), so a step can be linked to, survives reruns (a control change re-runs the
same step) and page switches. Classroom mode further cuts a step into slides
(``slide::<lesson>``); Back / Next then move by slide.

Keyboard: PageDown / PageUp (presenter clickers) and the Right / Left arrows press Next / Back.
"""
from __future__ import annotations

import streamlit as st

from mechinterp_edu.app import state

LAST = -1   # "the last slide of the step" (Back from a step's first slide)
LAST_WRITTEN = "step::url::written"


def step_key(lesson: int) -> str:
    return f"step::{lesson}"


def slide_key(lesson: int) -> str:
    return f"slide::{lesson}"


def jump_key(lesson: int) -> str:
    return f"jump::{lesson}"


def _url_key(lesson: int) -> str:
    return f"step::url::{lesson}"


def current_step(lesson: int, keys: list[str]) -> int:
    """The step to show: a new ``?step=`` in the URL wins, else the remembered one."""
    wanted = st.query_params.get("step")
    written = st.session_state.get(LAST_WRITTEN)          # (lesson, key) this session put in the URL
    carried_over = written is not None and written[0] != lesson and written[1] == wanted
    if wanted is not None and wanted != st.session_state.get(_url_key(lesson)) and wanted in keys \
            and not carried_over:
        goto(lesson, keys.index(wanted))
    i = min(max(int(state.store(step_key(lesson), 0)), 0), len(keys) - 1)
    st.session_state[step_key(lesson)] = i
    st.session_state[_url_key(lesson)] = keys[i]
    if st.query_params.get("step") != keys[i]:
        st.query_params["step"] = keys[i]
    st.session_state[LAST_WRITTEN] = (lesson, keys[i])
    return i


def current_slide(lesson: int, count: int) -> int:
    j = int(state.store(slide_key(lesson), 0))
    j = count - 1 if j == LAST else min(max(j, 0), count - 1)
    st.session_state[slide_key(lesson)] = j
    return j


def goto(lesson: int, i: int, slide: int = 0) -> None:
    st.session_state[step_key(lesson)] = i
    st.session_state[jump_key(lesson)] = i
    st.session_state[slide_key(lesson)] = slide


def _move(lesson: int, delta: int, count: int, slides: int) -> None:
    i = int(st.session_state.get(step_key(lesson), 0))
    j = int(st.session_state.get(slide_key(lesson), 0))
    if 0 <= j + delta < slides:
        st.session_state[slide_key(lesson)] = j + delta
    elif 0 <= i + delta < count:
        goto(lesson, i + delta, 0 if delta > 0 else LAST)


def _jump(lesson: int) -> None:
    goto(lesson, int(st.session_state[jump_key(lesson)]))


def nav_row(lesson: int, i: int, titles: list[str], *, slide: int = 0, slides: int = 1) -> None:
    """Back | step list (a select box: every step, the current one shown) | Next."""
    count = len(titles)
    first, last = i == 0 and slide == 0, i == count - 1 and slide == slides - 1
    back, middle, nxt = st.columns([2, 5, 2], vertical_alignment="center")
    with back:
        st.button("Back", key=f"back::top::{lesson}", icon=":material/arrow_back:", disabled=first,
                  on_click=_move, args=(lesson, -1, count, slides), width="stretch", help="Keys: ← or PageUp")
    with middle, st.container(horizontal=True, vertical_alignment="center", gap="small"):
        st.session_state[jump_key(lesson)] = i     # always: a page switch gives the widget a new id
        st.selectbox("Step", range(count), key=jump_key(lesson), label_visibility="collapsed",
                     format_func=lambda k: f"Step {k + 1} of {count} · {titles[k]}", on_change=_jump,
                     args=(lesson,))
        if slides > 1:
            st.markdown(f"<span style='white-space:nowrap'>part {slide + 1}/{slides}</span>",
                        unsafe_allow_html=True, width="content")
    with nxt:
        st.button("Next", key=f"next::top::{lesson}", icon=":material/arrow_forward:", icon_position="right",
                  disabled=last, on_click=_move, args=(lesson, +1, count, slides), width="stretch",
                  help="Keys: → or PageDown")
    with st.container(key="keyboard"):        # hidden (style.py): the keys, one button each
        for name, delta, keys in (("Back", -1, ("Left", "PageUp")), ("Next", +1, ("Right", "PageDown"))):
            for k in keys:
                st.button(name, key=f"{name.lower()}::{k}::{lesson}", disabled=first if delta < 0 else last,
                          on_click=_move, args=(lesson, delta, count, slides), shortcut=k)


def bottom_row(lesson: int, i: int, titles: list[str]) -> None:
    """Under a step (reader layout): Next with the next step's title."""
    if i + 1 < len(titles):
        st.button(f"Next: {titles[i + 1]}", key=f"next::bottom::{lesson}", icon=":material/arrow_forward:",
                  icon_position="right", on_click=goto, args=(lesson, i + 1), type="secondary")
