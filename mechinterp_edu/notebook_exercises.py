"""The exercise notebook's own parts: the install cell, hints behind a details block, and the
in-notebook check ``check("name", fn)``.

``check`` grades ONE function with the grader's public API,
``grade_source(source, lesson, exercises=[name])``: the same sandbox, cases and diagnoses as
``python -m mechinterp_edu grade``. It prints the same report and records the result in the
learner's progress store (as the CLI does), so the app's progress page sees it.

The source it sends is built from the running kernel, not from a file (a notebook in Colab
has no path): the lesson's set-up (the imports and shared helpers of the exercise file),
then, for every global name the function uses, an import (modules), the source of a
function or class the learner defined in the notebook, or a literal constant, then the
function's own source (``inspect.getsource``; IPython keeps cell sources for this).
"""
from __future__ import annotations

import ast
import builtins
import inspect
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

INSTALL_CELL = '''\
# Set-up 1: the course package. Where it is already installed (this repository's .venv after
# `make setup`) this cell only imports it. Elsewhere (Colab, a fresh Jupyter) it runs
# `pip install COURSE` once, which also installs the dependencies pyproject.toml declares
# (torch, transformer-lens, sympy, ...; a few minutes). COURSE is a local checkout of the course
# or a pip-installable URL of its repository, e.g. "git+https://<host>/<owner>/mechinterp-edu".
import importlib.util, os, pathlib, subprocess, sys

COURSE = os.environ.get("MECHINTERP_EDU_SOURCE", "")
if importlib.util.find_spec("mechinterp_edu") is None:
    if not COURSE:  # a checkout around this notebook?
        here = pathlib.Path.cwd().resolve()
        COURSE = next((str(p) for p in [here, *here.parents] if (p / "pyproject.toml").is_file()
                       and 'name = "mechinterp-edu"' in (p / "pyproject.toml").read_text()), "")
    if not COURSE:
        raise RuntimeError("The course package mechinterp_edu is not installed. Set COURSE above to a "
                           "checkout of the course or its repository URL, then re-run this cell.")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", COURSE], check=True)
    importlib.invalidate_caches()
'''


# --------------------------------------------------------------------------- exercise files
class NotebookBuildError(ValueError):
    """A notebook cannot be built from the lesson; the message names the file and the fix."""


def _segment(lines: list[str], node: ast.stmt) -> str:
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
    # Keep the comment lines directly above a definition: they often explain it.
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return "\n".join(lines[start:node.end_lineno])


