"""``python -m mechinterp_edu gradebook SUBMISSIONS_DIR --csv grades.csv [--gradescope results.json]``.

``SUBMISSIONS_DIR`` holds one folder per student, each with lesson files
(``NN_name.py`` / ``NN_name.ipynb``, found up to three folders deep). A folder that holds
lesson files directly (as in Gradescope's ``/autograder/submission``) is one student.

Students are graded in parallel by a pool of worker processes (``--workers``, default
the CPU count); each of a student's files runs in a jailed child (:mod:`.jail`), so a
student's crash, infinite loop or memory bomb ends only that student's exercise, and a
worker that dies anyway only costs its student a retry. No student folder is visible
inside the jail. Symbolic links (files or folders) and files resolving outside the
student's folder are refused; each student has a time budget (``--student-budget``);
a student who breaks anything gets a row saying so. Without bubblewrap the command
refuses to run unless ``--no-isolation`` is given.

Outputs:

* CSV: one row per student; columns ``student``, one per exercise (its name, or
  ``NN.name`` when two lessons share a name), ``total``, ``max_score``, ``errors``,
  ``grader_error`` (the grader's own failures, to re-check by hand).
  A student's score for an exercise is the best over their files.
* Gradescope (``--gradescope PATH``): Gradescope's ``results.json`` format
  (``score``, ``output``, ``tests: [{name, score, max_score, output, status, visibility}]``).
  With one student, PATH is that student's results. With several, PATH holds one test per
  (student, exercise) named ``student: exercise``, and each student's own results.json is
  also written to ``<PATH without .json>/<student>/results.json``.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mechinterp_edu.grader.sources import LESSON_FILE, lesson_from_name

MAX_DEPTH = 3


@dataclass
class StudentGrades:
    student: str
    reports: list = field(default_factory=list)      # FileReport per graded file
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def best(self) -> dict[tuple, tuple]:
        """(lesson, exercise) -> (score, max_score, passed, feedback), best over files."""
        out: dict[tuple, tuple] = {}
        for report in self.reports:
            for r in report.results:
                key = (report.lesson, r.exercise)
                if key not in out or r.score > out[key][0]:
                    out[key] = (r.score, r.max_score, r.passed, r.feedback)
        return out


@dataclass
class Gradebook:
    root: str
    students: list[StudentGrades]
    columns: list[tuple]          # (lesson, exercise) in display order
    max_scores: dict[tuple, float]
    seconds: float = 0.0


def find_students(root: Path) -> list[tuple[str, Path]]:
    """(name, folder) per student; a symlinked student folder is listed (and refused later)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    direct = [p for p in root.iterdir() if p.is_file() and LESSON_FILE.match(p.name)]
    if direct:
        return [(root.resolve().name, root)]
    return sorted((d.name, d) for d in root.iterdir()
                  if (d.is_dir() or d.is_symlink()) and not d.name.startswith((".", "__")))


def student_files(folder: Path, refused: Optional[list] = None) -> list[Path]:
    """The student's lesson files. Symbolic links (files or folders) and anything that
    resolves outside the student's folder are refused, with a line in ``refused``."""
    refused = refused if refused is not None else []
    found = []
    if folder.is_symlink():
        refused.append(f"refused {folder.name}: the student folder is a symbolic link")
        return found
    base = folder.resolve()
    base_depth = len(folder.parts)
    for dirpath, dirnames, filenames in os.walk(folder):     # never follows links
        depth = len(Path(dirpath).parts) - base_depth
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                refused.append(f"refused {Path(dirpath, d).relative_to(folder)}: a symbolic link")
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) / d).is_symlink()
                             and not d.startswith((".", "__")) and depth < MAX_DEPTH - 1)
        for name in sorted(filenames):
            if not LESSON_FILE.match(name):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() or not path.resolve().is_relative_to(base) or not path.is_file():
                refused.append(f"refused {path.relative_to(folder)}: a symbolic link or not a "
                               "plain file inside the student's folder")
                continue
            found.append(path)
    return found


