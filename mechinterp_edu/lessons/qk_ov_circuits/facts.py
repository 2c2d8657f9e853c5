"""Numbers that lesson 2's text states (``{{name}}`` placeholders), computed here.

Each fact is asserted by ``tests/test_lesson_facts.py`` against an independent computation.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def facts() -> dict[str, object]:
    from mechinterp_edu.models.zoo import get_spec

    config = get_spec("skip_trigrams").config
    return {"d_vocab": int(config["d_vocab"]), "n_heads": int(config["n_heads"])}
