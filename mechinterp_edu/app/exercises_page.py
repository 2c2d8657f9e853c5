"""Exercises page: choose an exercise, edit or upload a solution, grade it, read the feedback.

The learner's text is kept in session state per lesson (``ex::text::<n>``): switching
pages, uploading a file (the previous text stays one click away) or a failed grading
run never loses it. Saving to ``exercises/NN_slug.py`` needs a confirmation and is atomic.
Grading goes through :func:`mechinterp_edu.grader.grade.grade_source` (sandboxed) on one
long-lived thread; the report is then recorded with the grader's
:func:`mechinterp_edu.grader.progress.record_report` and shows up on the home page.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import streamlit as st

from mechinterp_edu.app import progress, state
from mechinterp_edu.app.errors import explain, log_exception
from mechinterp_edu.app.exercise_files import (
    MAX_UPLOAD_BYTES,
    ExerciseFileError,
    function_docs,
    save_atomically,
    syntax_problem,
    upload_to_source,
)
from mechinterp_edu.course import LESSONS, get_lesson


def _k(kind: str, lesson: int) -> str:
    return f"ex::{kind}::{lesson}"


def exercises_page() -> None:
    st.set_page_config(layout="centered")
    st.title("Exercises")
    st.caption("Pick an exercise, write your solution (or upload your .py / .ipynb), then grade it. "
               "Your text is kept while you move around the app.")
    _apply_query()
    number = _choose_lesson()
    info = get_lesson(number)
    exercises, problem = _exercises(number)
    stub = info.exercise_path.read_text(encoding="utf-8") if info.exercise_path.exists() else None
    if problem:
        st.info(problem, icon=":material/construction:")
    if not exercises and stub is None:
        st.info(f"Lesson {number} has no exercises yet: `exercises/{info.exercise_path.name}` "
                "does not exist.", icon=":material/construction:")
        return
    docs = _docs(stub)
    names = [e.name for e in exercises] or list(docs)
    if not names:
        st.info(f"`exercises/{info.exercise_path.name}` defines no functions yet.")
        return
    name = _choose_exercise(number, names)
    _exercise_card(next((e for e in exercises if e.name == name), None), docs.get(name), name)
    _best_so_far(number, name)
    text = _editor(number, info, stub)
    _grade_section(number, name, text, graded=bool(exercises))
    _save_section(number, info, text)


# --------------------------------------------------------------------------- choosing
def _apply_query() -> None:
    """A link from a lesson page (``?lesson=1&exercise=name``) selects that exercise once."""
    lesson, name = st.query_params.get("lesson"), st.query_params.get("exercise")
    if lesson and str(lesson).isdigit() and int(lesson) in [l.number for l in LESSONS]:
        n = int(lesson)
        st.session_state["ex::lesson"] = st.session_state["ex::lesson::value"] = n
        if name:
            st.session_state[_k("name", n)] = st.session_state[f"{_k('name', n)}::value"] = name
    if lesson or name:
        st.query_params.clear()


def _choose_lesson() -> int:
    numbers = [l.number for l in LESSONS]
    key = "ex::lesson"
    state.seed_widget(key, state.store(f"{key}::value", numbers[0]), lambda v: v in numbers)
    number = st.selectbox("Lesson", numbers, key=key, format_func=lambda n: f"{n}. {get_lesson(n).title}")
    st.session_state[f"{key}::value"] = number
    return number


def _choose_exercise(number: int, names: list[str]) -> str:
    key = _k("name", number)
    remembered = state.store(f"{key}::value", names[0])
    state.seed_widget(key, remembered if remembered in names else names[0], lambda v: v in names)
    name = st.selectbox("Exercise", names, key=key)
    st.session_state[f"{key}::value"] = name
    return name


def _exercises(number: int):
    try:
        from mechinterp_edu.grader.spec import exercises_for

        return exercises_for(number), None
    except Exception as exc:  # noqa: BLE001
        log_exception(exc, f"exercises of lesson {number}")
        return [], explain(exc, f"Grading for lesson {number}")


def _docs(stub: str | None):
    if stub is None:
        return {}
    try:
        return function_docs(stub)
    except SyntaxError:
        return {}


def _exercise_card(exercise, doc, name: str) -> None:
    with st.container(border=True):
        if exercise is not None:
            stars = "★" * exercise.difficulty + "☆" * max(0, 3 - exercise.difficulty)
            st.markdown(f"**`{name}`** — {exercise.summary or ''}")
            st.caption(f"difficulty {stars} · about {exercise.minutes} min · {exercise.points} points")
        else:
            st.markdown(f"**`{name}`**")
        if doc is not None:
            st.code(doc.signature + ("\n    " + '"""' + doc.docstring.replace("\n", "\n    ") + '"""'
                                     if doc.docstring else ""), language="python", wrap_lines=True)


def _best_so_far(number: int, name: str) -> None:
    record = progress.read()
    entry = record.exercise(number, name) if record is not None else None
    if entry is not None:
        mark = "passed" if entry.passed else "not passed yet"
        st.caption(f"Your best so far: {entry.best_score:g} / {entry.max_score:g} points ({mark}, "
                   f"{entry.attempts} attempt{'s' if entry.attempts != 1 else ''}).")


# --------------------------------------------------------------------------- editing
def _on_upload(number: int) -> None:
    upload = st.session_state.get(_k("upload", number))
    if upload is None:
        return
    try:
        source = upload_to_source(upload.name, upload.getvalue())
    except ExerciseFileError as exc:
        st.session_state[_k("upload_msg", number)] = ("error", str(exc))
        return
    _replace_text(number, source)
    st.session_state[_k("upload_msg", number)] = (
        "success", f"Loaded {upload.name} into the editor. Your previous text is kept: press "
                   "**Undo** to get it back.")


def _replace_text(number: int, new: str) -> None:
    old = st.session_state.get(_k("text", number), "")
    if old != new:
        st.session_state[_k("previous", number)] = old
    st.session_state[_k("text", number)] = new
    st.session_state[_k("editor", number)] = new


def _reload(number: int, path) -> None:
    if path.exists():
        _replace_text(number, path.read_text(encoding="utf-8"))


def _undo(number: int) -> None:
    previous = st.session_state.pop(_k("previous", number), None)
    if previous is not None:
        _replace_text(number, previous)
        st.session_state.pop(_k("previous", number), None)
        st.session_state[_k("upload_msg", number)] = ("success", "Restored your previous text.")


EDITOR_CSS = ("<style>[data-testid='stTextArea'] textarea {font-family: 'Source Code Pro', ui-monospace, "
              "monospace; font-size: 0.85rem; line-height: 1.45;}</style>")


def _editor(number: int, info, stub: str | None) -> str:
    st.subheader("Your solution")
    text = state.store(_k("text", number), stub or "")
    state.seed_widget(_k("editor", number), text)
    st.file_uploader("Upload a .py or .ipynb (replaces the text below; Undo brings it back)",
                     type=["py", "ipynb"], key=_k("upload", number), on_change=_on_upload, args=(number,),
                     max_upload_size=max(1, MAX_UPLOAD_BYTES // 1_000_000))
    msg = st.session_state.pop(_k("upload_msg", number), None)
    if msg:
        (st.error if msg[0] == "error" else st.success)(msg[1])
    st.html(EDITOR_CSS)
    text = st.text_area(f"The whole file `exercises/{info.exercise_path.name}` (edit here, then Grade)",
                        key=_k("editor", number), height=420)
    st.session_state[_k("text", number)] = text
    c1, c2, _ = st.columns([1, 1, 2])
    c1.button("Reload from file", key=_k("reload", number), on_click=_reload, args=(number, info.exercise_path),
              disabled=not info.exercise_path.exists(),
              help=f"Replace the text with exercises/{info.exercise_path.name} (Undo brings it back).")
    c2.button("Undo", key=_k("undo", number), on_click=_undo, args=(number,),
              disabled=_k("previous", number) not in st.session_state,
              help="Bring back the text you had before the last upload or reload.")
    return text


# --------------------------------------------------------------------------- grading
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _grader_thread() -> ThreadPoolExecutor:
    """One long-lived grading thread for the whole server.

    Streamlit runs every script run in a new thread. The grader's sandbox server is a child
    process that dies with the *thread* that started it (PR_SET_PDEATHSIG), so grading from
    a script-run thread would kill it after every run (and a quick second grade could meet a
    dying server). Grading on this thread keeps it alive and warm between runs.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mechinterp-grader")
        return _POOL


