"""Helpers for the AppTest tests of the app (tests/test_app_pages.py, tests/test_app_fixture.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
PAGES = "mechinterp_edu/app/pages"
TIMEOUT = 240  # first runs import torch / load models / run sympy on a shared 2-core machine


def new_app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def goto(at: AppTest, page: str) -> AppTest:
    """Open a page: a file page by its stem ("exercises"), a lesson page as "lesson_01"."""
    if page.startswith("lesson_"):       # lesson pages are callables from the course map, found by URL
        url = f"lesson-{int(page.split('_')[1])}"
        hashes = [h for h, info in at._registered_pages.items() if info.get("url_pathname") == url]
        assert hashes, f"no page at /{url}"
        at._page_hash = hashes[0]
        return at.run()
    return at.switch_page(f"{PAGES}/{page}.py").run()


def texts(at: AppTest) -> list[str]:
    """Every piece of text on the page (titles, markdown, captions, alerts, code)."""
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "latex", "code",
                 "error", "warning", "info", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def assert_clean(at: AppTest) -> None:
    """No exception element and no traceback anywhere on screen."""
    assert not at.exception, [e.value for e in at.exception]
    for text in texts(at):
        assert "Traceback (most recent call last)" not in text, text


def widget_by_key(at: AppTest, key: str):
    for kind in ("selectbox", "slider", "number_input", "toggle", "text_input", "multiselect", "radio"):
        for widget in getattr(at, kind):
            if widget.key == key:
                return widget
    raise KeyError(f"no widget with key {key!r}")


def errors(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error]


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def jump(at: AppTest, lesson: int, i: int) -> AppTest:
    return at.selectbox(key=f"jump::{lesson}").set_value(i).run()


def step_shown(at: AppTest, lesson: int) -> int:
    return at.selectbox(key=f"jump::{lesson}").value


def next_until_last(at: AppTest, lesson: int, limit: int = 400) -> list[tuple[int, int]]:
    """Press Next (classroom mode) until it is disabled; the (step, slide) positions visited."""
    seen = []
    for _ in range(limit):
        seen.append((step_shown(at, lesson), at.session_state[f"slide::{lesson}"]))
        if at.button(key=f"next::top::{lesson}").disabled:
            return seen
        at.button(key=f"next::top::{lesson}").click().run()
        assert_clean(at)
    raise AssertionError(f"Next never reached the end after {limit} presses")
