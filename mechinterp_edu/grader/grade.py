"""Grading a learner's file: the API used by the CLI, the app, the gradebook and the tests.

    grade_file(path, lesson=None) -> FileReport
    grade_source(source, lesson, exercises=None, sandbox=True) -> FileReport

``FileReport(file, lesson, score, max_score, results)`` holds one
``ExerciseResult(exercise, passed, score, max_score, feedback)`` per exercise; ``exercise``
is the function's name. ``exercises`` may be None (the lesson's registered exercises),
a list of names (a subset), or a list of :class:`~mechinterp_edu.grader.spec.Exercise`
objects (e.g. defined in a test).

How one file is graded:

1. The file is read (:mod:`.sources`): a syntax error or an invalid notebook is a verdict.
2. A sandbox child starts at once (:mod:`.sandbox`), so its ``import torch`` overlaps with
   the parent building every case and computing the reference answers *here*, on the
   grading device (:func:`mechinterp_edu.device.get_device`). Cases and references are
   cached per exercise for the life of the process (the gradebook grades many students).
3. The child gets only the inputs, runs the learner's functions and sends back plain
   arrays; a crash, ``os._exit`` or timeout costs only the exercise it happened in.
4. :func:`mechinterp_edu.grader.assess.assess` decides pass/fail and explains failures.

``sandbox=False`` runs trusted code (the solutions, in fast tests) in this process.
A spec's ``Exercise.compare(got, expected, case)`` receives CPU torch tensors (float64
for floating outputs), Python numbers, tuples of these, or for "set"/"list" outputs a
set / list of tuples of ints.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mechinterp_edu.grader.prepare import (_CACHE, _mistake_outputs, _prepare, _terms,  # noqa: F401
                                           _to_torch)
from mechinterp_edu.grader.protocol import ExerciseRun
from mechinterp_edu.grader.sandbox import Limits, RunResult, SandboxRunner, run_in_process
from mechinterp_edu.grader.sources import (Submission, lesson_from_name, load_submission,
                                           submission_from_text)

ExerciseSelection = Optional[Sequence[Union[str, Any]]]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0, 9), *range(11, 32), 127, *range(128, 160)]}


def clean_text(text) -> str:
    """Control characters (all but newline and tab) escaped: feedback can draw nothing on a terminal."""
    return str(text).translate(_CONTROL)


@dataclass
class ExerciseResult:
    exercise: str
    passed: bool
    score: float
    max_score: float
    feedback: str = ""

    def __post_init__(self):
        self.exercise, self.feedback = clean_text(self.exercise), clean_text(self.feedback)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FileReport:
    file: str
    lesson: Optional[int]
    score: float
    max_score: float
    results: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # not part of the JSON contract
    seconds: float = 0.0

    def __post_init__(self):
        self.file, self.notes = clean_text(self.file), [clean_text(n) for n in self.notes]

    @property
    def passed(self) -> bool:
        """True when every graded exercise passed (and there was at least one)."""
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"file": self.file, "lesson": self.lesson, "score": self.score,
                "max_score": self.max_score, "results": [r.to_dict() for r in self.results]}


# --------------------------------------------------------------------------- exercises
def resolve_lesson(lesson) -> Optional[int]:
    if lesson is None:
        return None
    from mechinterp_edu.course import get_lesson

    return get_lesson(lesson).number


def resolve_exercises(lesson: Optional[int], exercises: ExerciseSelection) -> list:
    """The Exercise objects to grade (see the module docstring)."""
    from mechinterp_edu.grader.spec import Exercise

    if exercises is not None and all(isinstance(e, Exercise) for e in exercises):
        return list(exercises)
    if lesson is None:
        raise ValueError("which lesson? Name the file NN_name.py (e.g. 01_tensor_products.py) "
                         "or pass --lesson NN")
    registered = lesson_exercises(lesson)
    if exercises is None:
        return registered
    by_name = {e.name: e for e in registered}
    chosen = []
    for item in exercises:
        if isinstance(item, Exercise):
            chosen.append(item)
        elif item in by_name:
            chosen.append(by_name[item])
        else:
            known = ", ".join(by_name) or "none"
            raise LookupError(f"lesson {lesson} has no exercise called {item!r} (its exercises: {known})")
    return chosen


def lesson_exercises(lesson: int) -> list:
    from mechinterp_edu.course import get_lesson
    from mechinterp_edu.grader.spec import exercises_for

    info = get_lesson(lesson)
    try:
        return exercises_for(info.number)
    except ModuleNotFoundError as exc:
        if exc.name and info.grading.startswith(exc.name):
            raise LookupError(f"lesson {info.number:02d} ({info.slug}) has no graded exercises yet "
                              f"({info.grading} does not exist)") from None
        raise


# --------------------------------------------------------------------------- grading
ALLOWED_NOTE = "the grader runs your file on its own, without the course's code or other packages"


def is_grader_error(result: ExerciseResult) -> bool:
    """The grader failed on this exercise (not the learner): such feedback starts so."""
    return result.feedback.startswith("grader error")


def _load_error_feedback(error: dict) -> str:
    message = error.get("message", "")
    if error.get("etype") in ("ModuleNotFoundError", "ImportError"):
        from mechinterp_edu.grader._learner_io import allowed_imports_text

        if "may import only" not in message:
            message += f". Graded files may import only {allowed_imports_text()}"
        return f"your file could not be loaded: {message} ({ALLOWED_NOTE})"
    if error.get("exit"):
        return ("your file called sys.exit() (or raised SystemExit) while loading: remove it; the "
                "grader imports your file and calls your functions")
    if error.get("etype") == "SyntaxError":
        return f"syntax error: {message}"
    text = (f"your file raised {error.get('etype', 'an exception')} while loading, before any "
            "exercise could run")
    tb = error.get("traceback", "")
    return text + (":\n" + tb.rstrip() + "\n" + message if tb else f": {message}")


def _device_name() -> str:
    from mechinterp_edu.device import get_device

    return str(get_device())


def _grade_submission(sub: Submission, lesson, exercises: ExerciseSelection, sandbox: bool,
                      limits: Optional[Limits], file_label: str) -> FileReport:
    from mechinterp_edu.grader.assess import assess

    start = time.perf_counter()
    limits = limits or Limits()
    lesson_number = resolve_lesson(lesson)
    runner = None
    if sandbox and not sub.problem and sub.sources:
        runner = SandboxRunner(sub.sources, sub.continue_on_error, limits)   # starts importing torch now
    chosen = resolve_exercises(lesson_number, exercises)
    if lesson_number is None and chosen:
        lesson_number = chosen[0].lesson
    report = FileReport(file_label, lesson_number, 0, sum(e.points for e in chosen),
                        notes=list(sub.notes))
    if not chosen:
        return report
    results: dict[int, ExerciseResult] = {}
    if sub.problem or not sub.sources:
        problem = sub.problem or "the notebook has no code cells to grade"
        for i, ex in enumerate(chosen):
            results[i] = ExerciseResult(ex.name, False, 0, ex.points, problem)
    else:
        device = _device_name()
        prepared = [_prepare(ex, device) for ex in chosen]
        runnable = [i for i, p in enumerate(prepared) if not p.error]
        for i, p in enumerate(prepared):
            if p.error:
                results[i] = ExerciseResult(p.exercise.name, False, 0, p.exercise.points, p.error)
        job, inputs = [], {}
        for i in runnable:
            p = prepared[i]
            job.append({"name": p.exercise.name, "output": p.exercise.output, "cases": p.specs})
            inputs.update(p.arrays)
        timeouts = [limits.exercise_timeout(prepared[i].exercise.timeout_s) for i in runnable]
        run = RunResult([], [])
        if runnable:
            expected = [[d.expected for d in prepared[i].data] for i in runnable]
            try:
                if runner is not None:
                    run = runner.run(job, inputs, timeouts, device, expected)
                else:
                    run = run_in_process(sub.sources, sub.continue_on_error, job, inputs, device,
                                         expected)
            except Exception as exc:  # noqa: BLE001 - the grader's failure, said per exercise
                message = f"grader error: running the file failed ({type(exc).__name__}: {exc})"
                run = RunResult([], [ExerciseRun("grader_error", message=message) for _ in runnable])
        fatal = ""
        if run.load_errors and not sub.continue_on_error:
            fatal = _load_error_feedback(run.load_errors[0])
        cell_notes = [f"note: {e.get('source', 'a cell')} raised {e.get('message', e.get('etype', ''))}"
                      for e in run.load_errors] if sub.continue_on_error else []
        for slot, i in enumerate(runnable):
            p = prepared[i]
            ex_run = run.exercises[slot]
            if fatal:
                passed, feedback = False, fatal
            elif ex_run.status == "load_failed" and ex_run.message:
                passed, feedback = False, ex_run.message
            else:
                if p.exercise.compare is not None and p.real_cases() is None:
                    results[i] = ExerciseResult(p.exercise.name, False, 0, p.exercise.points,
                                                "grader error: the cases could not be rebuilt")
                    continue
                try:
                    passed, feedback = assess(
                        p.exercise, p.data, ex_run,
                        mistake_outputs=lambda p=p: _mistake_outputs(p),
                        terms_for=lambda j, p=p: _terms(p, j),
                        to_torch=lambda v, p=p: _to_torch(v, p.exercise.output),
                        memory_mb=limits.memory_mb)
                except Exception as exc:  # noqa: BLE001 - one exercise's grader error, not the file's
                    passed, feedback = False, (f"grader error while checking `{p.exercise.name}`: "
                                               f"{type(exc).__name__}: {exc}")
                if not passed and (cell_notes or sub.notes):
                    feedback = "\n".join([feedback, *sub.notes, *cell_notes])
            results[i] = ExerciseResult(p.exercise.name, passed, p.exercise.points if passed else 0,
                                        p.exercise.points, feedback)
    report.results = [results[i] for i in range(len(chosen))]
    report.score = sum(r.score for r in report.results)
    report.seconds = time.perf_counter() - start
    return report


def grade_source(source: str, lesson=None, exercises: ExerciseSelection = None,
                 sandbox: bool = True, *, kind: str = "py", filename: Optional[str] = None,
                 limits: Optional[Limits] = None) -> FileReport:
    """Grade source text (a .py file's text, or a notebook's JSON with ``kind="ipynb"``)."""
    display = filename or ("submission.ipynb" if kind == "ipynb" else "submission.py")
    sub = submission_from_text(source, kind, Path(display).name)
    return _grade_submission(sub, lesson, exercises, sandbox, limits, display)


def grade_file(path, lesson=None, exercises: ExerciseSelection = None, *,
               limits: Optional[Limits] = None, sandbox: bool = True) -> FileReport:
    """Grade a .py file or an .ipynb notebook. The lesson comes from ``lesson`` or the file's
    name (``NN_name.py``); a missing file or an unknown lesson raises with a clear message."""
    from mechinterp_edu.grader.spec import Exercise

    path = Path(path)
    if path.suffix.lower() not in (".py", ".ipynb"):
        raise ValueError(f"cannot grade {path.name}: only .py files and .ipynb notebooks can be "
                         "graded (save your work as one of those)")
    explicit = bool(exercises) and all(isinstance(e, Exercise) for e in exercises)
    named = lesson_from_name(path)
    if lesson is None and not explicit:
        lesson = named
        if lesson is None:
            raise ValueError(f"cannot tell which lesson {path.name} belongs to: name it NN_name.py "
                             "(e.g. 01_tensor_products.py) or pass --lesson NN")
    sub = load_submission(path)
    if named is not None and lesson is not None and not explicit and resolve_lesson(lesson) != named:
        sub.notes.insert(0, f"warning: {path.name} is named as a lesson {named:02d} file but was "
                            f"graded as lesson {resolve_lesson(lesson):02d}: is --lesson right?")
    return _grade_submission(sub, lesson, exercises, sandbox, limits, str(path))
