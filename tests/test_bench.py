"""bench: modes (default within its budget, --full, --quick), and every missed target flagged
at the end of the run, the grading-time targets included."""
from __future__ import annotations

import sys
import types
from argparse import Namespace

from mechinterp_edu import bench
from mechinterp_edu.bench import BenchRow


def test_row_targets():
    assert BenchRow("a", 1.0).missed is None
    assert BenchRow("a", 4.0, target_seconds=5).missed == ""
    assert "target <= 5 s" in BenchRow("a", 6.0, target_seconds=5).missed
    fast = BenchRow("b", 1.0, "loop", 30.0, target_ratio=20)
    slow = BenchRow("b", 1.0, "loop", 15.0, target_ratio=20)
    assert fast.missed == "" and "15.0x, target >= 20x" in slow.missed
    assert "[target <= 5 s: NOT met on this device]" in BenchRow("a", 6.0, target_seconds=5).render()


def _fake_providers(monkeypatch, calls):
    old = types.ModuleType("fake_old")          # the old signature: bench(quick)
    old.bench = lambda quick: calls.append(("old", quick)) or [
        BenchRow("old comparison", 1.0, "loop", 10.0, target_ratio=20)]
    new = types.ModuleType("fake_new")          # the mode signature, like the grader's
    new.bench = lambda quick=False, mode=None: calls.append(("new", mode)) or [
        BenchRow("grade one lesson", 7.0, target_seconds=5), BenchRow("grade all lessons", 20.0, target_seconds=30)]
    broken = types.ModuleType("fake_broken")

    def fail(quick):
        raise RuntimeError("boom")
    broken.bench = fail
    for module in (old, new, broken):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(bench, "providers", lambda: ["fake_old", "fake_new", "fake_broken"])


def test_every_missed_target_is_flagged_at_the_end(monkeypatch, capsys):
    calls = []
    _fake_providers(monkeypatch, calls)
    code = bench.bench_command(Namespace(quick=False, full=False))
    out = capsys.readouterr().out
    assert calls == [("old", True), ("new", "default")]
    summary = out[out.index("TARGETS MISSED"):]
    assert "TARGETS MISSED (3)" in summary
    assert "old comparison: 10.0x, target >= 20x" in summary
    assert "grade one lesson: 7 s, target <= 5 s" in summary
    assert "grade all lessons" not in summary               # met
    assert "fake_broken: could not run" in summary
    assert code == 1                                        # a provider failed


def test_full_mode_runs_the_long_comparisons(monkeypatch, capsys):
    calls = []
    _fake_providers(monkeypatch, calls)
    bench.bench_command(Namespace(quick=False, full=True))
    assert calls == [("old", False), ("new", "full")]
    assert "Mode: full" in capsys.readouterr().out


def test_cli_has_full_and_quick():
    from mechinterp_edu.cli import _build_parser
    args = _build_parser().parse_args(["bench", "--full"])
    assert args.full and not args.quick
    assert not _build_parser().parse_args(["bench"]).full
