"""Session-state helpers.

Streamlit drops a widget's state when a run does not draw that widget (e.g. after a
page switch). Values the learner must not lose (control values, the exercise text,
the classroom step) therefore live under *store* keys that no widget owns; widgets
are seeded from the store before they are drawn and write back after.
"""
from __future__ import annotations

from typing import Any, Callable

import streamlit as st


def store(key: str, default: Any = None) -> Any:
    """The value kept under ``key`` (set to ``default`` the first time)."""
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]


def seed_widget(widget_key: str, value: Any, valid: Callable[[Any], bool] = lambda v: True) -> None:
    """Give a widget its remembered value before it is drawn (only if it has none, or an invalid one)."""
    if widget_key not in st.session_state or not valid(st.session_state[widget_key]):
        st.session_state[widget_key] = value


def forget(*keys: str) -> None:
    for key in keys:
        st.session_state.pop(key, None)
