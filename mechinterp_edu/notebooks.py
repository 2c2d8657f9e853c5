"""Generate a lesson notebook and an exercise notebook per lesson (nbformat v4).

Both notebooks are built from the lesson's single source, ``lessons/NN_slug.md``
(parsed by :func:`mechinterp_edu.lesson_source.load_lesson`); nothing in them is
written by hand, so regenerate rather than edit::

    python -m mechinterp_edu notebooks                 # every lesson, into notebooks/
    python -m mechinterp_edu notebooks --lesson 2      # one lesson

Both start with the install cell (:data:`mechinterp_edu.notebook_exercises.INSTALL_CELL`):
it only imports where the course is installed, and ``pip install``s a checkout or URL
where it is not (Colab).

Lesson notebook (``NN_slug.ipynb``):
    markdown blocks -> markdown cells (a step's title becomes a ``##`` heading; numbers
    filled from the lesson's facts), code blocks -> code cells, ``::derivation
    name[:step]`` -> a cell calling :func:`show_derivation` (checks the steps with sympy,
    shows each verdict), ``::chart name`` -> a cell calling :func:`show_live` with ``ctx``,
    the page's controls (set in the set-up cell), which prints the chart function's code
    above the chart, ``::exercise name`` -> a markdown pointer to the exercise.

Exercise notebook (``NN_slug_exercises.ipynb``):
    one set-up cell with the imports (and shared helpers) of ``exercises/NN_slug.py``,
    then per exercise a markdown cell (what to implement), its hints behind a
    ``<details>`` fold (taken out of the stub's docstring), a code cell with the stub's
    source, extracted with :mod:`ast`, and a ``check("name", name)`` cell that grades that
    one function (:func:`mechinterp_edu.notebook_exercises.check`). The set-up and stub
    cells carry the cell tag ``graded``: when a notebook has tagged cells, the grader reads
    only those. A last cell says how to grade the whole notebook.

Cell ids are deterministic, so regenerating an unchanged lesson gives identical files.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

import nbformat
from nbformat import v4

from mechinterp_edu.course import ROOT, LessonInfo, get_lesson
from mechinterp_edu.lesson_source import Lesson, load_lesson
from mechinterp_edu.notebook_exercises import (INSTALL_CELL, NotebookBuildError, hints_markdown,  # noqa: F401
                                               split_exercise_file, split_hints)

GRADED_TAG = "graded"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


# --------------------------------------------------------------------------- file names
def lesson_notebook_name(info: LessonInfo) -> str:
    return f"{info.stem}.ipynb"


def exercise_notebook_name(info: LessonInfo) -> str:
    return f"{info.stem}_exercises.ipynb"


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _resolve(lesson: Lesson | LessonInfo | int | str) -> tuple[Lesson, LessonInfo]:
    if isinstance(lesson, Lesson):
        return lesson, get_lesson(lesson.number)
    info = lesson if isinstance(lesson, LessonInfo) else get_lesson(lesson)
    return load_lesson(info.number), info


class _Cells:
    """Collects cells with deterministic ids."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.cells: list[Any] = []

    def _id(self) -> str:
        return f"{self.prefix}-{len(self.cells):03d}"

    def markdown(self, text: str) -> None:
        self.cells.append(v4.new_markdown_cell(text.strip("\n"), id=self._id()))

    def code(self, source: str, tags: Iterable[str] = ()) -> None:
        cell = v4.new_code_cell(source.strip("\n"), id=self._id())
        tags = list(tags)
        if tags:
            cell.metadata["tags"] = tags
        self.cells.append(cell)


def _notebook(cells: list[Any], info: LessonInfo, kind: str) -> nbformat.NotebookNode:
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["mechinterp_edu"] = {
        "lesson": info.number,
        "kind": kind,
        "source": _relative(info.source_path),
    }
    return nb


def _exercise_summaries(number: int) -> dict[str, Any]:
    """Registered exercises of a lesson by name (empty while the lesson has no grading module)."""
    try:
        from mechinterp_edu.grader.spec import exercises_for
        return {ex.name: ex for ex in exercises_for(number)}
    except ImportError:
        return {}


