"""``python -m mechinterp_edu grade [FILE_OR_LESSON ...] [--lesson NN] [--json] [--no-progress]``.

Each argument is a .py / .ipynb file, or a lesson (number, slug or stem) meaning that
lesson's file in ``exercises/``. No argument: every lesson file in ``exercises/``.

Human output, per file: a header, one line per exercise (``✓ name  3/3``), the feedback
of failures indented below, and a total. ``--json``: one JSON object per file, one per
line: ``{"file", "lesson", "score", "max_score", "results": [{"exercise", "passed",
"score", "max_score", "feedback"}]}``. Exit code: 0 every graded exercise passed, 1 some
failed, 2 a usage error or a grader (infrastructure) error. Feedback never carries control
characters (they are escaped), so a submission cannot draw on the terminal.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from mechinterp_edu.grader.sources import LESSON_FILE


class UsageError(ValueError):
    """Bad paths or lessons on the command line: one clear line."""


def _marks() -> tuple[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗".encode(encoding)
        return "✓", "✗"
    except (UnicodeEncodeError, LookupError):
        return "PASS", "FAIL"


def resolve_targets(items: list[str], lesson: Optional[str]) -> list[tuple[Path, Optional[str]]]:
    """(path, lesson) pairs for the command line's arguments."""
    from mechinterp_edu.course import EXERCISES_DIR, UnknownLessonError, get_lesson

    def lesson_files(folder: Path) -> list[tuple[Path, Optional[str]]]:
        files = sorted(p for p in folder.iterdir() if p.is_file() and LESSON_FILE.match(p.name))
        if not files:
            raise UsageError(f"no lesson files (NN_name.py / NN_name.ipynb) in {folder}")
        return [(p, lesson) for p in files]

    if not items:
        if not EXERCISES_DIR.is_dir():
            raise UsageError(f"no exercises folder at {EXERCISES_DIR}; pass a file to grade")
        return lesson_files(EXERCISES_DIR)
    targets = []
    for item in items:
        path = Path(item)
        if path.is_file():
            targets.append((path, lesson))
            continue
        if path.is_dir():            # a folder: every NN_name.py / NN_name.ipynb in it
            targets.extend(lesson_files(path))
            continue
        if path.suffix.lower() in (".py", ".ipynb") or "/" in item or "\\" in item:
            raise UsageError(f"no such file: {item}")
        try:
            info = get_lesson(item)
        except UnknownLessonError as exc:
            raise UsageError(f"{item!r} is neither a file nor a lesson. {exc}") from None
        candidates = [info.exercise_path, info.exercise_path.with_suffix(".ipynb")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise UsageError(f"lesson {info.number:02d} has no exercise file yet "
                             f"(looked for {info.exercise_path})")
        targets.extend((c, str(info.number)) for c in found)
    return targets


def render_report(report, marks=None) -> str:
    ok, bad = marks or _marks()
    lines = []
    title = f"{report.file}"
    if report.lesson is not None:
        title += f"  (lesson {report.lesson:02d})"
    lines.append(title)
    lines += [f"  {note}" for note in getattr(report, "notes", []) if note.startswith("warning:")]
    if not report.results:
        lines.append("  no graded exercises")
    width = max([len(r.exercise) for r in report.results] + [8])
    for r in report.results:
        mark = ok if r.passed else bad
        lines.append(f"  {mark} {r.exercise:<{width}}  {r.score:g}/{r.max_score:g}")
        if not r.passed and r.feedback:
            for line in r.feedback.splitlines():
                lines.append(f"      {line}")
    passed = sum(1 for r in report.results if r.passed)
    lines.append(f"  total {report.score:g}/{report.max_score:g}  "
                 f"({passed} of {len(report.results)} exercises passed)")
    return "\n".join(lines)


def grade_command(args) -> int:
    from mechinterp_edu.grader.grade import clean_text, grade_file, is_grader_error

    try:
        targets = resolve_targets(list(getattr(args, "paths", []) or []), getattr(args, "lesson", None))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = not getattr(args, "no_progress", False)
    as_json = getattr(args, "json", False)
    all_passed = True
    graded = 0
    total = total_max = 0.0
    errors = 0
    for path, lesson in targets:
        try:
            report = grade_file(path, lesson)
        except (LookupError, ValueError, OSError) as exc:
            errors += 1
            print(clean_text(f"error: {path}: {exc}"), file=sys.stderr, flush=True)
            continue
        except Exception as exc:  # noqa: BLE001 - a grader bug: say so, grade the other files
            errors += 1
            print(clean_text(f"grader error: {path}: {type(exc).__name__}: {exc}"), file=sys.stderr,
                  flush=True)
            continue
        if any(is_grader_error(r) for r in report.results):
            errors += 1
        graded += len(report.results)
        all_passed = all_passed and report.passed
        total += report.score
        total_max += report.max_score
        if as_json:
            print(json.dumps(report.to_dict()), flush=True)
        else:
            print(render_report(report), flush=True)
        if record and report.results:
            from mechinterp_edu.grader.progress import record_report

            record_report(report)
    if not as_json and len(targets) > 1:
        print(f"All files: {total:g}/{total_max:g} points")
    if errors:
        return 2
    if graded == 0:
        print("Nothing was graded.", file=sys.stderr)
        return 1
    return 0 if all_passed else 1
