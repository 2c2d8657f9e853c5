"""Generated notebooks: valid nbformat v4, built from the lesson source, and every code cell runs."""
from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

from mechinterp_edu import notebooks
from mechinterp_edu.cli import main as cli_main
from mechinterp_edu.course import LESSONS, get_lesson
from mechinterp_edu.derivations import Derivation, Step, StepResult
from mechinterp_edu.lesson_source import load_lesson, parse_lesson

LESSON_IDS = [f"lesson{l.number:02d}" for l in LESSONS]
by_lesson = pytest.mark.parametrize("info", LESSONS, ids=LESSON_IDS)
CELL_TIMEOUT_S = 240

SYNTHETIC_LESSON = '''---
number: 1
title: Synthetic lesson
minutes: 5
controls:
  - {name: head, kind: int, min: 0, max: 3, default: 2}
  - {name: model, kind: select, options: [toy, random], default: toy}
---
Intro text with $x^2$.

::step first The first step
First step text, $$a = b$$.

```python
value = 40 + 2
```

::derivation demo.identity
::derivation demo.identity:second
::chart demo.picture

::step second Second step
::exercise add_one
More text after the exercise.
::exercise double
'''

SYNTHETIC_STUBS = '''"""Exercises for the synthetic lesson."""
from __future__ import annotations

import math

import torch

SCALE = 2


def helper(x):
    return x * SCALE


# Exercise: add one to every entry.
def add_one(x: torch.Tensor) -> torch.Tensor:
    """Return x + 1."""
    raise NotImplementedError("not implemented yet")


def double(x):
    """Return 2 x."""
    raise NotImplementedError("not implemented yet")


if __name__ == "__main__":
    print(add_one(torch.zeros(2)))
'''


class FakeExercise:
    def __init__(self, name, summary):
        self.name, self.summary, self.points, self.minutes = name, summary, 3, 15


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    monkeypatch.setattr(notebooks, "_exercise_summaries",
                        lambda number: {"add_one": FakeExercise("add_one", "Add one to x.")})
    lesson = parse_lesson(SYNTHETIC_LESSON, tmp_path / "01_synthetic.md")
    stubs = tmp_path / "01_synthetic.py"
    stubs.write_text(SYNTHETIC_STUBS, encoding="utf-8")
    return lesson, stubs


def _sources(nb, cell_type):
    return [c.source for c in nb.cells if c.cell_type == cell_type]


def _graded(nb):
    return [c for c in nb.cells if "graded" in c.metadata.get("tags", [])]


# --------------------------------------------------------------------------- builders (synthetic)
def test_synthetic_lesson_notebook(synthetic):
    lesson, _ = synthetic
    nb = notebooks.build_lesson_notebook(lesson)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec["name"] == "python3"
    markdown = _sources(nb, "markdown")
    code = _sources(nb, "code")
    assert markdown[0].startswith("# Lesson 1: Synthetic lesson")
    assert any(m.startswith("## The first step\n") and "$$a = b$$" in m for m in markdown)
    assert any(m.startswith("## Second step") for m in markdown)
    assert "Intro text with $x^2$." in markdown
    # the set-up cell carries the controls as ctx
    assert "pip" in code[0] and "find_spec(\"mechinterp_edu\")" in code[0], "the first cell installs the course"
    assert "ctx = {" in code[1] and "'head': 2" in code[1] and "'model': 'toy'" in code[1]
    assert "value = 40 + 2" in code
    assert "show_derivation('demo.identity')" in code
    assert "show_derivation('demo.identity', step='second')" in code
    assert any(c.endswith("show_live('demo.picture', ctx)") for c in code)
    pointers = [m for m in markdown if "add_one" in m]
    assert pointers and "Add one to x." in pointers[0] and "3 points" in pointers[0]
    assert any("double" in m for m in markdown)
    assert not _graded(nb), "the lesson notebook has nothing to grade"
    # order follows the source: the text after the exercise comes after its pointer
    joined = "\n".join(c.source for c in nb.cells)
    assert joined.index("add_one") < joined.index("More text after the exercise.") < joined.index("double")
    for source in code:
        compile(source, "cell", "exec")


