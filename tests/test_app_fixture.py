"""The app under AppTest with a fixture lesson (a lesson source in a temporary folder, with live
charts and a derivation that return every kind of live output, and ones that fail in known
ways): pins down exactly what the renderer shows (one step at a time, charts, tables, metrics,
one-line verdicts with links, runnable code cells, exercise cards, the clear message for each
error), classroom slides with Next/Back, and that nothing the learner typed is lost.
"""
from __future__ import annotations

import re
import textwrap

import pytest

pytest.importorskip("streamlit")
from app_support import (AppTest, assert_clean, charts, errors, goto, jump, new_app,  # noqa: E402,F401
                         next_until_last, step_shown, texts, widget_by_key)

# One worker runs them all under `make test` (-n 2 --dist loadgroup), sharing the app's caches.
pytestmark = pytest.mark.xdist_group("app")


# --------------------------------------------------------------------------- a fixture lesson
FIXTURE_LESSON = textwrap.dedent("""\
    ---
    number: 1
    title: Fixture lesson
    minutes: 5
    controls:
      - {name: model, kind: select, options: [toy, other], default: toy}
      - {name: head, kind: int, min: 0, max: 3, default: 0, label: Head}
      - {name: prompt, kind: text, default: "a b c", label: Prompt}
      - {name: scale, kind: float, min: 0.5, max: 2.0, step: 0.5, default: 1.0}
      - {name: show, kind: bool, default: true}
      - {name: tokens, kind: multiselect, options: [a, b, c], default: [a]}
    ---
    Intro text with inline LaTeX $x W_E$.

    ::step heat A heatmap
    Display LaTeX: $$A = \\mathrm{softmax}(Q K^T)$$

    ```python
    pattern = model.run_with_cache(tokens)
    ```

    ::chart fake.heat

    ::step algebra A derivation
    ::derivation fake.algebra
    ::derivation fake.algebra:good

    ::step outputs Every kind of output
    ```python
    x = 6
    print("x is", x)
    ```

    ```python
    x * 7
    ```

    ```python
    y = 1
    y / 0
    ```

    ::chart fake.mixed
    ::chart fake.table
    ::chart fake.metrics
    ::chart fake.unpicklable

    ::step errors Things that go wrong
    ::chart fake.broken
    ::chart fake.ckpt
    ::chart fake.unknown
    ::exercise fake_ex
    """)

FIXTURE_STUB = textwrap.dedent('''\
    import torch


    def fake_ex(x):
        """Double x: returns [n] (same shape as x)."""
        raise NotImplementedError("not implemented yet")
    ''')

SEEN_CTX: list[dict] = []
UNPICKLABLE_CALLS: list[int] = []


class Note(str):
    pass


def _fake_charts():
    import numpy as np
    import pandas as pd

    from mechinterp_edu.charts import heatmap
    from mechinterp_edu.derivations.framework import StepResult
    from mechinterp_edu.live.registry import LiveChart
    from mechinterp_edu.models.zoo import CheckpointError

    def heat(ctx):
        SEEN_CTX.append(dict(ctx))
        tokens = ctx["prompt"].split()
        bad = [t for t in tokens if t not in ("a", "b", "c")]
        if bad:
            raise ValueError(f"token {bad[0]!r} is not in the vocabulary (known: a b c)")
        n = len(tokens)
        return heatmap(np.arange(n * n).reshape(n, n) - n * n / 2, x_labels=tokens, y_labels=tokens,
                       title=f"head {ctx['head']}")

    def mixed(ctx):
        return ["Some **markdown** from a live chart.", {"tokens": len(ctx["prompt"].split())},
                [StepResult("fake.algebra", "live", r"a + b = b + a", True, "left - right simplifies to 0", 0.01)]]

    def table(ctx):
        return pd.DataFrame({"token": ctx["prompt"].split(), "score": range(len(ctx["prompt"].split()))})

    def metrics(ctx):
        return {"head": ctx["head"], "scale": ctx["scale"], "show": ctx["show"]}

    def unpicklable(ctx):
        UNPICKLABLE_CALLS.append(ctx["head"])
        note = Note(f"A note that does not pickle, for head {ctx['head']}.")
        note.callback = lambda: None          # a lambda attribute: pickle fails, cache_resource is used
        return note

    def broken(ctx):
        raise RuntimeError("boom")

    def ckpt(ctx):
        raise CheckpointError("The checkpoint for model 'toy' is missing: toy.pt. "
                              "Rebuild it with `python -m mechinterp_edu train toy`.")

    fns = {"heat": heat, "mixed": mixed, "table": table, "metrics": metrics, "unpicklable": unpicklable,
           "broken": broken, "ckpt": ckpt}
    return {f"fake.{k}": LiveChart(f"fake.{k}", f"Fake {k}", fn, f"description of {k}") for k, fn in fns.items()}


