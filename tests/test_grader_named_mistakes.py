"""Typical mistakes get a diagnosis that names them (issue 15, point 11).

Each test grades a small wrong file, written here by hand the way a learner would, on the
lesson's real exercises and checks that the feedback names the mistake.
"""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MECHINTERP_EDU_GRADER_CACHE",
                      os.path.join(tempfile.gettempdir(), "mechinterp-edu-tests-grader-cache"))

import pytest  # noqa: E402

from mechinterp_edu.grader.grade import grade_file, grade_source  # noqa: E402

NOTES_T_HEAD = """
import torch

def corrected_notes_T(patterns, W_E, W_V, W_O, W_U):
    n = patterns.shape[-1]
    eye = torch.eye(n, dtype=patterns.dtype)
"""


def feedback(source: str, lesson: int, exercise: str) -> str:
    report = grade_source(source, lesson, exercises=[exercise], sandbox=False)
    (result,) = report.results
    assert not result.passed
    return result.feedback


@pytest.mark.parametrize("body, words", [
    # the notes' np.outer, exactly as written: an [n², v²] table
    ("""    T = torch.outer(eye.reshape(-1), (W_E @ W_U).T.reshape(-1))
    for h in range(patterns.shape[0]):
        T = T + torch.outer(patterns[h].reshape(-1), (W_E @ W_V[h] @ W_O[h] @ W_U).T.reshape(-1))
    return T
""", "the notes' np.outer, as written"),
    # one transpose missing: the direct path
    ("""    T = torch.kron(eye, (W_E @ W_U).contiguous())
    for h in range(patterns.shape[0]):
        T = T + torch.kron(patterns[h].contiguous(), (W_E @ W_V[h] @ W_O[h] @ W_U).T.contiguous())
    return T
""", "direct path not transposed"),
    # one transpose missing: the head terms
    ("""    T = torch.kron(eye, (W_E @ W_U).T.contiguous())
    for h in range(patterns.shape[0]):
        T = T + torch.kron(patterns[h].contiguous(), (W_E @ W_V[h] @ W_O[h] @ W_U).contiguous())
    return T
""", "head terms not transposed"),
    # the notes' single OV circuit reused for every head
    ("""    OV = (W_E @ W_V[0] @ W_O[0] @ W_U).T.contiguous()
    T = torch.kron(eye, (W_E @ W_U).T.contiguous())
    for h in range(patterns.shape[0]):
        T = T + torch.kron(patterns[h].contiguous(), OV)
    return T
""", "one OV circuit for every head"),
])
def test_corrected_notes_T_mistakes_are_named(body, words):
    assert words in feedback(NOTES_T_HEAD + body, 1, "corrected_notes_T")


def test_kron_with_W_transposed_is_named_not_a_raw_error():
    source = """
import torch

def kron_apply(A, W, X):
    return (torch.kron(A, W.T) @ X.reshape(-1)).reshape(A.shape[0], W.shape[0])
"""
    text = feedback(source, 1, "kron_apply")
    assert "kron(A, W.T)" in text and "use it as it is" in text
    assert "view size is not compatible" not in text


def test_one_ov_for_every_head_in_the_logits():
    source = open(os.path.join(os.path.dirname(__file__), "..", "solutions",
                               "01_tensor_products.py")).read()
    source = source.replace("ov_paper = (E_aug @ W_V[h] @ W_O[h] @ W_U).T",
                            "ov_paper = (E_aug @ W_V[0] @ W_O[0] @ W_U).T")
    assert "W_V[0]" in source
    assert "one OV circuit for every head" in feedback(source, 1, "tensor_product_logits")


def test_one_ov_for_every_head_in_lesson_2():
    source = """
import torch

def full_ov_circuit(W_E, W_V, W_O, W_U):
    one = W_E @ W_V[0] @ W_O[0] @ W_U
    return torch.stack([one for _ in range(W_V.shape[0])])
"""
    assert "one OV circuit for every head" in feedback(source, 2, "full_ov_circuit")


def test_step_enumerator_with_c_at_b_is_named():
    source = """
def skip_trigrams_at_step(tokens, step):
    t = list(tokens)
    return [(t[j], t[j + 1 + step], t[j + 1 + step]) for j in range(len(t) - 2 - step)]
"""
    assert "Your C is B's own token" in feedback(source, 3, "skip_trigrams_at_step")


