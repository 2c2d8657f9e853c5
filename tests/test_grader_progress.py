"""The progress store: merged, atomic, never lost, and readable by the app."""
from __future__ import annotations

import json
import multiprocessing
import os
import warnings

import pytest

from mechinterp_edu.grader import progress
from mechinterp_edu.grader.grade import ExerciseResult, FileReport


def report(lesson, scores, file="exercises/01_x.py"):
    """A FileReport with {name: (score, max)}."""
    results = [ExerciseResult(name, score == top, score, top, "" if score == top else f"{name} is off")
               for name, (score, top) in scores.items()]
    return FileReport(file, lesson, sum(r.score for r in results), sum(r.max_score for r in results),
                      results)


def test_store_path_follows_the_environment(progress_store):
    assert progress.store_path() == progress_store


def test_empty_store_reads_as_no_progress(progress_store):
    loaded = progress.load_progress()
    assert not progress_store.exists()
    assert loaded.lessons == {} and loaded.runs == [] and loaded.warning is None
    assert not loaded.exists


def test_best_score_is_kept_and_attempts_counted(progress_store):
    assert progress.record_report(report(1, {"a": (0, 2), "b": (3, 3)}), when="2026-01-01T10:00:00")
    assert progress.record_report(report(1, {"a": (2, 2), "b": (0, 3)}), when="2026-01-02T10:00:00")
    assert progress.record_report(report(2, {"c": (0, 1)}), when="2026-01-03T10:00:00")
    loaded = progress.load_progress()
    a = loaded.exercise(1, "a")
    b = loaded.exercise(1, "b")
    assert (a.best_score, a.max_score, a.passed, a.attempts) == (2, 2, True, 2)
    assert a.first_passed_at == "2026-01-02T10:00:00"
    assert (b.best_score, b.last_score, b.passed, b.last_passed) == (3, 0, True, False)
    assert b.last_feedback == "b is off"
    lesson1 = loaded.lessons[1]
    assert (lesson1.score, lesson1.max_score, lesson1.passed, lesson1.attempted) == (5, 5, 2, 2)
    assert loaded.lessons[2].passed == 0
    assert len(loaded.runs) == 3 and loaded.runs[0]["results"] == {"a": 0, "b": 3}
    assert loaded.last_graded == "2026-01-03T10:00:00"
    assert {row["exercise"] for row in loaded.rows()} == {"a", "b", "c"}


def test_corrupt_store_is_moved_aside_never_lost(progress_store):
    progress_store.parent.mkdir(parents=True, exist_ok=True)
    progress_store.write_text("{ this is not json", encoding="utf-8")
    # reading never writes: the app just sees a warning
    loaded = progress.load_progress()
    assert loaded.warning and "could not be read" in loaded.warning
    assert progress_store.read_text() == "{ this is not json"
    with pytest.warns(progress.ProgressWarning, match="moved to"):
        assert progress.record_report(report(1, {"a": (2, 2)}))
    aside = [p for p in progress_store.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text() == "{ this is not json"
    assert progress.load_progress().exercise(1, "a").passed


def test_foreign_json_is_treated_as_corrupt(progress_store):
    progress_store.parent.mkdir(parents=True, exist_ok=True)
    progress_store.write_text(json.dumps([1, 2, 3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert progress.record_report(report(1, {"a": (1, 1)}))
    assert json.loads(progress_store.read_text())["format"] == "mechinterp-edu-progress"


def test_writes_are_atomic_and_leave_no_temp_files(progress_store):
    for i in range(5):
        progress.record_report(report(1, {"a": (i % 2, 1)}))
    names = sorted(p.name for p in progress_store.parent.iterdir())
    assert names == sorted([progress_store.name, progress_store.name + ".lock"])
    json.loads(progress_store.read_text())


def test_unwritable_store_warns_and_does_not_crash(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("MECHINTERP_EDU_PROGRESS", str(blocker / "progress.json"))
    with pytest.warns(progress.ProgressWarning):
        assert progress.record_report(report(1, {"a": (1, 1)})) is False


def _record_many(path, worker):
    for i in range(10):
        progress.record_report(report(1, {f"w{worker}_{i}": (1, 1)}), path=path)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared" / "progress.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    loaded = progress.load_progress(path)
    assert len(loaded.lessons[1].exercises) == 30 and len(loaded.runs) == 30


def test_progress_command(progress_store, capsys):
    from mechinterp_edu.cli import main

    assert main(["progress"]) == 0
    assert "No progress recorded yet" in capsys.readouterr().out
    progress.record_report(report(1, {"a": (2, 2), "b": (0, 1)}))
    assert main(["progress"]) == 0
    out = capsys.readouterr().out
    assert "Lesson 01" in out and "1/2 exercises passed, 2/3 points" in out
    progress_store.write_text("garbage")
    assert main(["progress"]) == 1
    assert "could not be read" in capsys.readouterr().out
    assert os.path.exists(progress_store)