def _fake_derivation():
    import sympy as sp

    from mechinterp_edu.derivations.framework import Derivation, Step

    a, b = sp.symbols("a b")
    return Derivation("fake.algebra", "Fake algebra", (
        Step("good", r"(a + b)^2 = a^2 + 2ab + b^2", lambda: (a + b) ** 2, lambda: a**2 + 2 * a * b + b**2,
             explanation="Expand the square."),
        Step("bad", r"(a + b)^2 = a^2 + b^2", lambda: (a + b) ** 2, lambda: a**2 + b**2),
    ), lesson=1)


@pytest.fixture
def fixture_course(tmp_path, monkeypatch):
    """Lesson 1 becomes the fixture lesson; fake charts, derivation and exercise; other lessons unwritten."""
    from mechinterp_edu import course
    from mechinterp_edu.app import cache
    from mechinterp_edu.grader import spec

    lessons, exercises = tmp_path / "lessons", tmp_path / "exercises"
    lessons.mkdir()
    exercises.mkdir()
    (lessons / "01_tensor_products.md").write_text(FIXTURE_LESSON, encoding="utf-8")
    (exercises / "01_tensor_products.py").write_text(FIXTURE_STUB, encoding="utf-8")
    monkeypatch.setattr(course, "LESSONS_DIR", lessons)
    monkeypatch.setattr(course, "EXERCISES_DIR", exercises)

    fakes, derivation = _fake_charts(), _fake_derivation()
    real_get_chart = cache.get_chart
    monkeypatch.setattr(cache, "get_chart", lambda name: fakes[name] if name in fakes else real_get_chart(name))
    monkeypatch.setattr(cache, "get_derivation",
                        lambda name: derivation if name == derivation.name else (_ for _ in ()).throw(KeyError(name)))
    monkeypatch.setattr(cache, "model", lambda name: object())

    fake_ex = spec.Exercise(lesson=1, name="fake_ex", points=3, reference=lambda x: 2 * x, cases=lambda: [],
                            summary="Double the input.", difficulty=2, minutes=5)
    real_exercises_for = spec.exercises_for
    monkeypatch.setattr(spec, "exercises_for",
                        lambda n: [fake_ex] if int(n) == 1 else real_exercises_for(n))
    SEEN_CTX.clear()
    UNPICKLABLE_CALLS.clear()
    return tmp_path


def open_fixture(page: str = "lesson_01") -> AppTest:
    at = new_app().run()
    return goto(at, page)


