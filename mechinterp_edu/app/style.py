"""The app's CSS: equations that wrap, metric values that never truncate, and classroom
(projector) sizes. Injected once per run by the page (``st.html`` of a ``<style>`` block
takes no space on the page)."""
from __future__ import annotations

import streamlit as st

# Every page. KaTeX sets `white-space: nowrap` on display math; allowing wraps lets a long
# equation break at its relations and operators (KaTeX emits those as break points); a piece
# that cannot break scrolls inside its own box instead of widening the page.
BASE_CSS = """
.katex-display { overflow-x: auto; overflow-y: hidden; max-width: 100%; padding: 2px 0; }
.katex-display > .katex { white-space: normal; max-width: 100%; }
.katex-display > .katex > .katex-html { white-space: normal; }
[data-testid="stMetricValue"], [data-testid="stMetricValue"] *,
[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  overflow-wrap: anywhere;
}
[data-testid="stMetricValue"] { font-size: clamp(1.25rem, 2.1vw, 1.9rem); line-height: 1.2; }
[data-testid="stVegaLiteChart"] { max-width: 100%; }
.st-key-keyboard { display: none; }
"""

# Classroom mode: a projector at 1280x720. Body text 24 px, captions 20 px, tight margins so
# that a slide (see classroom.py) fits the screen; charts get 16 px labels from their config.
CLASSROOM_CSS = """
[data-testid="stMainBlockContainer"] { padding: 3.9rem 2.5rem 0.5rem 2.5rem; max-width: 100%; }
[data-testid="stMain"] .katex-display { font-size: 24px; margin: 0.4em 0; }
[data-testid="stMain"] [data-testid="stSelectbox"] input { font-size: 20px !important; }
[data-testid="stMain"] [data-testid="stMarkdownContainer"] p,
[data-testid="stMain"] [data-testid="stMarkdownContainer"] li { font-size: 24px; line-height: 1.4; }
[data-testid="stMain"] [data-testid="stCaptionContainer"],
[data-testid="stMain"] [data-testid="stCaptionContainer"] p { font-size: 20px; }
[data-testid="stMain"] [data-testid="stExpander"] summary p { font-size: 24px; }
[data-testid="stMain"] h2 { font-size: 32px; padding: 0.25rem 0; }
[data-testid="stMain"] [data-testid="stCode"] code { font-size: 18px; }
[data-testid="stMain"] [data-testid="stMetricLabel"] p { font-size: 20px; }
[data-testid="stMain"] [data-testid="stMetricValue"] { font-size: 34px; }
[data-testid="stMain"] button p { font-size: 22px; }
[data-testid="stMain"] .katex { font-size: 1.12em; }
[data-testid="stMain"] [data-testid="stVerticalBlock"] { gap: 0.6rem; }
"""


def apply(*, classroom: bool = False) -> None:
    st.html(f"<style>{BASE_CSS}{CLASSROOM_CSS if classroom else ''}</style>")
