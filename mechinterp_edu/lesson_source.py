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

Numbers from code
-----------------
A number the text states is never typed in: it is a placeholder ``{{name}}`` or
``{{name:FORMAT}}`` (a Python format spec: ``{{accuracy:.2%}}``, ``{{n_triples:,}}``,
``{{lift:.0f}}``), filled by :func:`load_lesson` from ``facts()`` of the lesson's module
``mechinterp_edu.lessons.<slug>.facts`` (``def facts() -> dict[str, object]``, cached,
computed by the lesson's own code; tests assert every fact against an independent
computation). So the app, the notebooks and the tests read the same numbers. The
values are cached on disk (:mod:`mechinterp_edu.facts`) so a page load does not recompute them.

* Placeholders are filled in markdown blocks and step titles, **including inside LaTeX
  math**: there the formatted value is made safe for TeX (``,`` becomes ``{,}`` so a
  thousands separator gets no extra space, ``%`` becomes ``\%`` instead of starting a TeX
  comment). ``$48^3 = {{n_triples:,}}$`` renders as 110,592.
* Placeholders are **not** filled in code: python code cells, other fenced blocks and
  inline code spans are shown as written. Code computes and prints its own numbers, and
  ``{{`` is legal Python (f-strings); leaving code alone also lets a lesson show the
  placeholder syntax itself.
* A placeholder whose name the lesson's facts do not define, or whose format spec does not
  apply to the value, is a :class:`LessonFormatError` naming the file, line, lesson and
  placeholder. ``load_lesson(..., fill=False)`` returns the raw text (tests use it to find
  bare numbers that a fact should supply); :func:`parse_lesson` never fills.
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


def load_lesson(number_or_path: int | str | Path, *, fill: bool = True) -> Lesson:
    """Load by lesson number/slug (via the course map) or by path. With ``fill`` (the default),
    ``{{name}}`` placeholders are replaced by the lesson's computed facts."""
    from mechinterp_edu.course import get_lesson

    if isinstance(number_or_path, Path) or str(number_or_path).endswith(".md"):
        path = Path(number_or_path)
    else:
        path = get_lesson(number_or_path).source_path
    if not path.exists():
        raise LessonFormatError(f"Lesson source {path} does not exist.")
    lesson = parse_lesson(path.read_text(encoding="utf-8"), path)
    if fill and placeholders(lesson):
        lesson = fill_placeholders(lesson, lesson_facts(lesson.number))
    return lesson


# --------------------------------------------------------------------------- numbers from code
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::([^{}]*))?\}\}")


@dataclass(frozen=True)
class Placeholder:
    name: str
    spec: str          # format spec ("" when none)
    line: int          # 1-based line in the source file
    in_math: bool      # inside $...$ or $$...$$


def _unfilled_spans(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(code spans, math spans) of a markdown block as [start, end) offsets: fenced blocks and
    inline code are code; ``$$...$$`` and ``$...$`` outside code are math."""
    code: list[tuple[int, int]] = []
    math: list[tuple[int, int]] = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        if at_line_start and text.startswith("```", i):
            close = text.find("\n```", i + 3)
            end = n if close < 0 else text.find("\n", close + 4)
            end = n if end < 0 else end
            code.append((i, end))
            i = end
            continue
        ch = text[i]
        at_line_start = ch == "\n"
        if ch == "\\":
            i += 2
            continue
        if ch == "`":
            ticks = len(text[i:]) - len(text[i:].lstrip("`"))
            end = text.find("`" * ticks, i + ticks)
            end = n if end < 0 else end + ticks
            code.append((i, end))
            i = end
            continue
        if ch == "$":
            delim = "$$" if text.startswith("$$", i) else "$"
            j = i + len(delim)
            while j < n and not (text.startswith(delim, j) and text[j - 1] != "\\"):
                j += 1
            end = min(n, j + len(delim))
            math.append((i, end))
            i = end
            continue
        i += 1
    return code, math


def _inside(spans: list[tuple[int, int]], pos: int) -> bool:
    return any(a <= pos < b for a, b in spans)


def _scan(text: str, first_line: int, title: bool = False) -> list[tuple[re.Match, Placeholder]]:
    code, math = ([], []) if title else _unfilled_spans(text)
    found = []
    for match in PLACEHOLDER.finditer(text):
        if _inside(code, match.start()):
            continue
        line = first_line + text.count("\n", 0, match.start())
        found.append((match, Placeholder(match.group(1), match.group(2) or "", line,
                                         _inside(math, match.start()))))
    return found


def placeholders(lesson: Lesson) -> list[Placeholder]:
    """Every placeholder of the lesson's text (markdown blocks and step titles), in order."""
    out = []
    for step in lesson.steps:
        out.extend(p for _, p in _scan(step.title, 0, title=True))
        for block in step.blocks:
            if block.kind == "markdown":
                out.extend(p for _, p in _scan(block.text, block.line))
    return out


def lesson_facts(number: int) -> dict[str, Any]:
    """``facts()`` of the lesson's ``facts`` module, found through the course map (empty when
    the lesson has none); cached on disk by :mod:`mechinterp_edu.facts`."""
    from mechinterp_edu.course import get_lesson
    from mechinterp_edu.facts import lesson_facts as cached_facts

    return cached_facts(get_lesson(number))


def format_fact(value: Any, spec: str = "", in_math: bool = False) -> str:
    """A fact as text: ``format(value, spec)``; inside math made safe for TeX."""
    text = format(value, spec)
    if in_math:
        text = text.replace(",", "{,}").replace("%", r"\%")
    return text


def _fill_text(text: str, first_line: int, facts: dict[str, Any], lesson: Lesson, title: bool = False) -> str:
    pieces, last = [], 0
    for match, ph in _scan(text, first_line, title):
        where = f"{lesson.path}:{ph.line}" if ph.line else f"{lesson.path}"
        if ph.name not in facts:
            known = ", ".join(sorted(facts)) or "none"
            raise LessonFormatError(
                f"{where}: placeholder {match.group(0)} names no fact of lesson {lesson.number} "
                f"({lesson.path.stem}). Define {ph.name!r} in its facts() (facts it has: {known}).")
        try:
            value = format_fact(facts[ph.name], ph.spec, ph.in_math)
        except (ValueError, TypeError) as exc:
            raise LessonFormatError(
                f"{where}: placeholder {match.group(0)} of lesson {lesson.number}: format {ph.spec!r} "
                f"does not apply to {facts[ph.name]!r} ({exc}).") from None
        pieces.append(text[last:match.start()])
        pieces.append(value)
        last = match.end()
    pieces.append(text[last:])
    return "".join(pieces)


def fill_placeholders(lesson: Lesson, facts: dict[str, Any]) -> Lesson:
    """A copy of ``lesson`` with every placeholder replaced by its formatted fact."""
    steps = []
    for step in lesson.steps:
        blocks = [Block(b.kind, _fill_text(b.text, b.line, facts, lesson) if b.kind == "markdown" else b.text,
                        b.line) for b in step.blocks]
        steps.append(LessonStep(step.key, _fill_text(step.title, 0, facts, lesson, title=True), blocks))
    return Lesson(lesson.path, lesson.meta, steps)
