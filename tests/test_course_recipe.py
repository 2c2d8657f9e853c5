"""The "Adding a lesson" recipe of docs/architecture.md, followed literally: a fixture lesson is
written file by file into a temporary folder (its package on sys.path, its row added to the course
map), and then the engines find every part by convention and the app renders its page."""
from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from mechinterp_edu import course

ROOT = Path(__file__).resolve().parent.parent
SLUG, NUMBER, PACKAGE = "recipe_demo", 6, "recipe_demo_lesson"

FILES = {
    f"lessons/{NUMBER:02d}_{SLUG}.md": """\
        ---
        number: 6
        title: Recipe demo
        minutes: 5
        controls:
          - name: scale
            kind: int
            min: 1
            max: 5
            default: 2
            label: Scale
        ---
        A lesson written from the recipe.

        ::step double Doubling

        Doubling is multiplying by two.

        ::chart recipe_demo.table

        ::derivation recipe_demo.algebra

        ::exercise double
        """,
    f"exercises/{NUMBER:02d}_{SLUG}.py": '''\
        import torch


        def double(x: torch.Tensor) -> torch.Tensor:
            """Return 2 * x."""
            raise NotImplementedError("not implemented yet")
        ''',
    f"solutions/{NUMBER:02d}_{SLUG}.py": '''\
        import torch


        def double(x: torch.Tensor) -> torch.Tensor:
            """Return 2 * x."""
            return x + x
        ''',
    f"{PACKAGE}/__init__.py": '"""Fixture lesson 6, written from the recipe."""\n',
    f"{PACKAGE}/reference.py": '''\
        import torch


        def double(x: torch.Tensor) -> torch.Tensor:
            return 2 * x
        ''',
    f"{PACKAGE}/derivations.py": '''\
        import sympy as sp

        from mechinterp_edu.derivations.framework import Derivation, Step

        _x = sp.Symbol("x")
        DERIVATIONS = [Derivation("recipe_demo.algebra", "Doubling", (
            Step("sum", "x + x = 2x", lambda: _x + _x, lambda: 2 * _x),), lesson=6)]
        ''',
    f"{PACKAGE}/grading.py": '''\
        import torch

        from mechinterp_edu.grader.spec import Case, Exercise
        from recipe_demo_lesson import reference

        EXERCISES = [Exercise(6, "double", 2, reference.double,
                              lambda: [Case("small", (torch.arange(4.0),))], summary="Double x.")]
        ''',
    f"{PACKAGE}/charts.py": '''\
        import pandas as pd

        from mechinterp_edu.live.registry import LiveChart


        def _table(ctx):
            return pd.DataFrame({"x": [1, 2, 3], "scaled": [ctx["scale"] * v for v in (1, 2, 3)]})


        CHARTS = [LiveChart("recipe_demo.table", "A table", _table)]
        ''',
}


def _recipe_files() -> list[str]:
    """The files the "Adding a lesson" section tells a contributor to write."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Adding a lesson", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`((?:lessons|exercises|solutions|mechinterp_edu/lessons)/[^`]+\.(?:md|py))`", section)


def test_the_recipe_lists_the_files_the_fixture_writes():
    listed = {p.replace("NN", f"{NUMBER:02d}").replace("slug", SLUG).replace(f"mechinterp_edu/lessons/{SLUG}",
                                                                               PACKAGE) for p in _recipe_files()}
    optional = {f"{PACKAGE}/model.py"}          # only lessons that build a model
    assert listed - optional == set(FILES), sorted(listed ^ set(FILES))


@pytest.fixture
def recipe_lesson(tmp_path, monkeypatch):
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        monkeypatch.delitem(sys.modules, name)
    lesson = course.Lesson(NUMBER, SLUG, "Recipe demo", package=PACKAGE, root=tmp_path)
    monkeypatch.setattr(course, "LESSONS", course.LESSONS + (lesson,))
    return lesson


def test_engines_find_every_part_by_convention(recipe_lesson):
    from mechinterp_edu.derivations import check, get_derivation
    from mechinterp_edu.grader.grade import grade_file
    from mechinterp_edu.grader.spec import exercises_for
    from mechinterp_edu.lesson_source import load_lesson
    from mechinterp_edu.live import compute

    source = load_lesson(NUMBER)
    assert source.title == "Recipe demo" and source.refs("chart") == ["recipe_demo.table"]
    table = compute("recipe_demo.table")               # ctx defaults come from the lesson's controls
    assert list(table["scaled"]) == [2, 4, 6]
    assert all(r.passed for r in check(get_derivation("recipe_demo.algebra")))
    assert [e.name for e in exercises_for(NUMBER)] == ["double"]
    report = grade_file(recipe_lesson.solution_path, lesson=NUMBER)
    assert [(r.exercise, r.passed) for r in report.results] == [("double", True)]
    stub = grade_file(recipe_lesson.exercise_path, lesson=NUMBER)
    assert [r.passed for r in stub.results] == [False]


def test_the_app_renders_the_recipe_lesson(recipe_lesson):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    hashes = [h for h, info in at._registered_pages.items() if info.get("url_pathname") == f"lesson-{NUMBER}"]
    assert hashes, "the course map's new row did not become a page"
    at._page_hash = hashes[0]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == f"Lesson {NUMBER}: Recipe demo"
    assert [h.value for h in at.header] == ["1. Recipe demo"]   # one step at a time; the intro is step 1
    at.selectbox(key=f"jump::{NUMBER}").set_value(1).run()
    assert [h.value for h in at.header] == ["2. Doubling"]
    assert len(at.dataframe) == 1
    body = "\n".join(str(e.value) for kind in ("markdown", "caption", "latex", "success", "error", "warning")
                     for e in getattr(at, kind))
    assert "x + x = 2x" in body and "Traceback" not in body