def test_synthetic_exercise_notebook(synthetic):
    lesson, stubs = synthetic
    nb = notebooks.build_exercise_notebook(lesson, exercise_path=stubs)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec["name"] == "python3"
    graded = _graded(nb)
    assert len(graded) == 3  # set-up + two stubs
    setup = graded[0].source
    assert setup.startswith("from __future__ import annotations")
    assert "import math" in setup and "import torch" in setup and "SCALE = 2" in setup
    assert "def helper" in setup
    assert "__main__" not in "".join(c.source for c in nb.cells), "the main block calls the stubs"
    assert [ast.parse(c.source).body[0].name for c in graded[1:]] == ["add_one", "double"]
    assert "# Exercise: add one to every entry." in graded[1].source
    assert "Exercises for the synthetic lesson." in _sources(nb, "markdown")
    assert "python -m mechinterp_edu grade" in nb.cells[-1].source
    # the graded cells, run in order, define the functions and call nothing
    namespace: dict = {}
    for cell in graded:
        exec(compile(cell.source, "cell", "exec"), namespace)
    with pytest.raises(NotImplementedError):
        namespace["add_one"](0)
    assert namespace["helper"](3) == 6


def test_missing_stub_is_a_clear_error(synthetic, tmp_path):
    lesson, _ = synthetic
    path = tmp_path / "other.py"
    path.write_text("def add_one(x):\n    raise NotImplementedError\n", encoding="utf-8")
    with pytest.raises(notebooks.NotebookBuildError, match=r"other\.py.*'double'"):
        notebooks.build_exercise_notebook(lesson, exercise_path=path)
    with pytest.raises(notebooks.NotebookBuildError, match="does not exist"):
        notebooks.build_exercise_notebook(lesson, exercise_path=tmp_path / "nope.py")


def test_builds_are_deterministic(synthetic):
    lesson, stubs = synthetic
    first = nbformat.writes(notebooks.build_exercise_notebook(lesson, exercise_path=stubs))
    second = nbformat.writes(notebooks.build_exercise_notebook(lesson, exercise_path=stubs))
    assert first == second
    assert nbformat.writes(notebooks.build_lesson_notebook(lesson)) == \
        nbformat.writes(notebooks.build_lesson_notebook(lesson))


def test_an_invalid_notebook_is_caught_by_validate(synthetic):
    """The validation the tests rely on does reject a broken notebook."""
    lesson, _ = synthetic
    nb = notebooks.build_lesson_notebook(lesson)
    nb.cells[0]["cell_type"] = "bogus"
    with pytest.raises(nbformat.ValidationError):
        nbformat.validate(nb)


# --------------------------------------------------------------------------- display helpers
def _results(*passed):
    return [StepResult("demo.identity", f"s{i}", "a = a", ok, "detail", 0.0) for i, ok in enumerate(passed)]


def test_verdicts_text_and_markdown():
    verdicts = notebooks.DerivationVerdicts("Demo", _results(True, False))
    text = repr(verdicts)
    assert "[PROVEN] demo.identity:s0" in text and "[FAILED] demo.identity:s1" in text
    md = verdicts._repr_markdown_()
    assert "$\\displaystyle a = a$" in md and "PROVEN" in md and "FAILED" in md
    assert not verdicts.all_proven


def test_show_derivation_checks_with_sympy(monkeypatch, capsys):
    import sympy as sp
    from support import add_fake_lesson

    a = sp.Symbol("a")
    demo = Derivation("demo.identity", "Demo", (
        Step("good", "(a+1)^2", lambda: (a + 1) ** 2, lambda: a**2 + 2 * a + 1),
        Step("bad", "(a+1)^2", lambda: (a + 1) ** 2, lambda: a**2 + 1),
    ))
    add_fake_lesson(monkeypatch, "demo", derivations=[demo])
    notebooks.show_derivation("demo.identity")
    out = capsys.readouterr().out  # outside IPython, display() prints the text form
    assert "[PROVEN] demo.identity:good" in out and "[FAILED] demo.identity:bad" in out
    notebooks.show_derivation("demo.identity", step="good")
    out = capsys.readouterr().out
    assert "good" in out and "bad" not in out