def test_fixture_reader_draws_one_step_at_a_time_with_every_output_kind(fixture_course):
    at = open_fixture()
    assert_clean(at)
    assert at.title[0].value == "Lesson 1: Fixture lesson"
    # Only the current step is drawn; the step list offers all of them.
    assert [h.value for h in at.header] == ["1. Fixture lesson"]
    assert at.selectbox(key="jump::1").options == ["Step 1 of 5 · Fixture lesson", "Step 2 of 5 · A heatmap",
                                                   "Step 3 of 5 · A derivation", "Step 4 of 5 · Every kind of output",
                                                   "Step 5 of 5 · Things that go wrong"]
    assert "$x W_E$" in "\n".join(texts(at)) and not charts(at)

    jump(at, 1, 1)
    assert [h.value for h in at.header] == ["2. A heatmap"] and at.query_params["step"] in ("heat", ["heat"])
    assert r"$$A = \mathrm{softmax}(Q K^T)$$" in "\n".join(texts(at))   # LaTeX reaches st.markdown
    assert at.code[0].value.startswith("pattern = model")
    assert len(charts(at)) == 1

    # A derivation is one line (title and verdict) whose expander holds the steps; no timings.
    jump(at, 1, 2)
    labels = [e.label for e in at.main.expander]
    assert len(labels) == 2
    assert "1 of 2 failed" in labels[0] and "Fake algebra" in labels[0]
    assert "proven" in labels[1] and "step `good`" in labels[1]
    latex = [l.value.strip("$\n") for l in at.latex]
    assert r"(a + b)^2 = a^2 + b^2" in latex and r"(a + b)^2 = a^2 + 2ab + b^2" in latex
    failed = [t for t in texts(at) if "failed]" in t]
    assert len(failed) == 1 and "bad" in failed[0] and "2ab" not in failed[0]
    assert not any(re.search(r"\d\.\d\d s\b", t) for t in texts(at) + labels)

    jump(at, 1, 3)
    body = "\n".join(texts(at))
    assert len(at.dataframe) == 1                                  # fake.table
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"tokens": "3", "head": "0", "scale": "1", "show": "yes"}
    assert "Some **markdown** from a live chart." in body
    assert "A note that does not pickle, for head 0." in body
    # The live verdict links to the step that derives it instead of repeating it there.
    link = at.button(key="goto::fake.algebra::Step 3: A derivation")
    link.click().run()
    assert [h.value for h in at.header] == ["3. A derivation"]

    jump(at, 1, 4)
    errs = errors(at)
    assert any("Fake broken" in e and "RuntimeError: boom" in e and "Reset controls" in e for e in errs), errs
    assert any("python -m mechinterp_edu train toy" in e for e in errs), errs
    assert any("fake.unknown" in e and "not available yet" in e for e in errs), errs
    assert len(errs) == 3
    # Exercise card with summary, difficulty, minutes, points and a link to the Exercises page.
    assert any("Double the input." in t for t in texts(at))
    assert any("★★☆ · about 5 min · 3 points" in t for t in texts(at))
    links = [l for l in at.get("page_link") if "Exercises page" in str(l.proto.label)]
    assert links and "exercise=fake_ex" in links[0].proto.query_string


def test_fixture_code_cells_run_on_a_click_in_order(fixture_course):
    at = open_fixture()
    jump(at, 1, 3)
    cells = [c for c in at.code if "x" in c.value]
    assert [c.value for c in cells][:2] == ['x = 6\nprint("x is", x)', "x * 7"]
    runs = [b for b in at.button if b.key and b.key.startswith("run::1::")]
    assert len(runs) == 3                                          # one Run per code cell of the step
    runs[1].click().run()                                          # the second cell: the first runs first
    assert_clean(at)
    out = [c.value for c in at.code]
    assert "x is 6" in out and "42" in out
    # The lesson's first cell (step 2) ran first too; it fails (no `model` here): a note says so.
    assert any("Cell 1 of this lesson" in w.value and "NameError" in w.value for w in at.warning)
    runs = [b for b in at.button if b.key and b.key.startswith("run::1::")]
    runs[2].click().run()                                          # a cell that fails: one clear line
    assert any("ZeroDivisionError" in e and "line 2 of the cell" in e for e in errors(at)), errors(at)
    jump(at, 1, 1)                                                 # cell 1 of the lesson needs `model`
    [b for b in at.button if b.key and b.key.startswith("run::1::")][0].click().run()
    assert any("NameError" in e for e in errors(at)), errors(at)
    assert_clean(at)


