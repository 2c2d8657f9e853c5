"""Turning a learner's file into source code to run: a ``.py`` file, or a notebook's cells.

* Lesson files are named ``NN_name.py`` / ``NN_name.ipynb``; :func:`lesson_from_name`
  reads the lesson number from that.
* Notebooks are read with nbformat. Invalid JSON (or not a notebook) is a clear verdict,
  never a crash. The code cells tagged ``graded`` are used when any cell carries that
  tag, else every code cell. IPython magics and shell lines (``%time``, ``!pip``,
  ``%%bash`` cells) are replaced by ``pass`` so the rest of the cell still runs.
* Each notebook cell becomes its own source (``file [cell 3]``), run in order in one
  namespace; a failing cell is reported and the next cells still run, as in Jupyter.
* A ``.py`` file is checked for syntax errors here, without running it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

LESSON_FILE = re.compile(r"^(\d{1,2})_[\w\-]+\.(py|ipynb)$")
MAX_SOURCE_BYTES = 5 * 2**20
GRADED_TAG = "graded"
_KEEP_BODY_CELL_MAGICS = {"time", "capture", "timeit", "prun", "debug"}
_HELP_LINE = re.compile(r"^\??[\w.]+\?{1,2}\s*$")
_MAGIC_ASSIGN = re.compile(r"^[\w.,\s]+=\s*[!%]")


@dataclass
class Submission:
    display: str                     # how the file is named in messages and tracebacks
    kind: str                        # "py" | "ipynb"
    sources: list[dict] = field(default_factory=list)   # [{"name", "code"}]
    continue_on_error: bool = False  # notebooks: a failing cell does not stop the next ones
    problem: str = ""                # a file-level verdict (unreadable, invalid notebook, syntax)
    notes: list[str] = field(default_factory=list)


MAGIC_PLACEHOLDER = "pass  # IPython-only line removed by the grader"   # stands for a magic line


def lesson_from_name(path) -> Optional[int]:
    match = LESSON_FILE.match(Path(path).name)
    return int(match.group(1)) if match else None


def _syntax_message(exc: SyntaxError, display: str) -> str:
    where = f"line {exc.lineno}" if exc.lineno else "somewhere"
    text = f"syntax error in {display} at {where}: {exc.msg}"
    if exc.text:
        line = exc.text.rstrip("\n")
        text += f"\n    {line.strip()}"
        if exc.offset and exc.offset > 0:
            indent = len(line) - len(line.lstrip())
            text += "\n    " + " " * max(0, exc.offset - 1 - indent) + "^"
    return text + "\nThe file cannot run until this is fixed, so none of its exercises could be graded."


def strip_magics(code: str) -> str:
    """Replace IPython-only lines by ``pass`` (same indentation), drop non-Python cells."""
    lines = code.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        magic = lines[0].lstrip()[2:].split(None, 1)[0] if lines[0].lstrip()[2:].strip() else ""
        if magic not in _KEEP_BODY_CELL_MAGICS:
            return ""
        lines = ["pass"] + lines[1:]
    out = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith(("%", "!")) or _HELP_LINE.match(stripped) or _MAGIC_ASSIGN.match(stripped):
            out.append(indent + MAGIC_PLACEHOLDER)
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if code.endswith("\n") else "")


def _decode(data: bytes, display: str) -> tuple[str, str]:
    if len(data) > MAX_SOURCE_BYTES:
        return "", f"{display} is {len(data) // 2**20} MB: too large to be an exercise file"
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as exc:
        return "", f"{display} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"


def python_submission(text: str, display: str) -> Submission:
    sub = Submission(display, "py", [{"name": display, "code": text}])
    try:
        compile(text, display, "exec", dont_inherit=True)
    except SyntaxError as exc:
        sub.problem = _syntax_message(exc, display)
    except (ValueError, RecursionError, MemoryError) as exc:
        sub.problem = f"{display} cannot be compiled: {type(exc).__name__}: {exc}"
    return sub


def notebook_submission(text: str, display: str) -> Submission:
    import json

    import nbformat

    sub = Submission(display, "ipynb", continue_on_error=True)
    try:
        raw = json.loads(text)
    except RecursionError:
        sub.problem = (f"{display} is not a valid notebook: its JSON is nested far too deeply. "
                       "Re-save it from Jupyter, or restore a previous version")
        return sub
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        where = f" (line {line}, column {col})" if line else ""
        sub.problem = (f"{display} is not a valid notebook: it is not valid JSON{where}: "
                       f"{getattr(exc, 'msg', exc)}. Re-save it from Jupyter, or restore a "
                       "previous version")
        return sub
    try:
        notebook = nbformat.reads(text, as_version=4)
    except RecursionError:
        sub.problem = f"{display} is nested far too deeply to be a Jupyter notebook. Re-save it from Jupyter"
        return sub
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds; all mean "not a notebook"
        if isinstance(raw, dict) and isinstance(raw.get("cells"), list) and raw.get("nbformat") == 4:
            notebook = raw           # a v4 notebook missing optional keys: its cells are enough
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            sub.problem = (f"{display} is valid JSON but not a Jupyter notebook ({first[:200]}). "
                           "Re-save it from Jupyter")
            return sub
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        sub.problem = f"{display} has no list of cells: not a Jupyter notebook"
        return sub
    code_cells = [(i, c) for i, c in enumerate(cells, start=1)
                  if isinstance(c, dict) and c.get("cell_type") == "code"]

    def tags(cell) -> list:
        metadata = cell.get("metadata") or {}
        value = metadata.get("tags") if isinstance(metadata, dict) else None
        return value if isinstance(value, list) else []

    tagged = [(i, c) for i, c in code_cells if GRADED_TAG in tags(c)]
    chosen = tagged or code_cells
    if tagged:
        sub.notes.append(f"graded the {len(tagged)} cell(s) tagged '{GRADED_TAG}'")
    for number, cell in chosen:
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        if not isinstance(source, str):
            continue
        code = strip_magics(source)
        name = f"{display} [cell {number}]"
        if not code.strip():
            continue
        try:
            compile(code, name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            sub.notes.append(_syntax_message(exc, name).rsplit("\n", 1)[0]
                             + "\n(this cell was skipped; the other cells still ran)")
            continue
        except (ValueError, RecursionError, MemoryError) as exc:
            sub.notes.append(f"{name} cannot be compiled ({type(exc).__name__}); it was skipped")
            continue
        sub.sources.append({"name": name, "code": code})
    return sub


def submission_from_text(text: str, kind: str, display: str) -> Submission:
    if kind == "ipynb":
        return notebook_submission(text, display)
    if kind == "py":
        return python_submission(text, display)
    raise ValueError(f"cannot grade a {kind!r} file: use a .py file or a .ipynb notebook")


def load_submission(path) -> Submission:
    """Read ``path`` (.py or .ipynb). Missing or unreadable files raise OSError/ValueError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".py", ".ipynb"):
        raise ValueError(f"cannot grade {path}: only .py files and .ipynb notebooks can be graded")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    data = path.read_bytes()
    display = path.name
    text, problem = _decode(data, display)
    if problem:
        return Submission(display, suffix[1:], problem=problem)
    return submission_from_text(text, suffix[1:], display)
