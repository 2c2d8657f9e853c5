"""Every lesson is one source file whose references all resolve, with stubs and solutions."""
from __future__ import annotations

import ast
import re
from collections import defaultdict

import pytest

from mechinterp_edu.course import LESSONS, ROOT, parts
from mechinterp_edu.lesson_source import load_lesson

LESSON_IDS = [f"lesson{l.number:02d}" for l in LESSONS]
by_lesson = pytest.mark.parametrize("info", LESSONS, ids=LESSON_IDS)
CONTROL_KINDS = {"select", "int", "float", "text", "bool", "multiselect"}
ALLOWED_IMPORTS = {"torch", "numpy", "einops", "math", "transformer_lens",
                   "__future__", "typing", "jaxtyping", "itertools", "functools", "collections"}


def _functions(path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _arg_names(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]


def _registered(info) -> list:
    from mechinterp_edu.grader.spec import exercises_for
    return exercises_for(info.number)


@by_lesson
def test_source_exists_and_parses(info):
    assert info.source_path.exists(), f"missing lesson source {info.source_path}"
    lesson = load_lesson(info.number)
    assert lesson.number == info.number
    assert lesson.title == info.title, "front-matter title and course.py title disagree"
    assert lesson.steps, "a lesson needs steps (::step key Title)"


@by_lesson
def test_source_has_text_latex_code_and_references(info):
    lesson = load_lesson(info.number)
    text = "\n".join(lesson.refs("markdown"))
    assert "$" in text, "the lesson text has no LaTeX"
    assert lesson.refs("code"), "the lesson has no code cell"
    assert lesson.refs("derivation"), "the lesson references no sympy derivation (::derivation)"
    assert lesson.refs("chart"), "the lesson references no live chart (::chart)"
    assert lesson.refs("exercise"), "the lesson references no exercise (::exercise)"
    for code in lesson.refs("code"):
        compile(code, f"{info.source_path}:code", "exec")  # syntax only


@by_lesson
def test_controls_are_well_formed(info):
    lesson = load_lesson(info.number)
    names = [c.get("name") for c in lesson.controls]
    assert all(names) and len(names) == len(set(names)), f"control names must be unique: {names}"
    for control in lesson.controls:
        kind = control.get("kind")
        assert kind in CONTROL_KINDS, f"control {control['name']}: unknown kind {kind!r}"
        default = control.get("default")
        if kind == "select":
            assert default in control["options"], f"{control['name']}: default not among options"
        elif kind == "multiselect":
            assert set(default or []) <= set(control["options"])
        elif kind in ("int", "float"):
            assert control["min"] <= default <= control["max"], f"{control['name']}: default out of range"
        elif kind == "bool":
            assert isinstance(default, bool)


@by_lesson
def test_derivation_references_resolve(info):
    from mechinterp_edu.derivations import get_derivation

    for ref in load_lesson(info.number).refs("derivation"):
        name, _, step = ref.partition(":")
        derivation = get_derivation(name)
        assert derivation.lesson == info.number, f"{name} is registered for lesson {derivation.lesson}"
        if step:
            derivation.step(step)


@by_lesson
def test_every_registered_derivation_step_is_shown_by_its_lesson(info):
    """The page shows each step with its verdict: every step of every derivation the lesson
    registers is referenced (whole derivation or that step) in the lesson source."""
    refs = load_lesson(info.number).refs("derivation")
    whole = {r for r in refs if ":" not in r}
    steps = {tuple(r.split(":", 1)) for r in refs if ":" in r}
    unshown = [f"{d.name}:{s.name}" for d in parts(info, "derivations") if d.lesson == info.number
               for s in d.steps if d.name not in whole and (d.name, s.name) not in steps]
    assert not unshown, f"steps never shown by {info.source_path.name}: {unshown}"


@by_lesson
def test_chart_references_resolve(info):
    from mechinterp_edu.live import get_chart

    prefix = info.slug + "."
    for ref in load_lesson(info.number).refs("chart"):
        chart = get_chart(ref)
        assert chart.name.startswith(prefix), \
            f"{ref}: a lesson's charts are named '{prefix}<name>' so their ctx gets the lesson's defaults"


@by_lesson
def test_exercise_references_resolve(info):
    names = {ex.name for ex in _registered(info)}
    for ref in load_lesson(info.number).refs("exercise"):
        assert ref in names, f"::exercise {ref} is not registered in {info.grading} (known: {sorted(names)})"


@by_lesson
def test_every_registered_exercise_has_stub_and_solution(info):
    exercises = _registered(info)
    assert exercises, f"{info.grading} registers no exercise"
    stubs = _functions(info.exercise_path)
    solutions = _functions(info.solution_path)
    for ex in exercises:
        assert ex.lesson == info.number
        assert ex.name in stubs, f"{info.exercise_path.name} has no stub for {ex.name}"
        assert ex.name in solutions, f"{info.solution_path.name} has no solution for {ex.name}"
        assert _arg_names(stubs[ex.name]) == _arg_names(solutions[ex.name]), \
            f"{ex.name}: stub and solution signatures differ"
        raises = [n for n in ast.walk(stubs[ex.name]) if isinstance(n, ast.Raise)]
        assert any("NotImplementedError" in ast.unparse(r) for r in raises), \
            f"the stub {ex.name} should raise NotImplementedError"
        assert ast.get_docstring(stubs[ex.name]), f"the stub {ex.name} needs a docstring saying what to do"


@by_lesson
def test_every_exercise_is_introduced_by_its_lesson(info):
    refs = set(load_lesson(info.number).refs("exercise"))
    unreferenced = [ex.name for ex in _registered(info) if ex.name not in refs]
    assert not unreferenced, f"exercises never introduced by {info.source_path.name}: {unreferenced}"


@by_lesson
@pytest.mark.parametrize("kind", ["exercise", "solution"])
def test_exercise_and_solution_files_are_self_contained(info, kind):
    path = info.exercise_path if kind == "exercise" else info.solution_path
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            roots.add((node.module or "").split(".")[0])
    assert "mechinterp_edu" not in roots and "solutions" not in roots, \
        f"{path.name} must not import mechinterp_edu or solutions (the grader's sandbox blocks them)"
    assert roots <= ALLOWED_IMPORTS, f"{path.name} imports {sorted(roots - ALLOWED_IMPORTS)}"


# --------------------------------------------------------------------------- single source
def _paragraphs(text: str, min_len: int = 80) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        norm = " ".join(para.split())
        if len(norm) >= min_len:
            out.append(norm)
    return out


def _lesson_paragraphs() -> dict[str, list[str]]:
    found = {}
    for info in LESSONS:
        if info.source_path.exists():
            lesson = load_lesson(info.number)
            found[info.source_path.name] = _paragraphs("\n\n".join(lesson.refs("markdown")))
    return found


def test_no_two_lessons_share_text():
    seen = defaultdict(set)
    for name, paras in _lesson_paragraphs().items():
        for para in paras:
            seen[para].add(name)
    shared = {p[:70] + "...": sorted(n) for p, n in seen.items() if len(n) > 1}
    assert not shared, f"paragraphs written in more than one lesson: {shared}"


def test_lesson_text_is_not_copied_into_code():
    """The app and notebooks read lessons/*.md; no lesson paragraph is written again in Python."""
    code = {}
    for path in [ROOT / "app.py", *(ROOT / "mechinterp_edu").rglob("*.py")]:
        if path.exists():
            code[path] = " ".join(path.read_text(encoding="utf-8").split())
    copies = [f"{lesson}: '{para[:60]}...' in {path.relative_to(ROOT)}"
              for lesson, paras in _lesson_paragraphs().items() for para in paras
              for path, text in code.items() if para in text]
    assert not copies, "lesson text written twice:\n" + "\n".join(copies)


def test_every_lesson_file_is_in_the_course_map():
    known = {info.source_path.name for info in LESSONS}
    extra = [p.name for p in (ROOT / "lessons").glob("*.md") if p.name not in known]
    assert not extra, f"lesson sources not in mechinterp_edu/course.py: {extra}"
