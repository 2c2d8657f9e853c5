"""The gradebook: a class of 20 students, 6 of them hostile, graded in parallel.

A hostile student (endless progress messages, an inflating result, a symlink to the
solutions, a socket, a lying result structure, an infinite loop) must cost only their own
exercise; every honest student must be graded, in bounded time. The CSV has one row per
student and one column per exercise; the Gradescope file follows Gradescope's results.json
format.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

# keep the grader's case cache out of the home folder (shared by the grader's test modules)
os.environ.setdefault("MECHINTERP_EDU_GRADER_CACHE",
                      os.path.join(tempfile.gettempdir(), "mechinterp-edu-tests-grader-cache"))

import pytest

ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"
sys.path.insert(0, str(ADVERSARIAL))
import grader_toy_spec as spec  # noqa: E402

from mechinterp_edu.grader.gradebook import (find_students, run_gradebook,  # noqa: E402
                                             write_csv, write_gradescope)
from mechinterp_edu.grader.sandbox import Limits  # noqa: E402

POINTS = {e.name: e.points for e in spec.CORE}
FULL = sum(POINTS.values())

SCALE_BY_D_HEAD = (ADVERSARIAL / "honest_correct.py").read_text().replace(
    "/ math.sqrt(d)", "/ d")


def make_class(root: Path) -> dict[str, dict[str, float]]:
    """Write 20 student folders; return each student's expected score per exercise."""
    expected = {}

    def student(name, text, scores, filename="01_lesson.py"):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / filename).write_text(text)
        expected[name] = scores

    honest = (ADVERSARIAL / "honest_correct.py").read_text()
    for i in range(10):
        student(f"student{i:02d}", honest, dict(POINTS))
    for i in range(10, 12):
        student(f"student{i:02d}", SCALE_BY_D_HEAD, {**POINTS, "attn_scores": 0})
    # a notebook, in a sub-folder
    folder = root / "student16" / "work"
    folder.mkdir(parents=True)
    shutil.copy(ADVERSARIAL / "valid_notebook.ipynb", folder / "01_lesson.ipynb")
    expected["student16"] = dict(POINTS)
    # broken, not hostile
    student("student17", (ADVERSARIAL / "syntax_error.py").read_text(), {n: 0 for n in POINTS})
    # hostile
    student("zz_loop", (ADVERSARIAL / "infinite_loop.py").read_text(), {**POINTS, "double": 0})
    for name, corpus in (("zz_progress", "endless_progress.py"), ("zz_inflate", "inflate_zip.py"),
                         ("zz_socket", "socket_connect.py"), ("zz_lying", "lie_case_count.py")):
        student(name, (ADVERSARIAL / corpus).read_text(), {**POINTS, "attn_scores": 0})
    solutions = root.parent / "solutions"                # stands for the course's solutions
    solutions.mkdir()
    (solutions / "01_lesson.py").write_text(honest)
    (root / "zz_symlink").mkdir()
    (root / "zz_symlink" / "01_lesson.py").symlink_to(solutions / "01_lesson.py")
    expected["zz_symlink"] = {}
    return expected


REFUSED = {"zz_symlink"}