def _grade_section(number: int, name: str, text: str, graded: bool) -> None:
    st.subheader("Grade")
    if not graded:
        st.info(f"The grader does not know lesson {number}'s exercises yet, so nothing can be graded.")
        return
    c1, c2 = st.columns(2)
    one = c1.button(f"Grade `{name}`", key=_k("grade_one", number), type="primary", width="stretch")
    every = c2.button("Grade every exercise of this lesson", key=_k("grade_all", number), width="stretch")
    if one or every:
        _grade(number, text, [name] if one else None)
    report = st.session_state.get(_k("report", number))
    if report is not None:
        _show_report(*report)


def _grade(number: int, text: str, only: list[str] | None) -> None:
    st.session_state.pop(_k("report", number), None)
    if not text.strip():
        st.error("There is no code to grade: the editor is empty. Write your solution, upload a file, "
                 "or press **Reload from file**.", icon=":material/error:")
        return
    problem = syntax_problem(text)
    if problem:
        st.error(f"Your code has a syntax error ({problem}). Fix it and grade again; "
                 "nothing was graded or recorded.", icon=":material/error:")
        return
    try:
        from mechinterp_edu.grader.grade import grade_source

        with st.spinner("Grading (your code runs in a sandbox)..."):
            report = _grader_thread().submit(grade_source, text, number, exercises=only).result()
    except Exception as exc:  # noqa: BLE001
        log_exception(exc, "grading")
        st.error(explain(exc, "Grading") + " Your text is unchanged.", icon=":material/error:")
        return
    saved = progress.record(report)          # the grader's store: merged, atomic
    st.session_state[_k("report", number)] = (report, only, saved)


