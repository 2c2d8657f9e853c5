"""Home page: what the course is, the lesson map, the learner's progress, device and models."""
from __future__ import annotations

import streamlit as st

from mechinterp_edu.app import cache, progress
from mechinterp_edu.app.errors import explain, log_exception
from mechinterp_edu.app.navigation import lesson_st_page
from mechinterp_edu.course import LESSONS, LessonInfo

INTRO = """
A self-paced course on the **mechanistic interpretability of transformers**: read a small
transformer's weights as tensor products, split attention into **QK** and **OV** circuits,
recover planted **skip-trigrams**, prove what a **max-of-K** model computes, and decompose the
attention scores of an **IOI** circuit. Every lesson mixes text and LaTeX with live charts
computed on real (toy) models, sympy-checked derivations, and graded exercises.
"""


def home_page() -> None:
    st.set_page_config(layout="centered")
    st.title("mechinterp-edu")
    st.markdown(INTRO)
    report = progress.read()     # the grader's Progress, or None
    _lesson_map(report)
    _progress_section(report)
    _setup_section()


def lesson_facts(info: LessonInfo) -> dict:
    """Minutes and steps (from the lesson source), exercises and points (from the grader)."""
    facts = {"written": info.source_path.exists(), "minutes": None, "steps": None,
             "exercises": None, "points": None}
    if facts["written"]:
        try:
            lesson = cache.lesson_outline(info.source_path)
            facts["minutes"] = lesson.meta.get("minutes")
            facts["steps"] = len(lesson.steps)
        except Exception as exc:  # noqa: BLE001 - the lesson page explains the error
            log_exception(exc, f"lesson {info.number} source")
    try:
        from mechinterp_edu.grader.spec import exercises_for

        exercises = exercises_for(info.number)
        facts["exercises"] = len(exercises)
        facts["points"] = sum(e.points for e in exercises)
    except Exception:  # noqa: BLE001 - grading not written yet for this lesson
        pass
    return facts


def _lesson_map(report) -> None:
    st.header("Lessons", divider="gray")
    for info in LESSONS:
        facts = lesson_facts(info)
        with st.container(border=True):
            left, right = st.columns([3, 2], vertical_alignment="center")
            with left:
                st.page_link(lesson_st_page(info),
                             label=f"**{info.number}. {info.title}**", icon=":material/menu_book:")
                bits = []
                if not facts["written"]:
                    bits.append("not written yet")
                if facts["minutes"]:
                    bits.append(f"about {facts['minutes']} min")
                if facts["steps"]:
                    bits.append(f"{facts['steps']} steps")
                if facts["exercises"] is not None:
                    bits.append(f"{facts['exercises']} exercises ({facts['points']} points)")
                st.caption(" · ".join(bits) or "—")
            with right:
                done = report.lessons.get(info.number) if report is not None else None
                total = facts["points"] or (done.max_score if done else 0)
                if done and total:
                    st.progress(min(done.score / total, 1.0),
                                text=f"{done.score:g} / {total:g} points · {done.passed} passed")
                else:
                    st.caption("not attempted yet")


NO_PROGRESS = ("No progress recorded yet. Grade an exercise on the **Exercises** page "
               "(or run `python -m mechinterp_edu grade`) and it shows up here.")


def _progress_section(report) -> None:
    st.header("Your progress", divider="gray")
    if report is not None and report.warning:
        st.warning(f"The progress store could not be read: {report.warning}.", icon=":material/warning:")
    if report is None or not report.lessons:
        st.info(NO_PROGRESS, icon=":material/info:")
        return
    lessons = report.lessons.values()
    c1, c2 = st.columns(2)
    c1.metric("Points", f"{sum(l.score for l in lessons):g} / {sum(l.max_score for l in lessons):g}",
              help="Best score of every exercise graded so far, out of those exercises' points.")
    c2.metric("Exercises passed", f"{sum(l.passed for l in lessons)} / {sum(l.attempted for l in lessons)}")
    st.dataframe(progress.table(report), hide_index=True, width="stretch")
    last = (report.last_graded or "").replace("T", " ")
    st.caption(f"Last graded {last} · progress store `{report.path}`" if last else f"Progress store `{report.path}`")


def _setup_section() -> None:
    st.header("This machine", divider="gray")
    try:
        from mechinterp_edu.device import describe_device

        st.markdown(f"**Device:** {describe_device()}")
    except Exception as exc:  # noqa: BLE001 - DeviceError says which variable to fix
        st.error(explain(exc, "Choosing the compute device"), icon=":material/error:")
    st.markdown("**Models** (shipped toy checkpoints; nothing is downloaded while the app runs):")
    rows = _model_rows()
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    st.caption(gpt2_sentence())


def _model_rows() -> list[dict]:
    from mechinterp_edu.models.zoo import model_names

    rows = []
    for name in model_names():
        row = {"model": name, "lessons": "", "checkpoint": "", "metric": ""}
        try:
            from mechinterp_edu.models.zoo import get_spec

            spec = get_spec(name)
            row["lessons"] = ", ".join(str(n) for n in spec.lessons)
            path = spec.checkpoint_path
            if path.exists():
                metrics = _checkpoint_metrics(name, path.stat().st_mtime_ns)
                row["checkpoint"] = f"{path.name} ({_size(path.stat().st_size)})"
                value = metrics.get(spec.headline_metric)
                row["metric"] = f"{spec.headline_metric} = {value:.4g}" if value is not None else ""
            else:
                row["checkpoint"] = f"missing: run `{spec.rebuild_command}`"
        except ModuleNotFoundError as exc:
            row["checkpoint"] = f"recipe not written yet ({exc.name})"
        except Exception as exc:  # noqa: BLE001
            row["checkpoint"] = explain(exc, "This model")
        rows.append(row)
    return rows


GPT2_DEFAULT = ("Lesson 5 uses the toy `ioi_small` model by default. GPT-2 small is used only where its "
                "weights are already on this machine; the app never downloads it.")


@st.cache_data(show_spinner=False, ttl=600)
def gpt2_sentence() -> str:
    """One sentence on GPT-2 small: a local cache look-up only, never a download."""
    try:
        from mechinterp_edu.models import gpt2

        check = getattr(gpt2, "gpt2_small_available", None) or getattr(gpt2, "_weights_in_local_cache", None)
        if check is None:
            return GPT2_DEFAULT
        if check():
            return "GPT-2 small's weights are on this machine: lesson 5 can use them next to the toy `ioi_small`."
        return ("GPT-2 small's weights are not on this machine (the app never downloads them), so lesson 5 "
                "uses its toy model `ioi_small`.")
    except Exception:  # noqa: BLE001 - a one-line fact on the home page must not break it
        return GPT2_DEFAULT


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


@st.cache_data(show_spinner=False, max_entries=16)
def _checkpoint_metrics(name: str, mtime_ns: int) -> dict:
    from mechinterp_edu.models.zoo import read_checkpoint

    try:
        return dict(read_checkpoint(name).get("metrics", {}))
    except Exception:  # noqa: BLE001 - shown as "unreadable" by the caller
        return {}