# --------------------------------------------------------------------------- lesson notebook
def _context_cell(lesson: Lesson) -> str:
    lines = [
        "# Set-up: the course helpers and this lesson's controls (the app page's widgets).",
        "# Change a value in ctx, then re-run the cells below it.",
        "from mechinterp_edu.device import describe_device",
        "from mechinterp_edu.notebooks import show_derivation, show_live",
        "",
        'print("Computing on", describe_device())',
        "ctx = {",
    ]
    for control in lesson.controls:
        hint = str(control.get("kind", ""))
        if "options" in control:
            hint += ": " + ", ".join(map(str, control["options"]))
        elif "min" in control or "max" in control:
            hint += f" from {control.get('min')} to {control.get('max')}"
        lines.append(f"    {control['name']!r}: {control.get('default')!r},  # {hint}")
    lines.append("}")
    return "\n".join(lines)


def build_lesson_notebook(lesson: Lesson | LessonInfo | int | str) -> nbformat.NotebookNode:
    """The lesson notebook: the lesson's text, code, derivation verdicts and live charts."""
    lesson, info = _resolve(lesson)
    summaries = _exercise_summaries(info.number)
    cells = _Cells(f"{info.stem}-lesson")
    minutes = lesson.meta.get("minutes")
    header = [f"# Lesson {info.number}: {lesson.title}", ""]
    if minutes:
        header.append(f"*About {minutes} minutes.*")
        header.append("")
    header.append(
        f"Generated from `{_relative(info.source_path)}` by `python -m mechinterp_edu notebooks`: "
        "edit the lesson source, not this notebook. The exercises are in "
        f"`{exercise_notebook_name(info)}` (or `{_relative(info.exercise_path)}`)."
    )
    cells.markdown("\n".join(header))
    cells.code(INSTALL_CELL)
    cells.code(_context_cell(lesson))

    for step in lesson.steps:
        heading = None if step.key == "intro" else f"## {step.title}"
        for block in step.blocks:
            if block.kind == "markdown":
                text = block.text if heading is None else f"{heading}\n\n{block.text}"
                cells.markdown(text)
                heading = None
                continue
            if heading is not None:
                cells.markdown(heading)
                heading = None
            if block.kind == "code":
                cells.code(block.text)
            elif block.kind == "derivation":
                name, _, step_name = block.text.partition(":")
                call = f"show_derivation({name.strip()!r}"
                call += f", step={step_name.strip()!r})" if step_name else ")"
                cells.code(call)
            elif block.kind == "chart":
                cells.code(_chart_cell(block.text))
            elif block.kind == "exercise":
                cells.markdown(_exercise_pointer(info, block.text, summaries.get(block.text)))
        if heading is not None:
            cells.markdown(heading)
    return _notebook(cells.cells, info, "lesson")


def _without_file_instructions(docstring: str) -> str:
    """The exercise file's docstring without the paragraph on grading the file (the notebook
    has its own checks)."""
    paragraphs = [p for p in docstring.split("\n\n") if "mechinterp_edu grade" not in p and ".py" not in p]
    return "\n\n".join(paragraphs).strip()


def _chart_cell(name: str) -> str:
    return (f"# Live chart {name!r}: show_live prints the code that computes it (the same function the app\n"
            "# runs), then the chart for the controls in ctx. Change ctx and re-run.\n"
            f"show_live({name!r}, ctx)")


def _exercise_pointer(info: LessonInfo, name: str, exercise: Any) -> str:
    text = f"**Exercise: `{name}`**"
    if exercise is not None and getattr(exercise, "summary", ""):
        text += f": {exercise.summary}"
    if exercise is not None:
        text += f" ({exercise.points} points, about {exercise.minutes} minutes)"
    return (
        f"> {text}\n>\n"
        f"> Implement it in `{exercise_notebook_name(info)}` or in `{_relative(info.exercise_path)}`, "
        f"then grade it with `python -m mechinterp_edu grade {_relative(info.exercise_path)}`."
    )


