"""Parse a lesson source file (``lessons/NN_slug.md``): the one source per lesson.

The app page, the generated notebooks and the tests all read lessons through
:func:`load_lesson`. Format::

    ---                                  # YAML front matter
    number: 1
    title: A one-layer transformer as tensor products
    minutes: 60
    controls:                            # widgets the app shows; values reach live charts as ctx
      - {name: model, kind: select, options: [skip_trigrams, random], default: skip_trigrams}
      - {name: head, kind: int, min: 0, max: 3, default: 0}
      - {name: prompt, kind: text, default: "3 1 4 1 5"}
    ---
    Text before the first step becomes the step "intro".

    ::step residual The residual stream         # starts a step: key, then title
    Markdown with LaTeX ($...$, $$...$$).

    ```python
    # a code cell: shown in the app, run in the lesson notebook
    ```

    ::derivation tensor_products.logits          # a registered sympy derivation (all steps)
    ::derivation tensor_products.logits:direct   # ... or one of its steps
    ::chart tensor_products.attention_pattern    # a registered live chart
    ::exercise attention_patterns                # a graded exercise (function name)

Directives start at column 0 with ``::``. Anything else is markdown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

BlockKind = Literal["markdown", "code", "derivation", "chart", "exercise"]
DIRECTIVES = ("step", "derivation", "chart", "exercise")


class LessonFormatError(ValueError):
    """A lesson source file breaks the format; the message gives file and line."""


@dataclass
class Block:
    kind: BlockKind
    text: str          # markdown / code text, or the directive's argument (a registry name)
    line: int          # 1-based line in the source file


@dataclass
class LessonStep:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def refs(self, kind: BlockKind) -> list[str]:
        return [b.text for b in self.blocks if b.kind == kind]


@dataclass
class Lesson:
    path: Path
    meta: dict[str, Any]
    steps: list[LessonStep]

    @property
    def number(self) -> int:
        return int(self.meta["number"])

    @property
    def title(self) -> str:
        return str(self.meta["title"])

    @property
    def controls(self) -> list[dict[str, Any]]:
        return list(self.meta.get("controls") or [])

    def default_context(self) -> dict[str, Any]:
        return {c["name"]: c.get("default") for c in self.controls}

    def step(self, key: str) -> LessonStep:
        for s in self.steps:
            if s.key == key:
                return s
        raise KeyError(f"{self.path.name} has no step {key!r}")

    def refs(self, kind: BlockKind) -> list[str]:
        return [r for s in self.steps for r in s.refs(kind)]


_FENCE = re.compile(r"^```(\w*)\s*$")


def parse_lesson(text: str, path: Path | str = "<lesson>") -> Lesson:
    path = Path(path)
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise LessonFormatError(f"{path}: line 1 must be '---' opening the YAML front matter.")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise LessonFormatError(f"{path}: the front matter opened on line 1 is never closed with '---'.") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        raise LessonFormatError(f"{path}: front matter is not valid YAML: {exc}") from None
    for key in ("number", "title"):
        if key not in meta:
            raise LessonFormatError(f"{path}: front matter needs '{key}'.")

    steps: list[LessonStep] = [LessonStep("intro", str(meta["title"]))]
    md: list[str] = []
    md_start = end + 2

    def flush_markdown(upto_line: int) -> None:
        nonlocal md, md_start
        body = "\n".join(md).strip("\n")
        if body.strip():
            steps[-1].blocks.append(Block("markdown", body, md_start))
        md = []
        md_start = upto_line + 1

    i = end + 1
    while i < len(lines):
        line = lines[i]
        lineno = i + 1
        fence = _FENCE.match(line)
        if fence and fence.group(1) in ("python", "py"):
            flush_markdown(lineno)
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if j == len(lines):
                raise LessonFormatError(f"{path}:{lineno}: code block is never closed with ```.")
            steps[-1].blocks.append(Block("code", "\n".join(lines[i + 1:j]), lineno))
            i = j + 1
            md_start = i + 1
            continue
        if line.startswith("::"):
            word, _, arg = line[2:].partition(" ")
            if word not in DIRECTIVES:
                raise LessonFormatError(f"{path}:{lineno}: unknown directive '::{word}' (known: {', '.join(DIRECTIVES)}).")
            arg = arg.strip()
            if not arg:
                raise LessonFormatError(f"{path}:{lineno}: '::{word}' needs an argument.")
            flush_markdown(lineno)
            if word == "step":
                key, _, title = arg.partition(" ")
                if any(s.key == key for s in steps):
                    raise LessonFormatError(f"{path}:{lineno}: step key {key!r} is used twice.")
                steps.append(LessonStep(key, title.strip() or key))
            else:
                steps[-1].blocks.append(Block(word, arg, lineno))  # type: ignore[arg-type]
            i += 1
            continue
        md.append(line)
        i += 1
    flush_markdown(len(lines))
    if not steps[0].blocks:
        steps.pop(0)
    return Lesson(path, meta, steps)


def load_lesson(number_or_path: int | str | Path) -> Lesson:
    """Load by lesson number/slug (via the course map) or by path."""
    from mechinterp_edu.course import get_lesson

    if isinstance(number_or_path, Path) or str(number_or_path).endswith(".md"):
        path = Path(number_or_path)
    else:
        path = get_lesson(number_or_path).source_path
    if not path.exists():
        raise LessonFormatError(f"Lesson source {path} does not exist.")
    return parse_lesson(path.read_text(encoding="utf-8"), path)
