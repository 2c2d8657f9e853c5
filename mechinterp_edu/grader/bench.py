"""Grading speed, for ``python -m mechinterp_edu bench``: the worked solutions graded end to end
by a fresh ``python -m mechinterp_edu grade`` process (start-up and ``import torch``
included), as a learner runs it. Targets: one lesson file <= 5 s, every lesson <= 30 s.

Rows: one lesson with the case cache warm, every lesson with the cache warm, and (not in
``quick`` mode) one lesson with an empty case cache (the first grade after installing or
changing the course: the spec builds its cases, e.g. loads the trained model).
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

from mechinterp_edu.bench import BenchRow


def solution_files() -> list:
    from mechinterp_edu.course import LESSONS

    return [lesson.solution_path for lesson in LESSONS if lesson.solution_path.is_file()]


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cache_state():
    """(path, size, mtime) of every file in the grader's case cache; None without a cache."""
    from mechinterp_edu.grader.cache import cache_dir

    root = cache_dir()
    if root is None:
        return None
    if not root.is_dir():
        return frozenset()
    return frozenset((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())


def _grade_cli(files, env=None) -> tuple[float, str]:
    """Wall seconds of one ``grade`` process, and a note with its score and its CPU seconds
    (the grader and its sandbox children): on a busy machine the wall time exceeds the CPU time."""
    start, cpu = time.perf_counter(), _cpu_of_children()
    proc = subprocess.run([sys.executable, "-m", "mechinterp_edu", "grade", *map(str, files),
                           "--no-progress", "--json"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    cpu = _cpu_of_children() - cpu
    import json

    score = max_score = 0
    for line in proc.stdout.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        score += obj["score"]
        max_score += obj["max_score"]
    return seconds, f"{score:g}/{max_score:g} points, exit code {proc.returncode}, {cpu:.3g} s CPU"


ONE_LESSON_TARGET_S = 5.0
ALL_LESSONS_TARGET_S = 30.0


def bench(quick: bool = False, mode: str | None = None) -> list[BenchRow]:
    """``quick``: one lesson, warm cache. ``default``: every lesson's solutions graded one file
    at a time (the 5 s target applies to each) and all at once (30 s), warm cache. ``full``:
    also one lesson with an empty case cache."""
    mode = mode or ("quick" if quick else "full")
    files = solution_files()
    if not files:
        return [BenchRow("grade one lesson", 0.0, note="no solution files yet: nothing to time")]
    before = _cache_state()
    warm_up = _grade_cli(files if mode != "quick" else files[:1])      # fill the case cache
    already_warm = before is not None and _cache_state() == before      # it wrote nothing
    rows = []
    for path in files[:1] if mode == "quick" else files:
        seconds, note = _grade_cli([path])
        rows.append(BenchRow(f"grade one lesson ({path.name}), warm cache", seconds,
                             note=note + f"; target <= {ONE_LESSON_TARGET_S:g} s",
                             target_seconds=ONE_LESSON_TARGET_S))
    if mode == "quick":
        return rows
    # the warm-up was already a warm run when it added nothing to the cache: no need to repeat it
    seconds, note = warm_up if already_warm else _grade_cli(files)
    rows.append(BenchRow(f"grade all lessons ({len(files)} files), warm cache", seconds,
                         note=note + f"; target <= {ALL_LESSONS_TARGET_S:g} s",
                         target_seconds=ALL_LESSONS_TARGET_S))
    if mode == "full":
        with tempfile.TemporaryDirectory(prefix="mechinterp-bench-cache-") as empty:
            env = dict(os.environ, MECHINTERP_EDU_GRADER_CACHE=empty)
            seconds, note = _grade_cli(files[:1], env)
        rows.append(BenchRow(f"grade one lesson ({files[0].name}), empty cache", seconds, note=note))
    return rows