# --------------------------------------------------------------------------- exercise notebook
def build_exercise_notebook(lesson: Lesson | LessonInfo | int | str,
                            exercise_path: Path | None = None) -> nbformat.NotebookNode:
    """The exercise notebook: the stubs of ``exercises/NN_slug.py``, as graded cells."""
    lesson, info = _resolve(lesson)
    path = Path(exercise_path or info.exercise_path)
    summaries = _exercise_summaries(info.number)
    # Exercises in the order the lesson introduces them, then any other registered one.
    step_of: dict[str, str] = {}
    for step in lesson.steps:
        for name in step.refs("exercise"):
            step_of.setdefault(name, step.title)
    names = list(step_of) + [n for n in summaries if n not in step_of]
    docstring, setup, functions = split_exercise_file(path, names)

    cells = _Cells(f"{info.stem}-exercises")
    nb_name = exercise_notebook_name(info)
    cells.markdown(
        f"# Lesson {info.number} exercises: {lesson.title}\n\n"
        f"The lesson itself is the notebook `{lesson_notebook_name(info)}` (or the app's lesson page).\n\n"
        "Replace each `raise NotImplementedError(...)` with your code, run the cell, then run the "
        "`check(...)` cell below it: it grades that one function in the course's sandbox, prints "
        "what is right or wrong (with a diagnosis of common mistakes) and records your progress. "
        f"Cells tagged `{GRADED_TAG}` (the set-up cell and one cell per exercise) are what the "
        "grader reads when you grade the whole notebook: keep each function's name and "
        "signature, and put experiments in new, untagged cells."
    )
    docstring = _without_file_instructions(docstring)
    if docstring:
        cells.markdown(docstring)
    cells.code(INSTALL_CELL + "\nfrom mechinterp_edu.notebook_exercises import exercise_checker\n\n"
               f"check = exercise_checker(lesson={info.number})  # check(\"name\", function): grade one exercise")
    cells.code(setup, tags=[GRADED_TAG])
    for name in names:
        exercise = summaries.get(name)
        text = f"## Exercise: `{name}`"
        if exercise is not None and getattr(exercise, "summary", ""):
            text += f"\n\n{exercise.summary}"
        details = []
        if exercise is not None:
            details.append(f"{exercise.points} points, about {exercise.minutes} minutes")
        if name in step_of:
            details.append(f"from the step *{step_of[name]}* of the lesson")
        if details:
            text += "\n\n(" + "; ".join(details) + ".)"
        cells.markdown(text)
        stub, hints = split_hints(functions[name])
        if hints:
            cells.markdown(hints_markdown(hints))
        cells.code(stub, tags=[GRADED_TAG])
        cells.code(f"check({name!r}, {name})")
    cells.markdown(
        "## Grade the whole notebook\n\n"
        "The `check` cells grade one exercise each. To grade every exercise at once, save the "
        "notebook, then in a terminal at the repository root:\n\n"
        "```bash\n"
        f"python -m mechinterp_edu grade path/to/{nb_name} --lesson {info.number}\n"
        "```\n\n"
        "or in a new cell of this notebook:\n\n"
        "```python\n"
        "from mechinterp_edu.grader.grade import grade_file\n"
        f'report = grade_file("{nb_name}", lesson={info.number})\n'
        "for result in report.results:\n"
        "    print(result.exercise, result.score, '/', result.max_score)\n"
        "    print(result.feedback)\n"
        "```"
    )
    return _notebook(cells.cells, info, "exercises")


# --------------------------------------------------------------------------- display helpers
class DerivationVerdicts:
    """Verdicts of derivation steps: LaTeX + verdict in Jupyter, one line per step as text."""

    def __init__(self, title: str, results: list[Any]):
        self.title = title
        self.results = list(results)

    @property
    def all_proven(self) -> bool:
        return all(r.passed for r in self.results)

    def lines(self) -> list[str]:
        return [f"[{'PROVEN' if r.passed else 'FAILED'}] {r.derivation}:{r.step}: {r.detail}"
                for r in self.results]

    def __repr__(self) -> str:
        return "\n".join([self.title, *self.lines()])

    def _repr_markdown_(self) -> str:
        out = [f"**{self.title}**", ""]
        for r in self.results:
            mark = "PROVEN" if r.passed else "FAILED"
            out.append(f"- **{mark}** `{r.step}`: $\\displaystyle {r.statement}$  \n  *{r.detail}*")
            if r.explanation:
                out.append(f"  {r.explanation}")
        return "\n".join(out)


def show_derivation(name: str, step: str | None = None) -> None:
    """Check a registered derivation (or one step of it) with sympy and show each verdict."""
    from IPython.display import display

    from mechinterp_edu.derivations import check, check_step, get_derivation

    derivation = get_derivation(name)
    results = [check_step(derivation, derivation.step(step))] if step else check(derivation)
    # Rich front ends show the markdown (LaTeX statement + verdict); plain text shows
    # one "[PROVEN] derivation:step: detail" line per step.
    display(DerivationVerdicts(derivation.title, results))