@pytest.mark.slow
def test_twenty_students_six_hostile(tmp_path):
    import socket
    import time

    root = tmp_path / "submissions"
    expected = make_class(root)
    assert len(expected) == 20 and len(find_students(root)) == 20
    seen = []
    listener = socket.socket()                 # what zz_socket tries to reach from the jail
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 47931))
    listener.listen()
    start = time.monotonic()
    try:
        book = run_gradebook(root, workers=2, exercises={1: spec.CORE},
                             limits=Limits(threads=1, memory_mb=600), on_student=seen.append)
    finally:
        listener.close()
    assert time.monotonic() - start < 300, "the class must finish in bounded time"
    assert sorted(g.student for g in seen) == sorted(expected)
    assert [c[1] for c in book.columns] == ["attn_scores", "embed_logits", "double"]
    for grades in book.students:
        got = {name: score for (lesson, name), (score, *_rest) in grades.best().items()}
        if grades.student in REFUSED:
            assert not grades.reports and "symbolic link" in grades.errors[0], grades.errors
            continue
        if grades.student == "student17":
            assert got == expected["student17"], grades.reports[0].results
            continue
        assert got == expected[grades.student], (grades.student, grades.errors,
                                                 [(r.exercise, r.feedback) for rep in grades.reports
                                                  for r in rep.results])
        assert not grades.errors

    csv_path = tmp_path / "out" / "grades.csv"
    write_csv(book, csv_path)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    assert list(rows[0]) == ["student", "attn_scores", "embed_logits", "double", "total",
                             "max_score", "errors", "grader_error"]
    for row in rows:
        want = expected[row["student"]]
        assert not row["grader_error"], row
        assert float(row["total"]) == sum(want.values())
        assert float(row["max_score"]) == FULL
        for name, score in want.items():
            assert float(row[name]) == score

    results = tmp_path / "gs" / "results.json"
    written = write_gradescope(book, results)
    data = json.loads(results.read_text())
    assert data["score"] == sum(sum(v.values()) for v in expected.values())
    assert len(data["tests"]) == 20 * 3
    for test in data["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output"}
    per_student = json.loads((tmp_path / "gs" / "results" / "zz_loop" / "results.json").read_text())
    assert per_student["score"] == FULL - POINTS["double"]
    names = {t["name"]: t for t in per_student["tests"]}
    assert names["double"]["score"] == 0 and "timed out" in names["double"]["output"]
    assert len(written) == 21


def test_one_student_folder_is_gradescope_layout(tmp_path):
    root = tmp_path / "submission"
    root.mkdir()
    (root / "01_lesson.py").write_text((ADVERSARIAL / "honest_correct.py").read_text())
    assert [name for name, _ in find_students(root)] == ["submission"]
    book = run_gradebook(root, workers=0, exercises={1: spec.CORE}, limits=Limits(threads=1))
    out = tmp_path / "results.json"
    assert write_gradescope(book, out) == [out]
    data = json.loads(out.read_text())
    assert data["score"] == FULL
    assert [t["name"] for t in data["tests"]] == ["attn_scores", "embed_logits", "double"]
    assert all(t["score"] == t["max_score"] and t["status"] == "passed" for t in data["tests"])


@pytest.mark.slow
def test_gradebook_command_on_the_real_lessons(tmp_path, capsys):
    from mechinterp_edu.cli import main
    from mechinterp_edu.course import LESSONS

    lesson = next((l for l in LESSONS if l.solution_path.is_file() and l.exercise_path.is_file()), None)
    if lesson is None:
        pytest.skip("no lesson has a solution and a stub yet")
    root = tmp_path / "class"
    for name, source in (("ada", lesson.solution_path), ("bob", lesson.exercise_path)):
        (root / name).mkdir(parents=True)
        shutil.copy(source, root / name / source.name)
    (root / "carl").mkdir()                           # handed in nothing
    csv_path = tmp_path / "grades.csv"
    code = main(["gradebook", str(root), "--csv", str(csv_path), "--gradescope",
                 str(tmp_path / "results.json"), "--workers", "1"])
    assert code == 0
    rows = {r["student"]: r for r in csv.DictReader(open(csv_path, newline=""))}
    assert set(rows) == {"ada", "bob", "carl"}
    assert float(rows["ada"]["total"]) == float(rows["ada"]["max_score"]) > 0
    assert float(rows["bob"]["total"]) == 0
    assert "no lesson files" in rows["carl"]["errors"]
    assert "Wrote" in capsys.readouterr().out


