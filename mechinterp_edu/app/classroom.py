"""Classroom mode: a projector at 1280x720, one slide at a time.

A step is cut into slides that each fit the screen: its markdown into paragraphs, each live
chart's output into its parts (text, metrics, each chart, tables), all packed in order into
slides by an estimate of their height at the projector's sizes (24 px text, charts at most
230 px tall). Back / Next move by slide, PageUp / PageDown and the arrow keys too.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from mechinterp_edu.app import blocks, render, steps
from mechinterp_edu.app.blocks import PageContext
from mechinterp_edu.charts import fit_layout
from mechinterp_edu.derivations.framework import StepResult
from mechinterp_edu.lesson_source import Block, Lesson

SLIDE_PX = 560            # 720 minus the browser-side header, the nav row and margins
CHARS_PER_LINE = 100      # 24 px text across a ~1200 px column
_STARTS_BLOCK = re.compile(r"^\s*([*+-]|\d+\.|#+|>)\s")
_INLINE_MATH = re.compile(r"\$[^$\n]+\$")
_VISIBLE = re.compile(r"[*`]|\\[a-zA-Z]+|[{}^_]")   # markup that takes no width
LINE_PX = 34
PARAGRAPH_PX = 18
MATH_PX = 78


@dataclass
class Piece:
    kind: str             # "md" | "block" | "chart"
    payload: Any          # markdown text | Block | (chart name, title, output item or None, index)
    height: int


def render_classroom(lesson: Lesson, page: PageContext) -> None:
    if not lesson.steps:
        st.info("This lesson has no steps yet.")
        return
    n = lesson.number
    i = steps.current_step(n, [s.key for s in lesson.steps])
    slides = slides_of(lesson.steps[i].blocks, page)
    j = steps.current_slide(n, len(slides))
    steps.nav_row(n, i, [s.title for s in lesson.steps], slide=j, slides=len(slides))
    draw_slide(slides[j], page)


# --------------------------------------------------------------------------- cutting
def slides_of(step_blocks: list[Block], page: PageContext) -> list[list[Piece]]:
    pieces = [p for b in step_blocks for p in pieces_of(b, page)]
    slides: list[list[Piece]] = [[]]
    used = 0
    for p in pieces:
        if slides[-1] and used + p.height > SLIDE_PX:
            slides.append([])
            used = 0
        slides[-1].append(p)
        used += p.height
    return slides


def pieces_of(block: Block, page: PageContext) -> list[Piece]:
    if block.kind == "markdown":
        return [Piece("md", text, text_height(text)) for text in paragraphs(block.text)]
    if block.kind == "code":
        return [Piece("block", block, 120 + 27 * (block.text.count("\n") + 1))]
    if block.kind == "derivation":
        return [Piece("block", block, 70)]
    if block.kind == "exercise":
        return [Piece("block", block, 200)]
    if block.kind == "chart":
        return chart_pieces(block.text, page)
    return [Piece("block", block, 80)]


def paragraphs(md: str) -> list[str]:
    """Markdown split at blank lines, never inside a fenced block or display math."""
    out, current = [], []
    for line in render.normalize_math(md).split("\n"):
        current.append(line)
        text = "\n".join(current)
        open_math = text.count("$$") % 2 == 1
        open_fence = len(re.findall(r"^(```|~~~)", text, flags=re.MULTILINE)) % 2 == 1
        if not line.strip() and not open_math and not open_fence:
            if text.strip():
                out.append(text.strip("\n"))
            current = []
    if "\n".join(current).strip():
        out.append("\n".join(current).strip("\n"))
    return out


def text_height(md: str) -> int:
    math_blocks = len(re.findall(r"^\$\$\s*$", md, flags=re.MULTILINE)) // 2 + len(
        re.findall(r"^\$\$.+\$\$\s*$", md, flags=re.MULTILINE))
    prose = re.sub(r"\$\$.*?\$\$", "", md, flags=re.DOTALL)
    prose = _INLINE_MATH.sub(lambda m: "x" * max(1, len(m.group(0)) // 3), prose)   # LaTeX source is long
    prose = re.sub(r"\]\([^)]*\)", "]", prose)                                        # link targets
    logical: list[str] = []          # source lines joined into what the browser wraps as one text
    for line in prose.split("\n"):
        if not line.strip():
            continue
        if not logical or _STARTS_BLOCK.match(line):
            logical.append(line.strip())
        else:
            logical[-1] += " " + line.strip()
    lines = sum(max(1, math.ceil(len(_VISIBLE.sub("", t)) / CHARS_PER_LINE)) for t in logical)
    return PARAGRAPH_PX + LINE_PX * lines + MATH_PX * math_blocks


def chart_pieces(name: str, page: PageContext) -> list[Piece]:
    """One piece per part of the chart's output (its title travels with the first)."""
    try:
        chart = blocks.cache.get_chart(name)
    except Exception:  # noqa: BLE001 - drawn (with its message) as one piece
        return [Piece("chart", (name, name, None, 0), 90)]
    title = chart.title
    # a bordered box (30 px), the title (45 px), the caption (20 px text, ~115 characters a line)
    first = 75 + 30 * math.ceil(len(chart.description or "") / 115)
    if not page.ctx_ok:
        return [Piece("chart", (name, title, None, 0), 140)]
    try:
        out = blocks.cache.live_output(name, page.ctx)
    except Exception:  # noqa: BLE001 - the drawing shows the message
        return [Piece("chart", (name, title, None, 0), 140)]
    items = _flatten(out)
    return [Piece("chart", (name, title, item, k), output_height(item) + (first if k == 0 else 75))
            for k, item in enumerate(items)] or [Piece("chart", (name, title, None, 0), 90)]


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)) and not (out and all(isinstance(x, StepResult) for x in out)):
        items = []
        for x in out:
            items.extend(_flatten(x))
        return items
    if isinstance(out, alt.TopLevelMixin):     # a concatenation: one piece per view
        return list(fit_layout(out).leaves())
    return [out]


def output_height(item: Any) -> int:
    if isinstance(item, dict) and ("mark" in item or "layer" in item):
        height = item.get("height")
        return min(int(height * 1.3), render.LARGE_MAX_HEIGHT) + 150 if isinstance(height, (int, float)) else 430
    if isinstance(item, str):
        return text_height(item)
    if isinstance(item, dict):
        return 120 * math.ceil(len(item) / render.METRICS_PER_ROW[True]) if len(item) <= 8 else 400
    if isinstance(item, (pd.DataFrame, pd.Series)):
        return min(40 + 36 * len(item), render.LARGE_TABLE_HEIGHT + 20)
    if isinstance(item, (list, tuple)):          # verdicts: one line per derivation
        return 64 * len({getattr(r, "derivation", None) for r in item})
    return 200


# --------------------------------------------------------------------------- drawing
def draw_slide(pieces: list[Piece], page: PageContext) -> None:
    for piece in pieces:
        if piece.kind == "md":
            render.markdown(piece.payload)
        elif piece.kind == "block":
            blocks.render_block(piece.payload, page)
        else:
            name, title, item, k = piece.payload
            with st.container(border=True):
                if blocks.chart_header(name, continued=k > 0) is None:
                    continue
                if item is None:
                    out = blocks.chart_output(name, page, title)
                    if out is not None:
                        render.render_output(out, large=True, link=page.link)
                elif isinstance(item, dict) and ("mark" in item or "layer" in item):
                    render.render_chart(item, large=True)
                else:
                    render.render_output(item, large=True, link=page.link)