def grade_student(student: str, folder, exercises: Optional[dict] = None, limits=None,
                  budget_s: Optional[float] = None) -> StudentGrades:
    """Grade every lesson file of one student (runs inside a worker process) within
    ``budget_s`` seconds in all; a file that cannot be graded is a line in ``errors``."""
    from dataclasses import replace

    from mechinterp_edu.grader.grade import clean_text, grade_file
    from mechinterp_edu.grader.sandbox import Limits

    start = time.perf_counter()
    grades = StudentGrades(clean_text(student))
    limits = limits or Limits(threads=1)
    for path in student_files(Path(folder), grades.errors):
        lesson = lesson_from_name(path)
        left = None if budget_s is None else budget_s - (time.perf_counter() - start)
        if left is not None and left <= 0:
            grades.errors.append(f"{clean_text(path.name)}: not graded: the student's time budget "
                                 f"of {budget_s:g} s was used up")
            continue
        limits = replace(limits, budget_s=left)
        try:
            if exercises is not None:
                chosen = exercises.get(lesson)
                if chosen is None:
                    grades.errors.append(f"{path.name}: no graded exercises for lesson {lesson}")
                    continue
                report = grade_file(path, exercises=chosen, limits=limits)
            else:
                report = grade_file(path, limits=limits)
            report.file = str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else path.name
            grades.reports.append(report)
        except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
            grades.errors.append(clean_text(f"{path.name}: grader error: {type(exc).__name__}: {exc}"))
    if not grades.reports and not grades.errors:
        grades.errors.append("no lesson files (NN_name.py / NN_name.ipynb) found")
    grades.seconds = time.perf_counter() - start
    return grades


def _columns(students: list[StudentGrades]) -> tuple[list[tuple], dict[tuple, float]]:
    columns: list[tuple] = []
    max_scores: dict[tuple, float] = {}
    for grades in students:
        for report in grades.reports:
            for r in report.results:
                key = (report.lesson, r.exercise)
                if key not in max_scores:
                    columns.append(key)
                max_scores[key] = r.max_score
    columns.sort(key=lambda k: (k[0] if k[0] is not None else 10**6))   # stable: spec order within a lesson
    return columns, max_scores


def run_gradebook(root, workers: Optional[int] = None, exercises: Optional[dict] = None,
                  limits=None, on_student=None, budget_s: Optional[float] = 600.0) -> Gradebook:
    """Grade every student under ``root`` in parallel (``workers`` processes; default the CPU
    count; 0 grades in this process). ``exercises`` ({lesson: [Exercise]}) replaces the
    registered exercises (tests); ``on_student(grades)`` is called as each student finishes."""
    import multiprocessing

    from mechinterp_edu.grader.sandbox import Limits

    start = time.perf_counter()
    root = Path(root)
    students = find_students(root)
    limits = limits or Limits(threads=1)
    results: dict[str, StudentGrades] = {}
    todo = list(students)
    if workers == 0:                      # in this process, one student after the other
        for name, folder in todo:
            try:
                results[name] = grade_student(name, str(folder), exercises, limits, budget_s)
            except Exception as exc:  # noqa: BLE001 - a broken student never stops the run
                results[name] = StudentGrades(name, errors=[f"grader error: {type(exc).__name__}: {exc}"])
            if on_student:
                on_student(results[name])
        todo = []
    workers = max(1, min(workers or os.cpu_count() or 1, len(students) or 1))
    for attempt in range(2):
        if not todo:
            break
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(grade_student, name, str(folder), exercises, limits, budget_s): name
                           for name, folder in todo}
                for future in as_completed(futures):
                    name = futures[future]
                    try:
                        grades = future.result()
                    except BrokenProcessPool:
                        continue          # retried below in a fresh pool
                    except Exception as exc:  # noqa: BLE001
                        grades = StudentGrades(name, errors=[f"grading failed: {type(exc).__name__}: {exc}"])
                    results[name] = grades
                    if on_student:
                        on_student(grades)
        except BrokenProcessPool:
            pass
        todo = [(n, f) for n, f in todo if n not in results]
    for name, _ in todo:
        grades = StudentGrades(name, errors=["grading failed: the worker process died twice"])
        results[name] = grades
        if on_student:
            on_student(grades)
    ordered = [results[name] for name, _ in students]
    columns, max_scores = _columns(ordered)
    return Gradebook(str(root), ordered, columns, max_scores, time.perf_counter() - start)


def _column_names(columns: list[tuple]) -> list[str]:
    names = [name for _, name in columns]
    dup = {n for n in names if names.count(n) > 1}
    return [f"{lesson:02d}.{name}" if name in dup and lesson is not None else name
            for lesson, name in columns]


def write_csv(book: Gradebook, path) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    total_max = sum(book.max_scores.values())
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", *_column_names(book.columns), "total", "max_score", "errors",
                         "grader_error"])
        for grades in book.students:
            best = grades.best()
            scores = [best.get(key, (0,))[0] for key in book.columns]
            writer.writerow([grades.student, *[f"{s:g}" for s in scores], f"{sum(scores):g}",
                             f"{total_max:g}", " | ".join(grades.errors), grader_errors(grades)])