def _show_report(report, only, saved) -> None:
    scope = f"`{only[0]}`" if only else "every exercise"
    st.metric(f"Score ({scope})", f"{report.score:g} / {report.max_score:g} points")
    if saved:
        st.warning(saved, icon=":material/warning:")
    else:
        st.caption("Recorded in your progress (see the Home page).")
    for r in report.results:
        with st.container(border=True):
            badge = ":green-badge[:material/check: passed]" if r.passed else ":red-badge[:material/close: not yet]"
            st.markdown(f"{badge} **`{r.exercise}`** — {r.score:g} / {r.max_score:g} points")
            if r.feedback:
                # The grader's feedback is plain text with `code` spans: keep its line breaks.
                st.markdown(r.feedback.replace("$", "\\$").replace("\n", "  \n"))


# --------------------------------------------------------------------------- saving
def _save_section(number: int, info, text: str) -> None:
    path = info.exercise_path
    with st.expander(f"Save to exercises/{path.name}"):
        st.caption("Writes the editor's text to the file (atomically: the old file stays intact if anything "
                   "goes wrong).")
        sure = st.checkbox(f"Yes, overwrite exercises/{path.name}", key=_k("confirm", number))
        if st.button("Save", key=_k("save", number), disabled=not sure, icon=":material/save:"):
            try:
                save_atomically(path, text)
            except OSError as exc:
                st.error(f"Could not write {path}: {exc.strerror or exc}. Check that the folder is writable; "
                         "your text is still in the editor.", icon=":material/error:")
                return
            problem = syntax_problem(text)
            st.success(f"Saved {len(text.splitlines())} lines to exercises/{path.name}.")
            if problem:
                st.warning(f"Saved, but the file has a syntax error ({problem}).")
