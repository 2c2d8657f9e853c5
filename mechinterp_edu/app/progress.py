"""Read-only view of the learner's progress store (written by the grader).

The store itself belongs to :mod:`mechinterp_edu.grader.progress`; this module only
turns what it reads into what the home page shows. If the grader's module is not
there (or the store is unreadable) the app says "no progress recorded yet" instead
of failing, and never writes to the store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LessonProgress:
    score: float = 0.0
    max_score: float = 0.0
    passed: int = 0
    attempted: int = 0


@dataclass
class ProgressSummary:
    path: str = ""
    lessons: dict[int, LessonProgress] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)   # one per exercise, for a table
    last_graded: str | None = None
    error: str | None = None


def read() -> ProgressSummary | None:
    """The learner's progress, or None when no progress store exists yet."""
    try:
        from mechinterp_edu.grader import progress as store
    except ImportError:
        return None
    try:
        return _summarise(store)
    except Exception as exc:  # noqa: BLE001 - a damaged store must not break the home page
        from mechinterp_edu.app.errors import first_line

        return ProgressSummary(error=f"The progress store could not be read ({first_line(exc)}). "
                                     "Your grades are safe in the file; fix or move it and reload.")


def _summarise(store) -> ProgressSummary:  # filled in against the grader's read API
    raise NotImplementedError("progress store read API not known yet")
