"""The app's pages: URL paths, titles, icons, sections. ``app.py`` runs :func:`navigation`.

Home, exercises and classroom are small files in ``mechinterp_edu/app/pages/``; lesson pages
come from the course map, one ``st.Page`` per lesson with a callable that renders it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import streamlit as st

from mechinterp_edu.course import Lesson

PAGES_DIR = Path(__file__).resolve().parent / "pages"


def lesson_url(lesson: Lesson) -> str:
    return f"lesson-{lesson.number}"


def lesson_renderer(lesson: Lesson) -> Callable[[], None]:
    """The callable that renders ``lesson``'s page (Streamlit names the page after it)."""
    def render() -> None:
        from mechinterp_edu.app.lesson_page import lesson_page
        lesson_page(lesson.number)
    render.__name__ = render.__qualname__ = f"lesson_{lesson.number:02d}"
    return render


def lesson_st_page(lesson: Lesson, **kwargs) -> st.Page:
    return st.Page(lesson_renderer(lesson), title=f"{lesson.number}. {lesson.title}",
                   url_path=lesson_url(lesson), icon=":material/menu_book:", **kwargs)


def page_urls() -> dict[str, Path | Lesson]:
    """URL path (without the leading slash; "" is home) -> page file, or the lesson a page renders."""
    from mechinterp_edu import course

    urls: dict[str, Path | Lesson] = {"": PAGES_DIR / "home.py"}
    for lesson in course.LESSONS:
        urls[lesson_url(lesson)] = lesson
    urls["exercises"] = PAGES_DIR / "exercises.py"
    urls["classroom"] = PAGES_DIR / "classroom.py"
    return urls


def pages() -> dict[str, list[st.Page]]:
    from mechinterp_edu import course

    home = st.Page(PAGES_DIR / "home.py", title="Home", icon=":material/home:", default=True)
    lessons = [lesson_st_page(l) for l in course.LESSONS]
    practice = [
        st.Page(PAGES_DIR / "exercises.py", title="Exercises", url_path="exercises", icon=":material/edit_note:"),
        st.Page(PAGES_DIR / "classroom.py", title="Classroom mode", url_path="classroom",
                icon=":material/co_present:"),
    ]
    return {"Course": [home], "Lessons": lessons, "Practice": practice}


def navigation():
    return st.navigation(pages(), position="sidebar", expanded=True)
