"""The app's side of the learner's progress store (owned by :mod:`mechinterp_edu.grader.progress`).

The app reads with ``load_progress()`` and, after grading on the Exercises page, records
the report with the grader's ``record_report()`` (atomic, merged, never loses earlier
results). If the grader's module is missing or the store cannot be read, the home page
says "no progress recorded yet" (with the store's warning) instead of failing.
"""
from __future__ import annotations

from typing import Any

from mechinterp_edu.app.errors import first_line, log_exception


def read() -> Any | None:
    """The grader's ``Progress`` object, or None when there is no progress store module."""
    try:
        from mechinterp_edu.grader.progress import load_progress
    except ImportError:
        return None
    try:
        return load_progress()
    except Exception as exc:  # noqa: BLE001 - load_progress should not raise; never break the page
        log_exception(exc, "reading the progress store")
        return None


def record(report) -> str | None:
    """Record a grading report. Returns None on success, else a message for the learner."""
    try:
        from mechinterp_edu.grader.progress import record_report, store_path
    except ImportError:
        return "Progress is not recorded: the progress store is not available in this version."
    try:
        if record_report(report):
            return None
        return f"Your grade could not be saved to the progress store ({store_path()}); check that it is writable."
    except Exception as exc:  # noqa: BLE001
        log_exception(exc, "recording progress")
        return f"Your grade could not be saved to the progress store ({first_line(exc)})."


def table(progress) -> list[dict[str, Any]]:
    """One row per graded exercise, for st.dataframe."""
    rows = []
    for number in sorted(progress.lessons):
        for e in progress.lessons[number].exercises.values():
            rows.append({"lesson": number, "exercise": e.exercise,
                         "best": f"{e.best_score:g} / {e.max_score:g}",
                         "passed": "yes" if e.passed else "not yet",
                         "attempts": e.attempts,
                         "last graded": (e.last_graded_at or "").replace("T", " ")})
    return rows
