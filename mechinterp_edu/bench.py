"""``python -m mechinterp_edu bench``: speed figures measured side by side in one run.

Each provider module exposes ``bench(quick: bool) -> list[BenchRow]``: every lesson's
``bench.py`` (found through the course map) and the grader's. A row holds
what was timed, its time, and (when it compares two ways of doing the same thing
on the same inputs in the same run) the baseline's time and the ratio.
"""
from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass
from typing import Callable, Optional

from mechinterp_edu.device import describe_device

ENGINE_PROVIDERS: tuple[str, ...] = (
    "mechinterp_edu.grader.bench",            # grading time per lesson and for all lessons
)


def providers() -> list[str]:
    """Lessons with a ``bench.py`` (e.g. max_of_k: brute force; ioi_scores: vectorised vs loop), then the engines."""
    from mechinterp_edu.course import LESSONS

    return [f"{l.module}.bench" for l in LESSONS if importlib.util.find_spec(f"{l.module}.bench")] + \
        list(ENGINE_PROVIDERS)


@dataclass
class BenchRow:
    name: str
    seconds: float
    baseline_name: Optional[str] = None
    baseline_seconds: Optional[float] = None
    note: str = ""
    target_ratio: Optional[float] = None   # the speed target set for this comparison (README lists them)

    @property
    def ratio(self) -> Optional[float]:
        if self.baseline_seconds is None or self.seconds <= 0:
            return None
        return self.baseline_seconds / self.seconds

    def render(self) -> str:
        text = f"{self.name}: {seconds_text(self.seconds)}"
        if self.baseline_seconds is not None:
            text += f" vs {self.baseline_name}: {seconds_text(self.baseline_seconds)} -> {self.ratio:.1f}x faster"
        if self.target_ratio is not None and self.ratio is not None:
            verdict = "met" if self.ratio >= self.target_ratio else "NOT met on this device"
            text += f" [target >= {self.target_ratio:g}x: {verdict}]"
        if self.note:
            text += f"  ({self.note})"
        return text


def seconds_text(seconds: float) -> str:
    """Three significant figures, so a 1 ms timing does not print as 0.001 s: '0.0118 s', '114 s'."""
    return f"{seconds:.3g} s"


def timed(fn: Callable[[], object], repeat: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Best wall-clock seconds of ``repeat`` calls (``sync`` e.g. torch.cuda.synchronize)."""
    best = float("inf")
    for _ in range(repeat):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench_command(args) -> int:
    print(f"Device: {describe_device()}")
    failures = 0
    for module_name in providers():
        try:
            module = importlib.import_module(module_name)
            rows = module.bench(quick=args.quick)
        except Exception as exc:  # a broken provider must not hide the others
            failures += 1
            print(f"[{module_name}] could not run: {type(exc).__name__}: {exc}")
            continue
        print(f"[{module_name.removeprefix('mechinterp_edu.')}]")
        for row in rows:
            print("  " + row.render())
    return 1 if failures else 0
