"""Exercise files without Streamlit: signatures from the stub, notebooks to source, atomic save."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from mechinterp_edu.atomic import write_atomically

MAX_UPLOAD_BYTES = 1_000_000


class ExerciseFileError(ValueError):
    """An uploaded or saved file cannot be used; the message says why and what to do."""


@dataclass
class FunctionDoc:
    name: str
    signature: str      # "def f(x: Float[Tensor, 'pos d_model'], ...) -> ...:"
    docstring: str


def function_docs(source: str) -> dict[str, FunctionDoc]:
    """Top-level functions of ``source`` with their signature line and docstring."""
    tree = ast.parse(source)
    docs = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = ast.unparse(node.args)
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            docs[node.name] = FunctionDoc(node.name, f"def {node.name}({args}){returns}:",
                                          ast.get_docstring(node) or "")
    return docs


def syntax_problem(source: str) -> str | None:
    """None if ``source`` parses, else 'line N: what is wrong' for the learner."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        text = (exc.text or "").rstrip()
        shown = f": `{text.strip()}`" if text.strip() else ""
        return f"{where}: {exc.msg}{shown}"
    return None


def upload_to_source(name: str, data: bytes) -> str:
    """The Python source of an uploaded ``.py`` or ``.ipynb`` (code cells joined, magics dropped)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ExerciseFileError(f"{name} is {len(data) / 1e6:.1f} MB; an exercise file should be far "
                                f"smaller (limit {MAX_UPLOAD_BYTES / 1e6:.0f} MB). Upload the right file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExerciseFileError(f"{name} is not UTF-8 text. Upload the .py or .ipynb file itself "
                                "(not a zip or a PDF).") from None
    suffix = Path(name).suffix.lower()
    if suffix == ".py":
        return text
    if suffix == ".ipynb":
        return notebook_to_source(text, name)
    raise ExerciseFileError(f"{name}: only .py and .ipynb files can be graded. Save your work as one of those.")


def notebook_to_source(text: str, name: str = "notebook") -> str:
    """The cells the grader would run (its own parser: ``graded`` tags, magics, bad cells)."""
    from mechinterp_edu.grader.sources import MAGIC_PLACEHOLDER, notebook_submission

    sub = notebook_submission(text, name)
    if sub.problem:
        raise ExerciseFileError(sub.problem)
    if not sub.sources:
        raise ExerciseFileError(f"{name} has no code cells. Write your functions in code cells and upload again.")
    cells = ["\n".join(line for line in s["code"].splitlines()       # top-level placeholders only
                       if line != MAGIC_PLACEHOLDER).strip("\n")
             for s in sub.sources]
    return "\n\n\n".join(c for c in cells if c) + "\n"


def save_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that the old file survives any failure mid-write."""
    write_atomically(path, lambda fh: fh.write(text.encode("utf-8")))
