"""``python -m mechinterp_edu bench``: speed figures measured side by side in one run.

Each provider module (every lesson's ``bench.py``, found through the course map, and the
grader's) exposes ``bench(quick: bool) -> list[BenchRow]`` (or ``bench(mode=...)``). A row holds what was timed, its time, and (when it compares two ways
of doing the same thing on the same inputs in the same run) the baseline's time and the
ratio; a row with a target (a speed-up ratio or a time limit) says whether it was met.

Modes:
    default   at most ~2 minutes: the comparisons at their smaller sizes and the grading-time
              targets (one lesson's solutions <= 5 s, every lesson's <= 30 s)
    --full    the long comparisons too (every max-of-4 input, a GPT-2-small-shaped model,
              grading with an empty case cache)
    --quick   the smallest sizes, one grading row (smoke tests)

The run ends with every target it missed (and the bench's own time against its budget),
so a missed target cannot scroll by unnoticed.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
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
    target_seconds: Optional[float] = None  # a time limit the issue set for this row

    @property
    def missed(self) -> Optional[str]:
        """Why a target was missed ("" when none was), None when the row has no target."""
        if self.target_ratio is None and self.target_seconds is None:
            return None
        why = []
        if self.target_ratio is not None and (self.ratio is None or self.ratio < self.target_ratio):
            got = "no ratio" if self.ratio is None else f"{self.ratio:.1f}x"
            why.append(f"{got}, target >= {self.target_ratio:g}x")
        if self.target_seconds is not None and self.seconds > self.target_seconds:
            why.append(f"{seconds_text(self.seconds)}, target <= {self.target_seconds:g} s")
        return "; ".join(why)

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
        if self.target_seconds is not None:
            verdict = "met" if self.seconds <= self.target_seconds else "NOT met on this device"
            text += f" [target <= {self.target_seconds:g} s: {verdict}]"
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


BUDGET_S = {"quick": 60.0, "default": 120.0, "full": None}


def run_provider(module, mode: str) -> list[BenchRow]:
    """Call a provider's ``bench`` in ``mode``: ``mode=`` when it takes one, else ``quick=``
    (the smaller sizes in every mode but ``full``)."""
    if "mode" in inspect.signature(module.bench).parameters:
        return module.bench(mode=mode)
    return module.bench(quick=mode != "full")


def bench_command(args) -> int:
    mode = "full" if getattr(args, "full", False) else "quick" if getattr(args, "quick", False) else "default"
    print(f"Device: {describe_device()}")
    print(f"Mode: {mode}" + ("" if mode == "full" else " (--full adds the long comparisons)"))
    start = time.perf_counter()
    failures = 0
    missed: list[str] = []
    for module_name in providers():
        try:
            module = importlib.import_module(module_name)
            rows = run_provider(module, mode)
        except Exception as exc:  # a broken provider must not hide the others
            failures += 1
            print(f"[{module_name}] could not run: {type(exc).__name__}: {exc}")
            missed.append(f"{module_name}: could not run, so its targets were not measured")
            continue
        print(f"[{module_name.removeprefix('mechinterp_edu.')}]", flush=True)
        for row in rows:
            print("  " + row.render(), flush=True)
            if row.missed:
                missed.append(f"{row.name}: {row.missed}")
    total = time.perf_counter() - start
    budget = BUDGET_S.get(mode)
    print(f"bench ({mode}) took {seconds_text(total)}" + (f" (budget {budget:g} s)" if budget else ""))
    if budget is not None and total > budget:
        missed.append(f"the bench itself: {seconds_text(total)}, budget {budget:g} s in {mode} mode")
    if mode != "full":
        print("Not measured in this mode: the long comparisons and their targets (run with --full).")
    if missed:
        print(f"TARGETS MISSED ({len(missed)}):")
        for line in missed:
            print(f"  - {line}")
    else:
        print("Every target was met.")
    return 1 if failures else 0
