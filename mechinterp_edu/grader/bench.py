"""Grading speed, for ``python -m mechinterp_edu bench``: the worked solutions graded in the
sandbox, one lesson file and every lesson file (targets: 5 s and 30 s on a laptop CPU).

Rows: ``grade one lesson`` (the first solution file, in-process API, sandboxed), ``grade
all lessons`` (every solution file), and ``grade CLI one lesson`` (a fresh
``python -m mechinterp_edu grade`` process, start-up included). ``quick`` times only the
first row.
"""
from __future__ import annotations

import subprocess
import sys
import time

from mechinterp_edu.bench import BenchRow


def solution_files() -> list:
    from mechinterp_edu.course import LESSONS

    return [lesson.solution_path for lesson in LESSONS if lesson.solution_path.is_file()]


def bench(quick: bool = False) -> list[BenchRow]:
    from mechinterp_edu.grader.grade import grade_file

    files = solution_files()
    if not files:
        return [BenchRow("grade one lesson", 0.0, note="no solution files yet: nothing to time")]
    rows = []
    start = time.perf_counter()
    report = grade_file(files[0])
    seconds = time.perf_counter() - start
    rows.append(BenchRow(f"grade one lesson ({files[0].name})", seconds,
                         note=f"{report.score:g}/{report.max_score:g} points; target <= 5 s"))
    if quick:
        return rows
    start = time.perf_counter()
    score = max_score = 0
    for path in files:
        r = grade_file(path)
        score += r.score
        max_score += r.max_score
    rows.append(BenchRow(f"grade all lessons ({len(files)} files)", time.perf_counter() - start,
                         note=f"{score:g}/{max_score:g} points; target <= 30 s"))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mechinterp_edu", "grade", str(files[0]),
                           "--no-progress"], capture_output=True, text=True)
    rows.append(BenchRow("grade CLI one lesson (new process)", time.perf_counter() - start,
                         note=f"exit code {proc.returncode}; target <= 5 s"))
    return rows