def test_symlinks_and_escapes_are_refused_with_a_clear_row(tmp_path):
    root = tmp_path / "class"
    private = tmp_path / "private"
    private.mkdir()
    (private / "01_lesson.py").write_text("SECRET first line\n")
    honest = (ADVERSARIAL / "honest_correct.py").read_text()
    (root / "ok").mkdir(parents=True)
    (root / "ok" / "01_lesson.py").write_text(honest)
    (root / "linked_folder").symlink_to(private, target_is_directory=True)   # the whole folder
    (root / "linked_sub").mkdir()
    (root / "linked_sub" / "work").symlink_to(private, target_is_directory=True)
    (root / "linked_file").mkdir()
    (root / "linked_file" / "01_lesson.py").symlink_to(private / "01_lesson.py")
    book = run_gradebook(root, workers=0, exercises={1: spec.CORE}, limits=Limits(threads=1))
    rows = {g.student: g for g in book.students}
    assert set(rows) == {"ok", "linked_folder", "linked_sub", "linked_file"}
    assert sum(r.score for r in rows["ok"].reports) == FULL
    for name in ("linked_folder", "linked_sub", "linked_file"):
        grades = rows[name]
        assert not grades.reports, name
        assert any("symbolic link" in e for e in grades.errors), (name, grades.errors)
        assert not any("SECRET" in e for e in grades.errors)
    out = tmp_path / "grades.csv"
    write_csv(book, out)
    text = out.read_text()
    assert "SECRET" not in text and "symbolic link" in text


def test_a_broken_student_gets_a_row_and_the_files_are_still_written(tmp_path, monkeypatch):
    from mechinterp_edu.grader import gradebook

    root = tmp_path / "class"
    for name in ("ada", "bob", "cy"):
        (root / name).mkdir(parents=True)
        (root / name / "01_lesson.py").write_text((ADVERSARIAL / "honest_correct.py").read_text())
    real = gradebook.grade_student

    def flaky(student, *args, **kwargs):
        if student == "bob":
            raise RuntimeError("the grader itself broke")
        return real(student, *args, **kwargs)

    monkeypatch.setattr(gradebook, "grade_student", flaky)
    book = run_gradebook(root, workers=0, exercises={1: spec.CORE}, limits=Limits(threads=1))
    write_csv(book, tmp_path / "g.csv")
    write_gradescope(book, tmp_path / "gs.json")
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "g.csv", newline=""))}
    assert float(rows["ada"]["total"]) == float(rows["cy"]["total"]) == FULL
    assert float(rows["bob"]["total"]) == 0 and "the grader itself broke" in rows["bob"]["grader_error"]
    data = json.loads((tmp_path / "gs.json").read_text())
    assert data["score"] == 2 * FULL


def test_each_student_has_a_time_budget(tmp_path):
    from mechinterp_edu.grader.gradebook import grade_student

    folder = tmp_path / "slow"
    folder.mkdir()
    for i in range(3):
        (folder / f"01_part{i}.py").write_text((ADVERSARIAL / "sleep_past_timeout.py").read_text())
    import time

    start = time.monotonic()
    grades = grade_student("slow", str(folder), {1: [spec.DOUBLE]}, Limits(threads=1), budget_s=4)
    assert time.monotonic() - start < 20
    texts = [r.feedback for rep in grades.reports for r in rep.results] + grades.errors
    assert any("time budget of 4 s" in t for t in texts), texts


def test_gradebook_refuses_without_isolation_unless_told(tmp_path, monkeypatch, capsys):
    from mechinterp_edu.cli import main
    from mechinterp_edu.grader import jail

    root = tmp_path / "class" / "ada"
    root.mkdir(parents=True)
    (root / "01_lesson.py").write_text("x = 1\n")
    monkeypatch.setattr(jail, "isolation", lambda: (False, "user namespaces are refused"))
    code = main(["gradebook", str(tmp_path / "class"), "--csv", str(tmp_path / "g.csv")])
    assert code == 2 and not (tmp_path / "g.csv").exists()
    assert "--no-isolation" in capsys.readouterr().err
