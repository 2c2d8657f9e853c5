"""``python -m mechinterp_edu grade``: output, exit codes, lessons, progress; and every lesson's
solutions score full marks while its stubs score zero with "not implemented yet"."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

# keep the grader's case cache out of the home folder (shared by the grader's test modules)
os.environ.setdefault("MECHINTERP_EDU_GRADER_CACHE",
                      os.path.join(tempfile.gettempdir(), "mechinterp-edu-tests-grader-cache"))

import pytest

from mechinterp_edu.cli import main
from mechinterp_edu.course import LESSONS, get_lesson
from mechinterp_edu.grader import progress
from mechinterp_edu.grader.grade import grade_file

RESULT_KEYS = {"exercise", "passed", "score", "max_score", "feedback"}


def has_spec(lesson) -> bool:
    return importlib.util.find_spec(lesson.grading) is not None


GRADED = [l for l in LESSONS if has_spec(l) and l.solution_path.is_file() and l.exercise_path.is_file()]
FIRST = GRADED[0] if GRADED else None
needs_lesson = pytest.mark.skipif(FIRST is None, reason="no lesson has a spec, a solution and a stub yet")


@pytest.mark.parametrize("lesson", [l.number for l in LESSONS])
def test_solutions_full_marks_and_stubs_not_implemented(lesson):
    info = get_lesson(lesson)
    if not (has_spec(info) and info.solution_path.is_file() and info.exercise_path.is_file()):
        pytest.skip(f"lesson {lesson:02d} has no spec / solution / stub yet")
    solved = grade_file(info.solution_path)
    assert solved.results, "a lesson with a spec grades at least one exercise"
    failures = [(r.exercise, r.feedback) for r in solved.results if not r.passed]
    assert not failures
    assert solved.score == solved.max_score > 0
    stub = grade_file(info.exercise_path)
    assert [r.exercise for r in stub.results] == [r.exercise for r in solved.results]
    assert stub.score == 0
    assert all(r.feedback == "not implemented yet" for r in stub.results), \
        [r.feedback for r in stub.results]


@needs_lesson
def test_json_output_and_exit_code_zero_for_the_solutions(capsys, progress_store):
    code = main(["grade", str(FIRST.solution_path), "--json"])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert code == 0 and len(lines) == 1
    obj = json.loads(lines[0])
    assert set(obj) == {"file", "lesson", "score", "max_score", "results"}
    assert obj["lesson"] == FIRST.number and obj["score"] == obj["max_score"] > 0
    assert all(set(r) == RESULT_KEYS and r["passed"] for r in obj["results"])
    # the run was recorded
    recorded = progress.load_progress()
    assert recorded.lessons[FIRST.number].score == obj["max_score"]


@needs_lesson
def test_human_output_for_the_stubs(capsys, progress_store):
    code = main(["grade", str(FIRST.number)])       # a lesson number means its exercises/ file
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith(str(FIRST.exercise_path)) and f"(lesson {FIRST.number:02d})" in out[0]
    exercise_lines = [l for l in out if l.startswith("  ✗ ")]
    assert exercise_lines and all(l.rstrip().endswith(f"0/{l.split('/')[-1]}") for l in exercise_lines)
    assert out.count("      not implemented yet") == len(exercise_lines)
    assert out[-1].startswith("  total 0/")
    assert progress.load_progress().lessons[FIRST.number].passed == 0


@needs_lesson
def test_no_progress_flag(capsys, progress_store):
    assert main(["grade", str(FIRST.solution_path), "--no-progress"]) == 0
    assert not progress_store.exists()


@needs_lesson
def test_a_file_elsewhere_needs_its_lesson(tmp_path, capsys):
    copy = tmp_path / "my_attempt.py"
    shutil.copy(FIRST.solution_path, copy)
    assert main(["grade", str(copy), "--no-progress"]) == 2
    assert "cannot tell which lesson my_attempt.py belongs to" in capsys.readouterr().err
    assert main(["grade", str(copy), "--lesson", str(FIRST.number), "--no-progress"]) == 0


def test_bad_paths_and_lessons_get_one_clear_line(capsys):
    assert main(["grade", "no/such/file.py"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no such file: no/such/file.py"]
    assert main(["grade", "nonsense_lesson"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a file nor a lesson" in err[0]


def test_default_grades_every_exercise_file(capsys):
    files = sorted(p for p in get_lesson(1).exercise_path.parent.glob("[0-9][0-9]_*.py"))
    if not files:
        pytest.skip("no exercise files yet")
    code = main(["grade", "--json", "--no-progress"])
    captured = capsys.readouterr()
    graded = [json.loads(l)["file"] for l in captured.out.splitlines() if l.strip()]
    errors = [l for l in captured.err.splitlines() if l.startswith("error:")]
    assert len(graded) + len(errors) == len(files)
    assert code != 0                              # the stubs do not pass


@needs_lesson
@pytest.mark.slow
def test_cli_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "mechinterp_edu", "grade", str(FIRST.solution_path),
                           "--json", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["score"] > 0


@needs_lesson
@pytest.mark.slow
def test_bench_rows():
    from mechinterp_edu.grader.bench import bench

    rows = bench(quick=True)
    assert len(rows) == 1 and rows[0].seconds > 0
    assert "exit code 0" in rows[0].note and "target <= 5 s" in rows[0].note


def test_a_folder_grades_each_lesson_file_in_it(tmp_path, capsys):
    """`grade solutions/` grades every NN_name file of the folder (other files are ignored);
    a folder without any says so in one line."""
    for lesson in GRADED[:2]:
        shutil.copy(lesson.solution_path, tmp_path / lesson.solution_path.name)
    (tmp_path / "notes.py").write_text("x = 1\n")
    assert main(["grade", str(tmp_path), "--json", "--no-progress"]) == 0
    files = [json.loads(l)["file"] for l in capsys.readouterr().out.splitlines() if l.strip()]
    assert sorted(os.path.basename(f) for f in files) == sorted(l.solution_path.name for l in GRADED[:2])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["grade", str(empty), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no lesson files" in err[0]


def test_exit_codes_and_a_grader_failure_on_one_file(tmp_path, capsys, monkeypatch):
    """0: all passed; 1: some failed; 2: a usage or grader error. A grader failure on one file
    is one line, and the other files are still graded."""
    from mechinterp_edu.grader import grade

    good = tmp_path / "01_good.py"
    shutil.copy(get_lesson(1).solution_path, good)
    wrong = tmp_path / "01_wrong.py"
    wrong.write_text("def kron_apply(A, W, X):\n    return A\n")
    assert main(["grade", str(good), "--no-progress"]) == 0
    assert main(["grade", str(wrong), "--no-progress"]) == 1
    assert main(["grade", str(tmp_path / "missing.py"), "--no-progress"]) == 2
    real = grade.grade_file

    def broken(path, *args, **kwargs):
        if "good" in str(path):
            raise RuntimeError("a bug in the grader")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(grade, "grade_file", broken)
    capsys.readouterr()
    assert main(["grade", str(good), str(wrong), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "grader error" in err and "a bug in the grader" in err and len(err.strip().splitlines()) == 1
    assert "01_wrong.py" in out                      # still graded


def test_feedback_cannot_draw_on_the_terminal(tmp_path, capsys):
    path = tmp_path / "01_sneaky.py"
    path.write_text('def kron_apply(A, W, X):\n    raise ValueError("\\x1b[2J\\x1b[H18/18 \\x07")\n')
    assert main(["grade", str(path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J\\x1b[H18/18" in out
