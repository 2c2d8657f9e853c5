"""A lesson page, drawn generically from ``lessons/NN_slug.md``.

Both layouts draw one step at a time (the browser only draws what is in view): the reader
layout (Back / step list / Next, the step's blocks) and classroom mode (projector sizes,
the step cut into slides that fit 1280x720, the sidebar collapsed). The URL names the step
(``?step=<key>``). The front-matter controls are drawn in the sidebar; their values are the
``ctx`` of every live chart, so changing a control re-runs the live computation (cached per
(chart, ctx)).
"""
from __future__ import annotations

import streamlit as st

from mechinterp_edu.app import cache, controls, state, steps, style
from mechinterp_edu.app.blocks import PageContext, render_step
from mechinterp_edu.app.classroom import render_classroom
from mechinterp_edu.app.errors import explain, log_exception
from mechinterp_edu.course import LessonInfo, get_lesson
from mechinterp_edu.lesson_source import Lesson

LAYOUTS = ("Reader", "Classroom")


def layout_key(lesson: int) -> str:
    return f"layout::{lesson}"


def lesson_page(number: int, *, classroom: bool | None = None) -> None:
    """Draw lesson ``number``. ``classroom=None`` lets the learner choose the layout."""
    info = get_lesson(number)
    lesson = _load(info)
    if lesson is None:
        st.set_page_config(layout="centered")
        return
    if classroom is None:
        classroom = _layout_choice(number) == "Classroom"
    st.set_page_config(layout="wide" if classroom else "centered",
                       initial_sidebar_state="collapsed" if classroom else "auto")
    style.apply(classroom=classroom)

    raw_ctx, spec_problems = controls.render_controls(number, lesson.controls)
    ctx = {**lesson.default_context(), **raw_ctx}
    ctx, problems = controls.validate(lesson.controls, ctx)
    _sidebar_tools()

    if classroom:   # the presenter's screen belongs to the step: the lesson is named in the sidebar
        st.sidebar.subheader(f"Lesson {number}: {lesson.title}", anchor=False)
    else:
        st.title(f"Lesson {number}: {lesson.title}")
    minutes = lesson.meta.get("minutes")
    if minutes and not classroom:
        st.caption(f"About {minutes} minutes · {len(lesson.steps)} steps · source `{info.source_path.name}`")
    for p in spec_problems:
        st.warning(p, icon=":material/warning:")
    for p in problems:
        st.error(p, icon=":material/error:")
    _check_models(info)

    page = PageContext(number, ctx, not problems, large=classroom, source=lesson,
                       link=_step_link(lesson))
    if classroom:
        render_classroom(lesson, page)
    else:
        render_reader(lesson, page)


def _load(info: LessonInfo) -> Lesson | None:
    path = info.source_path
    if not path.exists():
        st.title(f"Lesson {info.number}: {info.title}")
        st.info(f"This lesson is not written yet. Its source will be `lessons/{path.name}`; "
                "come back once it is there.", icon=":material/construction:")
        return None
    try:
        return cache.lesson_source(path)
    except Exception as exc:  # noqa: BLE001 - a broken source must not break the app
        log_exception(exc, f"lesson {info.number}")
        st.title(f"Lesson {info.number}: {info.title}")
        st.error(explain(exc, f"The lesson source `{path.name}`"), icon=":material/error:")
        return None


def _layout_choice(number: int) -> str:
    key = layout_key(number)
    remembered = state.store(f"{key}::value", LAYOUTS[0])
    state.seed_widget(key, remembered, lambda v: v in LAYOUTS)
    choice = st.sidebar.radio("Layout", LAYOUTS, key=key, horizontal=True,
                              help="Classroom: one step at a time, Next/Back, large charts.")
    st.session_state[f"{key}::value"] = choice
    return choice


def _sidebar_tools() -> None:
    with st.sidebar.expander("Troubleshooting"):
        st.caption("Live charts and derivation checks are cached. Clear the caches after retraining "
                   "a model or editing a lesson's code.")
        if st.button("Clear caches", key="clear-caches"):
            cache.clear_all()
            st.toast("Caches cleared.")


def _check_models(info: LessonInfo) -> None:
    """Load the lesson's models once (cached); a missing checkpoint gets one clear message up front."""
    for name in info.models:
        try:
            cache.model(name)
        except Exception as exc:  # noqa: BLE001
            log_exception(exc, f"model {name}")
            st.error(explain(exc, f"This lesson's model `{name}`"), icon=":material/error:")


def render_reader(lesson: Lesson, page: PageContext) -> None:
    """One step: Back / step list / Next, the step's heading and blocks, Next under it."""
    if not lesson.steps:
        st.info("This lesson has no steps yet.")
        return
    titles = [s.title for s in lesson.steps]
    i = steps.current_step(lesson.number, [s.key for s in lesson.steps])
    steps.nav_row(lesson.number, i, titles)
    step = lesson.steps[i]
    st.header(f"{i + 1}. {step.title}", anchor=f"step-{step.key}", divider="gray")
    render_step(step, page)
    steps.bottom_row(lesson.number, i, titles)


def _step_link(lesson: Lesson):
    """derivation name -> ("Step k: title", go there), for the first step that shows it."""
    first: dict[str, int] = {}
    for k, s in enumerate(lesson.steps):
        for ref in s.refs("derivation"):
            first.setdefault(ref.partition(":")[0].strip(), k)

    def link(name: str):
        k = first.get(name)
        if k is None:
            return None
        return f"Step {k + 1}: {lesson.steps[k].title}", lambda: steps.goto(lesson.number, k)
    return link


def classroom_page() -> None:
    """The presenter's page: pick a lesson, then step through it one step at a time."""
    from mechinterp_edu.course import LESSONS

    numbers = [l.number for l in LESSONS]
    wanted = st.query_params.get("lesson")
    if wanted is not None:
        if str(wanted).isdigit() and int(wanted) in numbers:   # /classroom?lesson=3 opens lesson 3 once
            st.session_state["classroom::lesson"] = st.session_state["classroom::lesson::value"] = int(wanted)
        del st.query_params["lesson"]
    remembered = state.store("classroom::lesson::value", numbers[0])
    state.seed_widget("classroom::lesson", remembered, lambda v: v in numbers)
    number = st.sidebar.selectbox("Lesson", numbers, key="classroom::lesson",
                                  format_func=lambda n: f"{n}. {get_lesson(n).title}")
    if st.session_state.get("classroom::lesson::value") not in (None, number) and "step" in st.query_params:
        del st.query_params["step"]          # the old lesson's step names nothing here
    st.session_state["classroom::lesson::value"] = number
    lesson_page(number, classroom=True)
