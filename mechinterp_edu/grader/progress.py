"""The learner's progress store: every grade run is recorded; the app reads it.

Where: ``$MECHINTERP_EDU_PROGRESS`` if set, else ``~/.mechinterp_edu/progress.json``.

Write API (the grader): :func:`record_report` ``(report, path=None)``.
Read API (the app): :func:`load_progress` ``(path=None) -> Progress`` with
``progress.lessons[lesson].exercises[name]`` an :class:`ExerciseProgress` (best score,
max score, passed, attempts, last feedback...), per-lesson totals
(``LessonProgress.score / max_score / passed / attempted``), ``progress.last_graded``
and ``progress.warning`` (set when the store could not be read). Reading never writes.

Safety:

* Writes are atomic (a temp file in the same folder, fsync, ``os.replace``) and done
  under an exclusive lock, so two grade runs at once cannot lose each other's results.
* Results are merged: the best score of each exercise is kept, attempts are counted,
  and every run is appended to the history. Nothing earlier is lost.
* A corrupt store (not JSON, or not our format) is moved aside to
  ``progress.json.corrupt-<time>`` with a warning the next time a run is recorded; the
  learner's file is never deleted, and grading never crashes because of it.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from mechinterp_edu.atomic import write_atomically

ENV_VAR = "MECHINTERP_EDU_PROGRESS"
FORMAT = "mechinterp-edu-progress"
VERSION = 1


class ProgressWarning(UserWarning):
    """The progress store had a problem (it was moved aside, or could not be written)."""


def store_path() -> Path:
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return Path(value).expanduser()
    return Path.home() / ".mechinterp_edu" / "progress.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


# --------------------------------------------------------------------------- read API
@dataclass
class ExerciseProgress:
    lesson: int
    exercise: str
    best_score: float = 0.0
    max_score: float = 0.0
    passed: bool = False              # passed at least once
    attempts: int = 0
    last_score: float = 0.0
    last_passed: bool = False
    last_feedback: str = ""
    last_file: str = ""
    first_passed_at: Optional[str] = None
    last_graded_at: Optional[str] = None


@dataclass
class LessonProgress:
    lesson: int
    exercises: dict[str, ExerciseProgress] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(e.best_score for e in self.exercises.values())

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises.values())

    @property
    def passed(self) -> int:
        return sum(1 for e in self.exercises.values() if e.passed)

    @property
    def attempted(self) -> int:
        return len(self.exercises)


@dataclass
class Progress:
    path: str
    lessons: dict[int, LessonProgress] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)     # history, oldest first
    last_graded: Optional[str] = None
    warning: Optional[str] = None                     # the store could not be read

    @property
    def exists(self) -> bool:
        return bool(self.runs) or bool(self.lessons)

    def exercise(self, lesson: int, name: str) -> Optional[ExerciseProgress]:
        entry = self.lessons.get(lesson)
        return entry.exercises.get(name) if entry else None

    def rows(self) -> list[dict]:
        """One plain dict per exercise, sorted by lesson (for a table)."""
        return [asdict(e) for _, lesson in sorted(self.lessons.items())
                for e in lesson.exercises.values()]


def _empty_store() -> dict:
    return {"format": FORMAT, "version": VERSION, "exercises": {}, "runs": []}


class _Corrupt(Exception):
    pass


def _read_store(path: Path) -> dict:
    """The store's content; {} structure when absent; raises _Corrupt when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _empty_store()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Corrupt(f"cannot read it ({exc})") from None
    if not text.strip():
        raise _Corrupt("it is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _Corrupt(f"it is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _Corrupt("it is not a mechinterp-edu progress file")
    if not isinstance(data.get("exercises"), dict) or not isinstance(data.get("runs"), list):
        raise _Corrupt("its 'exercises' or 'runs' entries are damaged")
    return data


def _entry_from(key: str, raw: Any) -> Optional[ExerciseProgress]:
    if not isinstance(raw, dict):
        return None
    try:
        lesson = int(raw.get("lesson", key.split("/", 1)[0]))
        name = str(raw.get("exercise", key.split("/", 1)[-1]))
        return ExerciseProgress(
            lesson=lesson, exercise=name,
            best_score=float(raw.get("best_score", 0)), max_score=float(raw.get("max_score", 0)),
            passed=bool(raw.get("passed", False)), attempts=int(raw.get("attempts", 0)),
            last_score=float(raw.get("last_score", 0)), last_passed=bool(raw.get("last_passed", False)),
            last_feedback=str(raw.get("last_feedback", "")), last_file=str(raw.get("last_file", "")),
            first_passed_at=raw.get("first_passed_at"), last_graded_at=raw.get("last_graded_at"))
    except (TypeError, ValueError):
        return None


def load_progress(path=None) -> Progress:
    """Read the store (never writes). A damaged store gives an empty Progress with ``warning``."""
    path = Path(path) if path is not None else store_path()
    progress = Progress(str(path))
    try:
        data = _read_store(path)
    except _Corrupt as exc:
        progress.warning = (f"the progress store {path} could not be read: {exc}. It will be moved "
                            "aside (kept, not deleted) the next time you grade")
        return progress
    for key, raw in data["exercises"].items():
        entry = _entry_from(str(key), raw)
        if entry is None:
            continue
        lesson = progress.lessons.setdefault(entry.lesson, LessonProgress(entry.lesson))
        lesson.exercises[entry.exercise] = entry
    progress.runs = [r for r in data["runs"] if isinstance(r, dict)]
    stamps = [e.last_graded_at for l in progress.lessons.values() for e in l.exercises.values()
              if isinstance(e.last_graded_at, str)]
    progress.last_graded = max(stamps) if stamps else None
    return progress


# --------------------------------------------------------------------------- write API
@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (a ``.lock`` file next to it) while the block runs."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield


def _atomic_write(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1, sort_keys=True)
    write_atomically(path, lambda fh: fh.write(text.encode("utf-8")))


def _move_aside(path: Path, why: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    message = (f"the progress store {path} was damaged ({why}); it was moved to {target} and a "
               "new store was started. Your earlier results are still in that file.")
    warnings.warn(message, ProgressWarning, stacklevel=3)
    print(f"warning: {message}", file=sys.stderr)
    return target


def record_report(report, path=None, when: Optional[str] = None) -> bool:
    """Merge one FileReport into the store. Returns False (with a warning) if it could not be
    written; grading never fails because of the progress store."""
    path = Path(path) if path is not None else store_path()
    when = when or _now()
    try:
        with _locked(path):
            try:
                data = _read_store(path)
            except _Corrupt as exc:
                _move_aside(path, str(exc))
                data = _empty_store()
            lesson = report.lesson
            for result in report.results:
                key = f"{lesson}/{result.exercise}"
                old = _entry_from(key, data["exercises"].get(key))
                entry = old or ExerciseProgress(lesson=lesson if lesson is not None else 0,
                                                exercise=result.exercise)
                entry.attempts += 1
                entry.max_score = float(result.max_score)
                entry.best_score = max(entry.best_score, float(result.score))
                entry.last_score = float(result.score)
                entry.last_passed = bool(result.passed)
                entry.last_feedback = str(result.feedback)[:4000]
                entry.last_file = str(report.file)
                entry.last_graded_at = when
                if result.passed and not entry.passed:
                    entry.passed = True
                    entry.first_passed_at = when
                data["exercises"][key] = asdict(entry)
            data["runs"].append({"at": when, "file": str(report.file), "lesson": lesson,
                                 "score": report.score, "max_score": report.max_score,
                                 "results": {r.exercise: r.score for r in report.results}})
            _atomic_write(path, data)
        return True
    except OSError as exc:
        message = f"could not record progress in {path}: {exc}"
        warnings.warn(message, ProgressWarning, stacklevel=2)
        print(f"warning: {message}", file=sys.stderr)
        return False


# --------------------------------------------------------------------------- CLI
def progress_command(args) -> int:
    """``python -m mechinterp_edu progress``: the learner's recorded results, per lesson."""
    from mechinterp_edu.course import LESSONS

    path = store_path()
    progress = load_progress(path)
    if progress.warning:
        print(f"warning: {progress.warning}")
        return 1
    if not progress.exists:
        print(f"No progress recorded yet ({path}). Run `python -m mechinterp_edu grade` to "
              "grade your exercises.")
        return 0
    print(f"Progress ({path})")
    titles = {l.number: l.title for l in LESSONS}
    total = total_max = 0.0
    for number in sorted(progress.lessons):
        lesson = progress.lessons[number]
        total += lesson.score
        total_max += lesson.max_score
        print(f"Lesson {number:02d}  {titles.get(number, '')}: {lesson.passed}/{lesson.attempted} "
              f"exercises passed, {lesson.score:g}/{lesson.max_score:g} points")
        for entry in lesson.exercises.values():
            mark = "passed" if entry.passed else "not yet"
            print(f"  {entry.exercise:<32} {entry.best_score:g}/{entry.max_score:g}  {mark}  "
                  f"({entry.attempts} attempt{'s' if entry.attempts != 1 else ''}, last {entry.last_graded_at})")
    print(f"Total: {total:g}/{total_max:g} points over the exercises graded so far.")
    return 0