def _is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def split_exercise_file(path: Path, names: Iterable[str]) -> tuple[str, str, dict[str, str]]:
    """Split an exercise file into (docstring, set-up source, {function name: source}).

    The set-up is everything at top level except the docstring, the named functions
    and an ``if __name__ == "__main__":`` block: imports first, then shared helpers.
    """
    if not path.exists():
        raise NotebookBuildError(f"The exercise file {path} does not exist; the lesson's exercises need it.")
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise NotebookBuildError(f"{path}:{exc.lineno}: not valid Python ({exc.msg}).") from None
    lines = source.splitlines()
    wanted = set(names)
    docstring = ast.get_docstring(tree) or ""
    body = tree.body[1:] if docstring else tree.body
    imports, helpers, functions = [], [], {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in wanted:
            functions[node.name] = _segment(lines, node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(_segment(lines, node))
        elif not _is_main_guard(node):
            helpers.append(_segment(lines, node))
    missing = [n for n in names if n not in functions]
    if missing:
        raise NotebookBuildError(
            f"{path} has no top-level function {', '.join(map(repr, missing))}, "
            "which the lesson names as an exercise. Add the stub there."
        )
    setup = "\n".join(imports)
    if helpers:
        setup += "\n\n\n" + "\n\n\n".join(helpers)
    return docstring, setup, functions


# --------------------------------------------------------------------------- hints
_HINTS = re.compile(r"^(\s*)Hints?:\s*$")


def split_hints(function_source: str) -> tuple[str, str]:
    """(source without the docstring's "Hints:" section, the hints as markdown bullets).

    The section runs from a line ``Hints:`` to the end of the docstring, or to the first line
    indented no deeper than ``Hints:`` that is not part of it."""
    lines = function_source.splitlines()
    for i, line in enumerate(lines):
        match = _HINTS.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        j = i + 1
        while j < len(lines):
            text = lines[j]
            stripped = text.strip()
            if stripped.startswith(('"""', "'''")):
                break
            if stripped and len(text) - len(text.lstrip()) <= indent:
                break
            j += 1
        hints = textwrap.dedent("\n".join(lines[i + 1:j])).strip("\n")
        kept = lines[:i] + lines[j:]
        # no blank line left dangling before the closing quotes
        while i > 0 and i - 1 < len(kept) and not kept[i - 1].strip() and i < len(kept) \
                and kept[i].strip().startswith(('"""', "'''")):
            kept.pop(i - 1)
            i -= 1
        return "\n".join(kept), hints
    return function_source, ""


def hints_markdown(hints: str) -> str:
    """Hints behind a details block: the learner opens them on purpose."""
    body = "\n".join(line[2:] if line.startswith("* ") else line for line in hints.splitlines())
    items = [f"- {item.strip()}" for item in re.split(r"\n(?=\S)", body) if item.strip()]
    return "<details>\n<summary>Hints (open when stuck)</summary>\n\n" + "\n".join(items) + "\n\n</details>"


# --------------------------------------------------------------------------- check
class CheckError(ValueError):
    """``check`` cannot build a submission; the message says what to do."""


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _dependencies(fn: Callable, namespace: dict[str, Any], setup: str, seen: set[str]) -> list[str]:
    """Source lines for the globals ``fn`` uses that the lesson's set-up does not define."""
    out: list[str] = []
    for name in sorted(_global_names(fn.__code__)):
        if name in seen or name not in namespace or hasattr(builtins, name):
            continue
        if re.search(rf"^(def|class)\s+{name}\b|^{name}\s*=|import .*\b{name}\b", setup, re.M):
            continue
        seen.add(name)
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            module = value.__name__
            out.append(f"import {module}" if module == name else f"import {module} as {name}")
        elif inspect.isfunction(value) or inspect.isclass(value):
            if getattr(value, "__module__", None) != "__main__":
                out.append(f"from {value.__module__} import {value.__name__} as {name}")
                continue
            if inspect.isfunction(value):
                out.extend(_dependencies(value, namespace, setup, seen))
            out.append(_source_of(value, name))
        elif isinstance(value, (int, float, str, bool, tuple)) and repr(value) == repr(eval(repr(value))):  # noqa: S307
            out.append(f"{name} = {value!r}")
    return out


def _source_of(obj: Any, name: str) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        raise CheckError(f"Cannot read the source of {name!r}: define it with def in a notebook cell "
                         "(or a file) and run that cell, then check again.") from None


def submission_source(name: str, fn: Callable, setup: str, namespace: dict[str, Any]) -> str:
    """The source ``check`` grades: the lesson's set-up, what ``fn`` needs, then ``fn``."""
    if not callable(fn) or not inspect.isfunction(fn):
        raise CheckError(f"check({name!r}, ...) needs the function itself, e.g. check({name!r}, {name}); "
                         f"got {type(fn).__name__}.")
    source = _source_of(fn, name)
    if fn.__name__ != name:
        source += f"\n\n{name} = {fn.__name__}\n"
    deps = _dependencies(fn, namespace, setup, {name, fn.__name__})
    return "\n\n\n".join(part for part in (setup, "\n".join(deps), source) if part.strip()) + "\n"


def lesson_setup(lesson: int) -> str:
    """The imports and shared helpers of the lesson's exercise file ("" if it is not there)."""
    from mechinterp_edu.course import get_lesson
    from mechinterp_edu.grader.spec import exercises_for

    info = get_lesson(lesson)
    try:
        _, setup, _ = split_exercise_file(info.exercise_path, [e.name for e in exercises_for(info.number)])
    except NotebookBuildError:
        return ""
    return setup


def check(name: str, fn: Optional[Callable] = None, *, lesson: int | str, record: bool = True,
          sandbox: bool = True):
    """Grade the one exercise ``name`` with ``fn`` (default: the notebook's global ``name``),
    print the grader's report (with its diagnosis when wrong), record progress; return the
    report (its ``passed`` is True when the exercise passed)."""
    from mechinterp_edu.course import get_lesson
    from mechinterp_edu.grader.cli import render_report
    from mechinterp_edu.grader.grade import grade_source

    info = get_lesson(lesson)
    namespace = vars(sys.modules["__main__"])
    try:
        if fn is None:
            if name not in namespace:
                raise CheckError(f"No function {name!r} in this notebook yet: run its cell first.")
            fn = namespace[name]
        namespace = getattr(fn, "__globals__", namespace)
        source = submission_source(name, fn, lesson_setup(info.number), namespace)
        report = grade_source(source, info.number, exercises=[name], sandbox=sandbox,
                              filename=f"{info.stem}_exercises.ipynb")
    except (CheckError, LookupError, ValueError) as exc:
        # a problem with the call, not with the learner's code: one sentence, no traceback
        print(f"check({name!r}): {exc}")
        return None
    print(render_report(report))
    if record and report.results:
        from mechinterp_edu.grader.progress import record_report
        record_report(report)
    return _Checked(report)


class _Checked:
    """What ``check`` returns: the report, shown as one line (the printed report says the rest)."""

    def __init__(self, report):
        self.report = report
        self.passed = report.passed

    def __repr__(self) -> str:
        return "passed" if self.passed else "not passed yet"


def exercise_checker(lesson: int | str) -> Callable:
    """``check`` bound to one lesson, as the exercise notebook's set-up defines it."""
    def lesson_check(name: str, fn: Optional[Callable] = None, **kwargs):
        return check(name, fn, lesson=lesson, **kwargs)
    lesson_check.__doc__ = check.__doc__
    return lesson_check