def display_live_output(output: Any) -> None:
    """Show a live-chart output in a notebook (see :mod:`mechinterp_edu.live.registry`)."""
    from IPython.display import Markdown, display

    if isinstance(output, (list, tuple)):
        results = [o for o in output if _is_step_result(o)]
        if results and len(results) == len(output):
            display(DerivationVerdicts("Derivation", results))
            return
        for item in output:
            display_live_output(item)
        return
    if isinstance(output, str):
        display(Markdown(output))
    elif isinstance(output, dict):
        rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in output.items())
        display(Markdown(f"| | |\n|---|---|\n{rows}"))
    elif _is_step_result(output):
        display(DerivationVerdicts("Derivation", [output]))
    else:
        if _is_altair(output):
            _use_offline_chart_renderer()
        display(output)


def _use_offline_chart_renderer() -> None:
    """Charts in notebooks must draw with no network. Altair's default HTML output loads
    Vega's JavaScript from a CDN, so by default charts are rendered to static SVG locally
    (vl-convert, pinned in requirements.txt). ``MECHINTERP_EDU_NOTEBOOK_CHARTS=html`` brings
    back the interactive CDN version, ``inline`` embeds the JavaScript (large outputs)."""
    import os

    import altair as alt

    alt.data_transformers.disable_max_rows()
    choice = os.environ.get("MECHINTERP_EDU_NOTEBOOK_CHARTS", "svg").strip().lower()
    if choice == "html":
        alt.renderers.enable("html")
    elif choice == "inline":
        alt.renderers.enable("html", template="inline")
    else:
        alt.renderers.enable("svg")


def show_live(name: str, ctx: dict[str, Any] | None = None, code: bool = True) -> None:
    """Compute a registered live chart with the controls ``ctx`` and display what it returns,
    after the source of the function that computes it (``code=False`` hides it)."""
    from IPython.display import Markdown, display

    from mechinterp_edu.live import compute, get_chart

    chart = get_chart(name)
    display(Markdown(f"**{chart.title}**"))
    if code:
        display(Markdown(chart_code_markdown(chart.fn)))
    display_live_output(compute(name, dict(ctx or {})))


def chart_code_markdown(fn: Any) -> str:
    """The source of a chart function (under its decorators) as a collapsible markdown block."""
    import inspect

    fn = inspect.unwrap(fn)
    try:
        source = inspect.getsource(fn)
        where = f"{fn.__module__}.{fn.__qualname__}"
    except (OSError, TypeError):
        return "*(the source of this chart is not available)*"
    return (f"<details open>\n<summary>Code: <code>{where}</code></summary>\n\n"
            f"```python\n{source.rstrip()}\n```\n\n</details>")


def _is_step_result(obj: Any) -> bool:
    from mechinterp_edu.derivations import StepResult
    return isinstance(obj, StepResult)


def _is_altair(obj: Any) -> bool:
    return type(obj).__module__.startswith("altair")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# --------------------------------------------------------------------------- command
def write_notebooks(info: LessonInfo, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    lesson = load_lesson(info.number)                 # parsed (and its facts filled) once for both
    for nb, name in ((build_lesson_notebook(lesson), lesson_notebook_name(info)),
                     (build_exercise_notebook(lesson), exercise_notebook_name(info))):
        nbformat.validate(nb)
        path = out_dir / name
        nbformat.write(nb, path)
        written.append(path)
    return written


def notebooks_command(args) -> int:
    """``python -m mechinterp_edu notebooks [--out DIR] [--lesson N]``."""
    from mechinterp_edu.course import LESSONS

    lessons = [get_lesson(args.lesson)] if getattr(args, "lesson", None) else list(LESSONS)
    out_dir = Path(getattr(args, "out", None) or "notebooks")
    failures = 0
    for info in lessons:
        try:
            paths = write_notebooks(info, out_dir)
        except (ValueError, OSError) as exc:
            failures += 1
            print(f"error: lesson {info.number:02d} ({info.slug}): {exc}", file=sys.stderr)
            continue
        for path in paths:
            print(f"Wrote {path}")
    if failures:
        print(f"{failures} of {len(lessons)} lessons could not be written.", file=sys.stderr)
        return 1
    print("Open them in Jupyter or VS Code (kernel: this repository's .venv). "
          "Grade an exercise notebook with `python -m mechinterp_edu grade FILE.ipynb`.")
    return 0