def test_fixture_changed_control_reruns_the_live_computation(fixture_course):
    at = open_fixture()
    jump(at, 1, 1)
    at.slider(key="ctl::1::head").set_value(2).run()
    assert_clean(at)
    assert SEEN_CTX[-1]["head"] == 2
    at.selectbox(key="ctl::1::model").set_value("other").run()
    assert SEEN_CTX[-1]["model"] == "other"
    at.text_input(key="ctl::1::prompt").input("a b").run()
    assert_clean(at)
    assert SEEN_CTX[-1]["prompt"] == "a b"
    at.slider(key="ctl::1::scale").set_value(1.5).run()
    at.toggle(key="ctl::1::show").set_value(False).run()
    at.multiselect(key="ctl::1::tokens").set_value(["b", "c"]).run()
    assert_clean(at)
    assert SEEN_CTX[-1] == {"model": "other", "head": 2, "prompt": "a b", "scale": 1.5, "show": False,
                            "tokens": ["b", "c"]}
    jump(at, 1, 3)
    assert {m.label: m.value for m in at.metric}["head"] == "2"
    assert {m.label: m.value for m in at.metric}["tokens"] == "2"
    # Same ctx again: served from the cache, not recomputed (the unpicklable output from
    # cache_resource, the others from cache_data).
    jump(at, 1, 1)
    calls, odd_calls = len(SEEN_CTX), len(UNPICKLABLE_CALLS)
    at.run()
    jump(at, 1, 3)
    assert len(SEEN_CTX) == calls and len(UNPICKLABLE_CALLS) == odd_calls
    assert "A note that does not pickle, for head 2." in "\n".join(texts(at))


def test_fixture_bad_prompt_gives_a_clear_message(fixture_course):
    at = open_fixture()
    jump(at, 1, 1)
    at.text_input(key="ctl::1::prompt").input("a zz b").run()
    assert_clean(at)
    assert any("'zz' is not in the vocabulary" in e and "sidebar" in e for e in errors(at)), errors(at)
    at.text_input(key="ctl::1::prompt").input("   ").run()
    assert_clean(at)
    assert any("**Prompt** is empty" in e and "e.g. `a b c`" in e for e in errors(at)), errors(at)
    assert any("waits until the controls are fixed" in w.value for w in at.warning)
    assert not charts(at)
    at.multiselect(key="ctl::1::tokens").set_value([]).run()
    assert any("choose at least one option" in e for e in errors(at))
    at.button(key="reset::1").click().run()
    assert_clean(at)
    assert at.text_input(key="ctl::1::prompt").value == "a b c"
    assert len(charts(at)) == 1


def test_fixture_classroom_slides_next_back_and_state_survives_page_switches(fixture_course):
    at = open_fixture()
    at.slider(key="ctl::1::head").set_value(3).run()
    at.radio(key="layout::1").set_value("Classroom").run()
    assert_clean(at)
    assert step_shown(at, 1) == 0 and at.button(key="back::top::1").disabled
    seen = next_until_last(at, 1)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen) and {s for s, _ in seen} == set(range(5))
    assert max(j for _, j in seen) >= 1                            # some step needed a second slide
    # Back from a step's first slide goes to the previous step's LAST slide.
    at.selectbox(key="jump::1").set_value(2).run()
    last_of_heat = max(j for s, j in seen if s == 1)
    at.button(key="back::top::1").click().run()
    assert (step_shown(at, 1), at.session_state["slide::1"]) == (1, last_of_heat)
    # Projector sizes: the chart of the heat step gets 16 px labels.
    at.selectbox(key="jump::1").set_value(1).run()
    while not charts(at):
        at.button(key="next::top::1").click().run()
    import json
    spec = json.loads(charts(at)[0].proto.spec)
    assert spec["config"]["axis"]["labelFontSize"] >= 16 and spec["width"] == "container"
    # Changing a control in classroom mode re-runs the live chart and keeps the step.
    at.text_input(key="ctl::1::prompt").input("c b a c").run()
    assert SEEN_CTX[-1]["prompt"] == "c b a c" and step_shown(at, 1) == 1
    at.selectbox(key="jump::1").set_value(4).run()
    while not at.button(key="next::top::1").disabled:
        at.button(key="next::top::1").click().run()
    # Leave and come back: layout, step and controls are remembered.
    goto(at, "home")
    goto(at, "lesson_01")
    assert_clean(at)
    assert step_shown(at, 1) == 4
    assert at.slider(key="ctl::1::head").value == 3
    assert at.text_input(key="ctl::1::prompt").value == "c b a c"
    # The classroom page shares the step and controls of the lesson.
    goto(at, "classroom")
    assert_clean(at)
    assert any(h.value == "Lesson 1: Fixture lesson" for h in at.sidebar.subheader) and step_shown(at, 1) == 4
    at.selectbox(key="classroom::lesson").set_value(2).run()
    assert_clean(at)
    assert any("not written yet" in i.value for i in at.info)


