"""Notebook submissions: nbformat, the 'graded' tag, IPython magics, broken notebooks."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# keep the grader's case cache out of the home folder (shared by the grader's test modules)
os.environ.setdefault("MECHINTERP_EDU_GRADER_CACHE",
                      os.path.join(tempfile.gettempdir(), "mechinterp-edu-tests-grader-cache"))

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent / "adversarial"))
import grader_toy_spec as spec  # noqa: E402

from mechinterp_edu.grader.grade import grade_file, grade_source  # noqa: E402
from mechinterp_edu.grader.sources import (lesson_from_name, notebook_submission,  # noqa: E402
                                           strip_magics)

DOUBLE = "def double(x):\n    return 2 * x\n"


def notebook(*cells) -> str:
    nb = new_notebook()
    nb.cells = list(cells)
    return nbformat.writes(nb)


def test_magics_become_pass_with_the_same_indentation():
    code = "%matplotlib inline\n!ls\nfor i in range(2):\n    %time f(i)\nx = !pwd\nlen?\ny = 1\n"
    out = strip_magics(code).splitlines()
    assert out[0].startswith("pass") and out[1].startswith("pass")
    assert out[2] == "for i in range(2):" and out[3].startswith("    pass")
    assert out[4].startswith("pass") and out[5].startswith("pass")
    assert out[6] == "y = 1"
    compile(strip_magics(code), "cell", "exec")


def test_cell_magics():
    assert strip_magics("%%bash\necho hi\n") == ""
    assert strip_magics("%%writefile x.py\nprint(1)\n") == ""
    kept = strip_magics("%%time\nz = 3\n")
    assert "z = 3" in kept
    compile(kept, "cell", "exec")


def test_tagged_cells_only_when_any_cell_is_tagged():
    text = notebook(new_markdown_cell("# title"),
                    new_code_cell("x = 1"),
                    new_code_cell("y = 2", metadata={"tags": ["graded"]}))
    sub = notebook_submission(text, "nb.ipynb")
    assert [s["code"] for s in sub.sources] == ["y = 2"]
    assert sub.sources[0]["name"] == "nb.ipynb [cell 3]"
    untagged = notebook_submission(notebook(new_code_cell("x = 1"), new_code_cell("y = 2")), "nb.ipynb")
    assert [s["code"] for s in untagged.sources] == ["x = 1", "y = 2"]


def test_a_failing_cell_does_not_stop_the_next_ones_and_is_reported():
    text = notebook(new_code_cell("import torch"),
                    new_code_cell("1 / 0"),
                    new_code_cell(DOUBLE),
                    new_code_cell("def broken(:\n    pass"))
    report = grade_source(text, exercises=[spec.DOUBLE, spec.EMBED], kind="ipynb", sandbox=False,
                          filename="lesson.ipynb")
    double, embed = report.results
    assert double.passed, double.feedback
    assert "missing function `embed_logits`" in embed.feedback
    assert "lesson.ipynb [cell 2] raised ZeroDivisionError" in embed.feedback
    assert "syntax error in lesson.ipynb [cell 4]" in embed.feedback


def test_traceback_names_the_cell():
    text = notebook(new_code_cell("import torch"),
                    new_code_cell("def double(x):\n    return x.nope()"))
    (result,) = grade_source(text, exercises=[spec.DOUBLE], kind="ipynb", sandbox=False,
                             filename="work.ipynb").results
    assert 'File "work.ipynb [cell 2]", line 2, in double' in result.feedback


def test_invalid_notebooks_are_verdicts_not_crashes(tmp_path):
    bad = tmp_path / "01_broken.ipynb"
    bad.write_text('{"cells": [')
    report = grade_file(bad, exercises=[spec.DOUBLE])
    assert report.results[0].score == 0 and "not valid JSON" in report.results[0].feedback
    empty = tmp_path / "01_empty.ipynb"
    empty.write_text(notebook(new_markdown_cell("nothing to run")))
    report = grade_file(empty, exercises=[spec.DOUBLE])
    assert "no code cells" in report.results[0].feedback
    binary = tmp_path / "01_binary.ipynb"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in grade_file(binary, exercises=[spec.DOUBLE]).results[0].feedback


def test_lesson_comes_from_the_file_name():
    assert lesson_from_name("exercises/03_skip_trigrams.ipynb") == 3
    assert lesson_from_name("01_tensor_products.py") == 1
    assert lesson_from_name("my_work.py") is None