def grader_errors(grades: StudentGrades) -> str:
    """The grader's own failures for this student (not the student's mistakes): to re-check."""
    from mechinterp_edu.grader.grade import is_grader_error

    found = [e for e in grades.errors if "grader error" in e]
    for report in grades.reports:
        found += [f"{r.exercise}: {r.feedback.splitlines()[0]}" for r in report.results if is_grader_error(r)]
    return " | ".join(found)


def gradescope_results(grades: StudentGrades, book: Gradebook, prefix: str = "") -> dict:
    best = grades.best()
    tests = []
    for (lesson, name), column in zip(book.columns, _column_names(book.columns)):
        max_score = book.max_scores[(lesson, name)]
        if (lesson, name) in best:
            score, _, passed, feedback = best[(lesson, name)]
            output = feedback or "passed"
        else:
            score, passed, output = 0, False, "no submission for this exercise"
        tests.append({"name": f"{prefix}{column}", "score": score, "max_score": max_score,
                      "output": output, "status": "passed" if passed else "failed",
                      "visibility": "visible"})
    total = sum(t["score"] for t in tests)
    output = f"{total:g}/{sum(t['max_score'] for t in tests):g} points"
    if grades.errors:
        output += "\n" + "\n".join(grades.errors)
    return {"score": total, "output": output, "visibility": "visible",
            "stdout_visibility": "hidden", "execution_time": round(grades.seconds, 2),
            "extra_data": {"grader_error": grader_errors(grades)}, "tests": tests}


def write_gradescope(book: Gradebook, path) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if len(book.students) == 1:
        data = gradescope_results(book.students[0], book)
    else:
        tests, outputs = [], []
        folder = path.with_suffix("") if path.suffix else path.with_name(path.name + "_by_student")
        for grades in book.students:
            own = gradescope_results(grades, book)
            student_file = folder / grades.student / "results.json"
            student_file.parent.mkdir(parents=True, exist_ok=True)
            student_file.write_text(json.dumps(own, indent=1), encoding="utf-8")
            written.append(student_file)
            tests.extend(gradescope_results(grades, book, prefix=f"{grades.student}: ")["tests"])
            outputs.append(f"{grades.student}: {own['output'].splitlines()[0]}")
        data = {"score": sum(t["score"] for t in tests), "output": "\n".join(outputs),
                "visibility": "visible", "stdout_visibility": "hidden",
                "execution_time": round(book.seconds, 2), "tests": tests}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return written


def gradebook_command(args) -> int:
    from tqdm import tqdm

    from mechinterp_edu.grader.jail import isolation

    root = Path(args.submissions)
    try:
        students = find_students(root)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not students:
        print(f"error: no student folders (or lesson files) in {root}", file=sys.stderr)
        return 2
    isolated, why = isolation()
    if not isolated and not getattr(args, "no_isolation", False):
        print(f"error: cannot isolate the students' code here ({why}). Install bubblewrap "
              "(apt-get install bubblewrap), or pass --no-isolation to grade without it "
              "(only for code you trust)", file=sys.stderr)
        return 2
    print(f"Grading {len(students)} student(s) from {root} ...", flush=True)
    bar = tqdm(total=len(students), unit="student", file=sys.stderr, disable=None)

    def report(grades: StudentGrades) -> None:
        score = sum(r.score for r in grades.reports)
        max_score = sum(r.max_score for r in grades.reports)
        extra = f"  [{'; '.join(grades.errors)}]" if grades.errors else ""
        bar.write(f"  {grades.student}: {score:g}/{max_score:g} ({grades.seconds:.1f} s){extra}")
        bar.update(1)

    try:
        book = run_gradebook(root, workers=getattr(args, "workers", None), on_student=report,
                             budget_s=getattr(args, "student_budget", 600.0))
    finally:
        bar.close()
    write_csv(book, args.csv)
    print(f"Wrote {args.csv} ({len(book.students)} students, {len(book.columns)} exercises) "
          f"in {book.seconds:.1f} s.")
    if getattr(args, "gradescope", None):
        written = write_gradescope(book, args.gradescope)
        print(f"Wrote Gradescope results to {written[0]}"
              + (f" (and {len(written) - 1} per-student files)" if len(written) > 1 else ""))
    return 0