def test_display_live_output_handles_every_output_kind(monkeypatch):
    import altair as alt
    import pandas as pd
    from IPython import display as ipd

    shown = []
    monkeypatch.setattr(ipd, "display", lambda obj: shown.append(obj))
    chart = alt.Chart(pd.DataFrame({"x": range(6000)})).mark_point().encode(x="x:Q")
    frame = pd.DataFrame({"a": [1]})
    notebooks.display_live_output(["## text", {"accuracy": 0.5}, frame, chart, _results(True)[0]])
    kinds = [type(o).__name__ for o in shown]
    assert kinds == ["Markdown", "Markdown", "DataFrame", "Chart", "DerivationVerdicts"]
    assert "accuracy" in shown[1].data and "0.5" in shown[1].data
    shown.clear()
    notebooks.display_live_output(_results(True, True))
    assert [type(o).__name__ for o in shown] == ["DerivationVerdicts"]
    # big charts display (altair's 5000-row limit is lifted for notebooks)
    chart.to_dict()


# --------------------------------------------------------------------------- real lessons
@by_lesson
def test_real_notebooks_validate_and_follow_the_source(info):
    lesson = load_lesson(info.number)
    nb = notebooks.build_lesson_notebook(info)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec["name"] == "python3"
    code = _sources(nb, "code")
    for block in lesson.refs("code"):
        assert block.strip("\n") in code, "every code block of the lesson is a code cell"
    for ref in lesson.refs("derivation"):
        assert any(repr(ref.partition(":")[0]) in c for c in code)
    for ref in lesson.refs("chart"):
        assert any(c.endswith(f"show_live({ref!r}, ctx)") for c in code)
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"
                and c.source.startswith("## ")]
    assert headings == [f"## {s.title}" for s in lesson.steps if s.key != "intro"]

    ex = notebooks.build_exercise_notebook(info)
    nbformat.validate(ex)
    defined = []
    for cell in _graded(ex)[1:]:
        body = ast.parse(cell.source).body
        assert all(isinstance(n, (ast.FunctionDef, ast.Expr)) for n in body), \
            "graded exercise cells only define functions"
        defined += [n.name for n in body if isinstance(n, ast.FunctionDef)]
    from mechinterp_edu.grader.spec import exercises_for
    assert sorted(defined) == sorted(e.name for e in exercises_for(info.number))


def test_notebooks_command_writes_valid_files(tmp_path, capsys):
    info = LESSONS[0]
    assert cli_main(["notebooks", "--out", str(tmp_path), "--lesson", str(info.number)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert written == sorted([f"{info.stem}.ipynb", f"{info.stem}_exercises.ipynb"])
    for path in tmp_path.glob("*.ipynb"):
        nbformat.validate(nbformat.read(path, as_version=4))


def test_notebooks_command_unknown_lesson(tmp_path, capsys):
    assert cli_main(["notebooks", "--out", str(tmp_path), "--lesson", "no_such_lesson"]) != 0
    assert "no_such_lesson" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.ipynb"))


# --------------------------------------------------------------------------- grading a notebook
@pytest.mark.slow
@by_lesson
def test_exercise_notebook_with_solutions_grades_full_marks(info, tmp_path):
    """Swap each graded stub for the worked solution: the grader gives full marks."""
    from mechinterp_edu.grader.grade import grade_file

    nb = notebooks.build_exercise_notebook(info)
    graded = _graded(nb)
    names = [ast.parse(cell.source).body[0].name for cell in graded[1:]]
    _, setup, functions = notebooks.split_exercise_file(info.solution_path, names)
    graded[0].source = setup
    for cell, name in zip(graded[1:], names):
        cell.source = functions[name]
    path = tmp_path / notebooks.exercise_notebook_name(info)
    nbformat.write(nb, path)
    report = grade_file(path, lesson=info.number)
    failed = [(r.exercise, r.feedback) for r in report.results if not r.passed]
    assert report.results and not failed, failed


# --------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec for *this* interpreter, so the notebooks run in the venv under test."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (mechinterp-edu tests)", "language": "python",
    }))
    return root


