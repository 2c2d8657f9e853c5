"""A lesson's facts (the numbers its text states as ``{{name}}``), with a disk cache.

``facts()`` of ``mechinterp_edu/lessons/<slug>/facts.py`` computes them from the lesson's
models and code, which can take seconds (loading a checkpoint, a forward pass over a held-out
set). The values are cached as JSON under ``$MECHINTERP_EDU_FACTS_CACHE`` (default
``~/.cache/mechinterp_edu/facts``; ``off`` disables it), keyed by everything they can depend
on: the package's Python source (all of it but the app), the shipped checkpoints (name,
size, modification time) and the torch version. Change any of them and the facts are
recomputed. Tests assert the facts by calling ``facts()`` itself, never through this cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional

from mechinterp_edu import cache_paths

ENV_VAR = "MECHINTERP_EDU_FACTS_CACHE"
PACKAGE = Path(__file__).resolve().parent
_MEMO: dict[str, dict[str, Any]] = {}


def cache_dir() -> Optional[Path]:
    return cache_paths.cache_dir(ENV_VAR, "facts")


def cache_key(slug: str) -> str:
    """A hash of what a lesson's facts can depend on (see the module docstring)."""
    digest = hashlib.sha256(slug.encode())
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix == ".py" and "app" not in path.relative_to(PACKAGE).parts:
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + path.read_bytes())
        elif path.suffix == ".pt":
            stat = path.stat()
            digest.update(f"{path.relative_to(PACKAGE).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    try:
        digest.update(version("torch").encode())
    except PackageNotFoundError:
        pass
    return digest.hexdigest()[:24]


def lesson_facts(lesson) -> dict[str, Any]:
    """The facts of a course-map lesson (empty when it has no ``facts`` module)."""
    try:
        found = importlib.util.find_spec(f"{lesson.module}.facts") is not None
    except ModuleNotFoundError:                 # no lesson package at all
        found = False
    if not found:
        return {}
    root = cache_dir()
    path = root / f"{lesson.slug}-{cache_key(lesson.slug)}.json" if root is not None else None
    memo_key = str(path or lesson.module)
    if memo_key in _MEMO:
        return dict(_MEMO[memo_key])
    values: Optional[dict[str, Any]] = None
    if path is not None and path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            values = None                      # unreadable: recompute and rewrite
    if not isinstance(values, dict):
        values = dict(lesson.part("facts").facts())     # imported only when the cache misses
        if path is not None:
            _write(path, values, lesson.slug)
    _MEMO[memo_key] = values
    return dict(values)


def _write(path: Path, values: dict[str, Any], slug: str) -> None:
    from mechinterp_edu.atomic import write_atomically

    try:
        text = json.dumps(values, sort_keys=True, indent=1)
    except TypeError:
        return                                  # not JSON (a fact that is not a number or string): no cache
    try:
        write_atomically(path, lambda fh: fh.write(text.encode("utf-8")), durable=False)
        for stale in path.parent.glob(f"{slug}-*.json"):     # entries of older code or checkpoints
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass                                    # a read-only home: compute every time, never fail
