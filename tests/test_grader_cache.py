"""The disk cache of cases and reference answers: the same verdicts with and without it, the
spec's cases rebuilt lazily for diagnostics, robust to damage, unreadable from the sandbox."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "adversarial"))
import grader_toy_spec as spec  # noqa: E402

from mechinterp_edu.grader import cache, grade  # noqa: E402
from mechinterp_edu.grader.grade import grade_source  # noqa: E402
from mechinterp_edu.grader.sandbox import is_isolated  # noqa: E402
from mechinterp_edu.grader.spec import Exercise  # noqa: E402

EXERCISES = [spec.ATTN, spec.EMBED, spec.TOP]
RIGHT = (Path(__file__).resolve().parent / "adversarial" / "honest_correct.py").read_text() + '''

def top_direction(M):
    return -torch.linalg.svd(M).Vh[0]
'''
WRONG = '''
import math
import torch

def attn_scores(q, k):                       # no mask: a catalogued mistake
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

def embed_logits(X, W_E, W_pos, W_U):        # no positional term: a named term
    return X @ W_E @ W_U

def top_direction(M):                        # the spec's own compare (needs the Case)
    return torch.linalg.svd(M).Vh[-1]
'''


@pytest.fixture
def cache_in(tmp_path, monkeypatch):
    folder = tmp_path / "grader-cache"
    monkeypatch.setenv(cache.ENV_VAR, str(folder))
    # other people may edit the package while this runs; pin the fingerprint, and treat the
    # test's exercises like registered lesson exercises
    monkeypatch.setattr(cache, "package_fingerprint", lambda: "pinnedfingerprint")
    monkeypatch.setattr(cache, "cacheable", lambda exercise: True)
    grade._CACHE.clear()
    yield folder
    grade._CACHE.clear()


def run(source, sandbox=False):
    return grade_source(source, exercises=EXERCISES, sandbox=sandbox).to_dict()


def test_disk_hits_give_the_same_verdicts_and_feedback(cache_in):
    right, wrong = run(RIGHT), run(WRONG)
    assert right["score"] == right["max_score"]
    assert wrong["score"] == 0
    assert len(list(cache_in.glob("*.json"))) == len(EXERCISES)
    grade._CACHE.clear()                       # as if in a new process
    assert run(RIGHT) == right
    assert all(p.from_disk for p in grade._CACHE.values())
    assert run(WRONG) == wrong                 # catalogue, terms and compare work after a disk hit
    feedback = {r["exercise"]: r["feedback"] for r in wrong["results"]}
    assert feedback["attn_scores"].startswith("CATALOGUE")
    assert "missing the positional term" in feedback["embed_logits"]
    assert "not the top right-singular direction" in feedback["top_direction"]


def test_a_damaged_entry_is_a_miss(cache_in):
    reference = run(WRONG)
    for entry in cache_in.iterdir():
        entry.write_bytes(b"garbage")
    grade._CACHE.clear()
    assert run(WRONG) == reference
    assert not any(p.from_disk for p in grade._CACHE.values())


def test_entries_of_another_version_are_pruned(cache_in, monkeypatch):
    run(RIGHT)
    assert all(p.name.startswith("pinnedfingerprint-") for p in cache_in.iterdir())
    monkeypatch.setattr(cache, "package_fingerprint", lambda: "newerfingerprint")
    grade._CACHE.clear()
    run(RIGHT)
    names = [p.name for p in cache_in.iterdir()]
    assert names and all(name.startswith("newerfingerprint-") for name in names)


@pytest.mark.skipif(not is_isolated(), reason="bubblewrap cannot isolate code here")
def test_the_sandbox_cannot_read_the_cache(cache_in):
    run(RIGHT)
    target = next(cache_in.glob("*.npz"))
    spy = RIGHT + f'''

_honest = embed_logits

def embed_logits(*args):
    open({str(target)!r}, "rb").read()
    return _honest(*args)
'''
    results = {r["exercise"]: r for r in run(spy, sandbox=True)["results"]}
    assert results["attn_scores"]["passed"]
    assert not results["embed_logits"]["passed"]
    assert "No such file or directory" in results["embed_logits"]["feedback"]   # not in the jail


def test_only_lesson_exercises_are_cached(monkeypatch):
    ad_hoc = Exercise(1, "double", 1, spec.double_ref, spec.double_cases)
    assert not cache.cacheable(ad_hoc)                  # not registered by a lesson spec
    monkeypatch.setenv(cache.ENV_VAR, "off")
    assert cache.cache_dir() is None and cache.entry_key(ad_hoc, "cpu") is None


def test_cacheable_lesson_exercises():
    import importlib.util

    from mechinterp_edu.course import LESSONS
    from mechinterp_edu.grader.grade import lesson_exercises

    lesson = next((l for l in LESSONS if importlib.util.find_spec(l.grading) is not None), None)
    if lesson is None:
        pytest.skip("no lesson spec yet")
    assert all(cache.cacheable(e) for e in lesson_exercises(lesson.number))