def _execute(nb, kernel_dir: Path, cwd: Path, monkeypatch) -> float:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(cwd / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(cwd / "ipython"))
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def _markdown(cell) -> str:
    return "\n".join(str(o.get("data", {}).get("text/markdown", "")) for o in cell.get("outputs", []))


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow
def test_synthetic_notebooks_run(synthetic, kernel_dir, tmp_path, monkeypatch):
    """The kernel machinery itself, independent of the real lessons."""
    lesson, stubs = synthetic
    runnable = parse_lesson(SYNTHETIC_LESSON.split("::derivation")[0] + "```python\nprint(value)\n```\n",
                            tmp_path / "01_synthetic.md")
    nb = notebooks.build_lesson_notebook(runnable)
    _execute(nb, kernel_dir, tmp_path, monkeypatch)
    assert "42" in _text(nb.cells[-1])
    assert "Computing on" in _text(nb.cells[2])
    ex = notebooks.build_exercise_notebook(lesson, exercise_path=stubs)
    ex.cells.append(nbformat.v4.new_code_cell("print(helper(21), callable(add_one), callable(double))",
                                              id="test-check"))
    _execute(ex, kernel_dir, tmp_path, monkeypatch)
    assert "42 True True" in _text(ex.cells[-1])


@pytest.mark.slow
@by_lesson
def test_lesson_notebook_runs(info, kernel_dir, tmp_path, monkeypatch):
    lesson = load_lesson(info.number)
    nb = notebooks.build_lesson_notebook(info)
    seconds = _execute(nb, kernel_dir, tmp_path, monkeypatch)
    print(f"{info.stem}.ipynb executed in {seconds:.1f} s")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"]
        if cell.source.startswith("show_derivation("):
            text = _text(cell)
            assert "[PROVEN]" in text and "[FAILED]" not in text, text
        if "show_live(" in cell.source:
            shown = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
            assert len(shown) >= 3, f"{cell.source}: the live chart displayed nothing"
            assert "```python\ndef " in _markdown(cell) or "```python\n@" in _markdown(cell), \
                "the chart shows the code that computes it"
    assert sum("show_live(" in c.source for c in nb.cells) == len(lesson.refs("chart"))


@pytest.mark.slow
@by_lesson
def test_exercise_notebook_runs(info, kernel_dir, tmp_path, monkeypatch):
    from mechinterp_edu.grader.spec import exercises_for

    nb = notebooks.build_exercise_notebook(info)
    names = [e.name for e in exercises_for(info.number)]
    # an extra cell checks that running the notebook defined every stub (and called none)
    nb.cells.append(nbformat.v4.new_code_cell(
        f"assert all(callable(globals()[n]) for n in {names!r})", id="test-check"))
    _execute(nb, kernel_dir, tmp_path, monkeypatch)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]


def test_notebook_charts_render_offline(monkeypatch):
    """Charts shown in notebooks must not need the network: by default they are drawn to
    SVG locally; the rendered output holds no <script src="http..."> and no CDN address."""
    import re

    import altair as alt
    import numpy as np
    from IPython import display as ipd

    from mechinterp_edu.charts import heatmap

    monkeypatch.delenv("MECHINTERP_EDU_NOTEBOOK_CHARTS", raising=False)
    monkeypatch.setattr(ipd, "display", lambda obj: None)
    chart = heatmap(np.arange(12.0).reshape(3, 4) - 5, title="offline")
    previous = alt.renderers.active
    try:
        notebooks.display_live_output(chart)
        bundle = alt.renderers.get()(chart.to_dict())
        bundle = bundle[0] if isinstance(bundle, tuple) else bundle
        assert list(bundle) == ["image/svg+xml"]
        svg = bundle["image/svg+xml"]
        assert svg.lstrip().startswith("<svg") and "<rect" in svg
        assert not re.search(r"src=[\"']https?://", svg) and "cdn." not in svg
    finally:
        alt.renderers.enable(previous)
