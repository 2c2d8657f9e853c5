"""Run a lesson's code cells in the app, like a notebook.

The cells are the lesson's own (trusted) code, run in the server process in one namespace
per learner and lesson. Running a cell first runs the cells above it that have not run yet
(they define what it uses), then the cell itself; its printed output and the value of its
last line (as in Jupyter) are kept for the page to show below the cell.

Printed output is captured by redirecting ``sys.stdout`` for the duration of the cell (the
app runs one script per session in its own thread; two learners pressing Run at the very
same moment may see each other's prints).
"""
from __future__ import annotations

import ast
import contextlib
import io
import traceback
from dataclasses import dataclass, field
from typing import Any

MAX_OUTPUT_CHARS = 20_000
MAX_REPR_CHARS = 4_000


@dataclass
class CellRun:
    stdout: str = ""
    value: str | None = None        # repr of the last line's value (None: no value)
    error: str | None = None        # one line: what went wrong and where
    notes: list[str] = field(default_factory=list)   # earlier cells that failed when run for this one


@dataclass
class Kernel:
    """One learner's namespace for one lesson, and which cells have run in it."""
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__lesson__"})
    done: set[int] = field(default_factory=set)
    runs: dict[int, CellRun] = field(default_factory=dict)

    def run(self, cells: list[str], index: int) -> CellRun:
        """Run cell ``index`` (after any unrun cell above it); return its result. An earlier cell
        that fails does not stop the others (as in a notebook run top to bottom); it is noted."""
        notes = []
        for i in range(index):
            if i not in self.done:
                earlier = self._exec(cells[i], i)
                self.runs[i] = earlier
                if earlier.error:
                    notes.append(f"Cell {i + 1} of this lesson, run first, failed: {earlier.error}")
        result = self._exec(cells[index], index)
        result.notes = notes
        self.runs[index] = result
        return result

    def _exec(self, source: str, index: int) -> CellRun:
        out = io.StringIO()
        result = CellRun()
        try:
            tree = ast.parse(source, filename=f"<cell {index + 1}>")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            with contextlib.redirect_stdout(out):
                exec(compile(tree, f"<cell {index + 1}>", "exec"), self.namespace)  # noqa: S102 - lesson code
                if last is not None:
                    value = eval(compile(ast.Expression(last.value), f"<cell {index + 1}>", "eval"),  # noqa: S307
                                 self.namespace)
                    if value is not None:
                        result.value = _short(repr(value), MAX_REPR_CHARS)
            self.done.add(index)
        except SyntaxError as exc:
            result.error = f"SyntaxError on line {exc.lineno} of the cell: {exc.msg}."
        except Exception as exc:  # noqa: BLE001 - shown under the cell, never a traceback
            result.error = f"{type(exc).__name__}: {exc}{_where(exc, index)}"
        result.stdout = _short(out.getvalue(), MAX_OUTPUT_CHARS)
        return result


def _where(exc: BaseException, index: int) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == f"<cell {index + 1}>"]
    return f" (line {frames[-1].lineno} of the cell)" if frames else ""


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit:,} more characters)"