ALLOWED_TEXT = "may import only torch, numpy, einops, jaxtyping, transformer_lens and Python's standard library"


@pytest.mark.parametrize("line", ["import scipy", "import sympy", "from tqdm import tqdm",
                                  "pandas = __import__('pandas')", "import streamlit.runtime"])
def test_an_import_outside_the_allowed_list_is_refused_and_the_list_given(line):
    """sympy, tqdm, pandas and streamlit are installed (tqdm is even loaded already by torch):
    graded code still may not import them, as the message says; scipy is not installed."""
    source = f"{line}\n\ndef kron_apply(A, W, X):\n    return A\n"
    report = grade_source(source, 1, exercises=["kron_apply"])      # in the sandbox
    text = report.results[0].feedback
    assert not report.results[0].passed
    assert "is not allowed in graded code" in text and ALLOWED_TEXT in text, text


def test_an_import_inside_a_function_is_checked_when_it_runs():
    source = ("import torch\n\ndef kron_apply(A, W, X):\n    import sympy\n"
              "    return A @ X @ W.T\n")
    text = grade_source(source, 1, exercises=["kron_apply"]).results[0].feedback
    assert "importing 'sympy' is not allowed in graded code" in text, text


def test_the_allowed_imports_work():
    source = ("from __future__ import annotations\nimport math, collections, itertools\nimport numpy as np\n"
              "import einops\nfrom jaxtyping import Float\nimport torch\nfrom torch import Tensor\n\n"
              "def kron_apply(A, W, X: Float[Tensor, 'n d']):\n"
              "    return A @ X @ W.T\n")
    report = grade_source(source, 1, exercises=["kron_apply"])
    assert report.results[0].passed, report.results[0].feedback


def test_a_txt_file_is_refused_for_its_type(tmp_path):
    path = tmp_path / "my_work.txt"
    path.write_text("def kron_apply(A, W, X):\n    return A\n")
    with pytest.raises(ValueError, match="only .py files and .ipynb notebooks"):
        grade_file(path)
    from mechinterp_edu.cli import main

    assert main(["grade", str(path), "--no-progress"]) == 2


def test_a_file_graded_as_another_lesson_is_warned_about(tmp_path, capsys):
    path = tmp_path / "02_qk_ov_circuits.py"
    path.write_text("def kron_apply(A, W, X):\n    return A\n")
    report = grade_file(path, lesson=1, exercises=["kron_apply"], sandbox=False)
    assert any("named as a lesson 02 file but was graded as lesson 01" in n for n in report.notes)
    from mechinterp_edu.grader.cli import render_report

    assert "graded as lesson 01" in render_report(report)


def test_an_exercise_may_declare_its_dtype():
    import dataclasses
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "adversarial"))
    import grader_toy_spec as spec

    source = "def double(x):\n    return x.double() * 2\n"
    strict = grade_source(source, exercises=[spec.DOUBLE], sandbox=False).results[0]
    assert not strict.passed and "dtype: expected float32" in strict.feedback
    relaxed = dataclasses.replace(spec.DOUBLE, dtype="any")
    assert grade_source(source, exercises=[relaxed], sandbox=False).results[0].passed
    pinned = dataclasses.replace(spec.DOUBLE, dtype="float64")
    assert grade_source(source, exercises=[pinned], sandbox=False).results[0].passed


def test_a_token_as_its_own_source_is_named_in_the_step_enumerator_too():
    source = """
def skip_trigrams_at_step(tokens, step):
    t = list(tokens)
    return [(t[j], t[j + step], t[j + step + 1]) for j in range(len(t) - 1 - step)]
"""
    assert "a token counted as its own source" in feedback(source, 3, "skip_trigrams_at_step")


def test_a_value_where_a_function_belongs_is_named_alike_in_the_sandbox_and_in_process():
    source = "import numpy as np\nkron_apply = np.zeros(3)\n"
    texts = {sb: grade_source(source, 1, exercises=["kron_apply"], sandbox=sb).results[0].feedback
             for sb in (True, False)}
    assert texts[True] == texts[False] == "`kron_apply` is a numpy.ndarray, not a function"
