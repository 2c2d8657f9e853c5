"""The disk cache of cases and reference answers: same verdicts as without it, lazy rebuild
of the spec's cases for diagnostics, robust to damage, and unreadable from the sandbox."""
from __future__ import annotations

import importlib.util

import pytest

from mechinterp_edu.course import LESSONS
from mechinterp_edu.grader import cache, grade
from mechinterp_edu.grader.grade import grade_source, lesson_exercises

LESSON = next((l for l in LESSONS if importlib.util.find_spec(l.grading) is not None
               and l.solution_path.is_file()), None)
pytestmark = pytest.mark.skipif(LESSON is None, reason="no lesson has a spec and a solution yet")


@pytest.fixture
def cache_in(tmp_path, monkeypatch):
    folder = tmp_path / "grader-cache"
    monkeypatch.setenv(cache.ENV_VAR, str(folder))
    # other people may edit the package while this runs; pin the fingerprint
    monkeypatch.setattr(cache, "package_fingerprint", lambda: "pinnedfingerprint")
    grade._CACHE.clear()
    yield folder
    grade._CACHE.clear()


def wrong_source() -> str:
    """The lesson's solution with every exercise's result doubled (wrong, but well-formed)."""
    names = [e.name for e in lesson_exercises(LESSON.number) if e.output == "tensor"]
    source = LESSON.solution_path.read_text()
    for name in names:
        source += (f"\n\n_right_{name} = {name}\n\ndef {name}(*args):\n"
                   f"    return 2 * _right_{name}(*args)\n")
    return source


def grade_both(source):
    return grade_source(source, LESSON.number, sandbox=False)


def test_disk_hits_give_the_same_verdicts(cache_in):
    solution = LESSON.solution_path.read_text()
    first = grade_both(solution)
    first_wrong = grade_both(wrong_source())
    entries = sorted(p.name for p in cache_in.iterdir())
    assert len([e for e in entries if e.endswith(".json")]) == len(first.results)
    grade._CACHE.clear()                                  # a new process, as far as the grader knows
    second = grade_both(solution)
    assert all(p.from_disk for p in grade._CACHE.values())
    assert second.to_dict() == first.to_dict() and second.score == second.max_score
    # diagnostics that need the spec's Case objects (terms, mistakes) still work after a disk hit
    assert grade_both(wrong_source()).to_dict() == first_wrong.to_dict()


def test_a_damaged_entry_is_a_miss(cache_in):
    solution = LESSON.solution_path.read_text()
    reference = grade_both(solution).to_dict()
    for entry in cache_in.iterdir():
        entry.write_bytes(b"garbage")
    grade._CACHE.clear()
    assert grade_both(solution).to_dict() == reference
    assert not any(p.from_disk for p in grade._CACHE.values())


def test_entries_of_another_version_are_pruned(cache_in, monkeypatch):
    grade_both(LESSON.solution_path.read_text())
    old = sorted(p.name for p in cache_in.iterdir())
    assert old and all(name.startswith("pinnedfingerprint-") for name in old)
    monkeypatch.setattr(cache, "package_fingerprint", lambda: "newerfingerprint")
    grade._CACHE.clear()
    grade_both(LESSON.solution_path.read_text())
    assert all(p.name.startswith("newerfingerprint-") for p in cache_in.iterdir())


def test_cache_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_VAR, "off")
    assert cache.cache_dir() is None
    exercise = lesson_exercises(LESSON.number)[0]
    assert cache.entry_key(exercise, "cpu") is None


def test_exercises_defined_elsewhere_are_not_cached(cache_in):
    from mechinterp_edu.grader.spec import Case, Exercise

    ad_hoc = Exercise(1, "double", 1, lambda x: 2 * x, lambda: [Case("one", (1.0,))], output="float")
    assert not cache.cacheable(ad_hoc)


def test_the_sandbox_cannot_read_the_cache(cache_in):
    grade_both(LESSON.solution_path.read_text())          # fill the cache
    target = next(cache_in.glob("*.json"))
    exercise = lesson_exercises(LESSON.number)[0]
    spy = LESSON.solution_path.read_text() + f'''

_{exercise.name}_right = {exercise.name}

def {exercise.name}(*args):
    open({str(target)!r}).read()
    return _{exercise.name}_right(*args)
'''
    report = grade_source(spy, LESSON.number, exercises=[exercise.name])
    assert not report.results[0].passed
    assert "off limits" in report.results[0].feedback
