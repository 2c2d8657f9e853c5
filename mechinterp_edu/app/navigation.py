"""The app's pages: URL paths, titles, icons, sections. ``app.py`` runs :func:`navigation`.

Every page is a small file in ``mechinterp_edu/app/pages/`` (so tests can open each one
with ``AppTest.switch_page``); lesson pages are generated from the course map.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from mechinterp_edu.course import LESSONS, LessonInfo

PAGES_DIR = Path(__file__).resolve().parent / "pages"


def lesson_url(lesson: LessonInfo) -> str:
    return f"lesson-{lesson.number}"


def lesson_page_file(lesson: LessonInfo) -> Path:
    return PAGES_DIR / f"lesson_{lesson.number:02d}.py"


def page_urls() -> dict[str, Path]:
    """URL path (without the leading slash; "" is home) -> page file."""
    urls = {"": PAGES_DIR / "home.py"}
    for lesson in LESSONS:
        urls[lesson_url(lesson)] = lesson_page_file(lesson)
    urls["exercises"] = PAGES_DIR / "exercises.py"
    urls["classroom"] = PAGES_DIR / "classroom.py"
    return urls


def pages() -> dict[str, list[st.Page]]:
    home = st.Page(PAGES_DIR / "home.py", title="Home", icon=":material/home:", default=True)
    lessons = [st.Page(lesson_page_file(l), title=f"{l.number}. {l.title}", url_path=lesson_url(l),
                       icon=":material/menu_book:") for l in LESSONS]
    practice = [
        st.Page(PAGES_DIR / "exercises.py", title="Exercises", url_path="exercises", icon=":material/edit_note:"),
        st.Page(PAGES_DIR / "classroom.py", title="Classroom mode", url_path="classroom",
                icon=":material/co_present:"),
    ]
    return {"Course": [home], "Lessons": lessons, "Practice": practice}


def navigation():
    return st.navigation(pages(), position="sidebar", expanded=True)