def test_fixture_lesson_with_a_format_error_shows_where(fixture_course):
    (fixture_course / "lessons" / "01_tensor_products.md").write_text(
        "---\nnumber: 1\ntitle: Broken\n---\n::nonsense here\n", encoding="utf-8")
    at = open_fixture()
    assert_clean(at)
    assert any("format error" in e and ":5:" in e and "::nonsense" in e for e in errors(at)), errors(at)


def test_fixture_exercises_page_keeps_text_uploads_and_saves(fixture_course):
    at = open_fixture("exercises")
    assert_clean(at)
    assert at.selectbox(key="ex::name::1").value == "fake_ex"
    assert "def fake_ex(x):" in at.code[0].value and "Double x" in at.code[0].value
    editor = at.text_area(key="ex::editor::1")
    assert editor.value == FIXTURE_STUB
    mine = FIXTURE_STUB.replace('raise NotImplementedError("not implemented yet")', "return 2 * x")
    editor.input(mine).run()
    # Switch pages and back: the text is still there.
    goto(at, "home")
    goto(at, "exercises")
    assert at.text_area(key="ex::editor::1").value == mine
    # A broken upload changes nothing and says why.
    at.file_uploader(key="ex::upload::1").upload("work.ipynb", b"{not json", "application/json").run()
    assert_clean(at)
    assert any("not a valid notebook" in e for e in errors(at)), errors(at)
    assert at.text_area(key="ex::editor::1").value == mine
    # A notebook upload replaces the text; Undo brings the previous text back.
    nb = ('{"cells": [{"cell_type": "markdown", "source": ["# hi"]}, {"cell_type": "code", '
          '"source": ["%matplotlib inline\\n", "def fake_ex(x):\\n", "    return x + x\\n"]}], '
          '"metadata": {}, "nbformat": 4, "nbformat_minor": 5}').encode()
    at.file_uploader(key="ex::upload::1").clear().upload("work.ipynb", nb, "application/json").run()
    assert_clean(at)
    assert at.text_area(key="ex::editor::1").value == "def fake_ex(x):\n    return x + x\n"
    at.button(key="ex::undo::1").click().run()
    assert at.text_area(key="ex::editor::1").value == mine
    # Saving needs a confirmation, then writes the file.
    target = fixture_course / "exercises" / "01_tensor_products.py"
    assert at.button(key="ex::save::1").disabled
    at.checkbox(key="ex::confirm::1").check().run()
    at.button(key="ex::save::1").click().run()
    assert_clean(at)
    assert target.read_text(encoding="utf-8") == mine
    assert any("Saved" in s.value for s in at.success)
    assert not list(target.parent.glob(".*.tmp"))


def test_fixture_exercises_page_rejects_bad_code_before_grading(fixture_course):
    at = open_fixture("exercises")
    at.text_area(key="ex::editor::1").input("def fake_ex(x):\n    return (x\n").run()
    at.button(key="ex::grade_one::1").click().run()
    assert_clean(at)
    assert any("syntax error" in e and "line" in e and "nothing was graded" in e for e in errors(at)), errors(at)
    at.text_area(key="ex::editor::1").input("  \n").run()
    at.button(key="ex::grade_one::1").click().run()
    assert any("editor is empty" in e for e in errors(at)), errors(at)
    assert at.text_area(key="ex::editor::1").value == "  \n"


def test_link_from_a_lesson_selects_the_exercise(fixture_course):
    at = new_app().run()
    at.query_params["lesson"] = "1"
    at.query_params["exercise"] = "fake_ex"
    goto(at, "exercises")
    assert_clean(at)
    assert at.selectbox(key="ex::lesson").value == 1
    assert at.selectbox(key="ex::name::1").value == "fake_ex"


def test_xdist_groups_are_honoured(request):
    """Under `--dist loadgroup` xdist tags each grouped test's id with its group; when it does not
    (pytest 9.2 with xdist 3.8 silently stopped it), grouped tests run on any worker."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not running under pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@app"), request.node.nodeid
