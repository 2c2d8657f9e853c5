"""The grader's verdicts and feedback on honest submissions (right and wrong), in-process.

Each wrong submission below makes one typical mistake; the expected feedback names it.
Expected numbers (e.g. 0.25 = 1/sqrt(16)) come from the maths of the case, not from
the grader. Graded with ``sandbox=False`` (trusted code, fast); the sandbox itself is
tested in test_grader_sandbox.py.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

# keep the grader's case cache out of the home folder (shared by the grader's test modules)
os.environ.setdefault("MECHINTERP_EDU_GRADER_CACHE",
                      os.path.join(tempfile.gettempdir(), "mechinterp-edu-tests-grader-cache"))

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "adversarial"))
import grader_toy_spec as spec  # noqa: E402

from mechinterp_edu.grader.compare import (Tolerance, check_array, compare_arrays,  # noqa: E402
                                           tolerance_for)
from mechinterp_edu.grader.grade import grade_source  # noqa: E402
from mechinterp_edu.grader.protocol import ArrayOut  # noqa: E402

HEAD = "import math\nimport torch\n\n"


def grade(body: str, exercises, **kw):
    return grade_source(HEAD + body, exercises=exercises, sandbox=False, **kw)


def only(body: str, exercise):
    report = grade(body, [exercise])
    assert len(report.results) == 1
    return report.results[0]


ATTN_MASKED = '''
def attn_scores(q, k):
    n = q.shape[-2]
    s = q @ k.transpose(-1, -2){scale}
    return s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu({diag}), float("-inf"))
'''


# --------------------------------------------------------------------------- correct code passes
@pytest.mark.parametrize("body", [
    # einsum
    ATTN_MASKED.format(scale=" / math.sqrt(q.shape[-1])", diag=1).replace(
        "q @ k.transpose(-1, -2)", 'torch.einsum("hqd,hkd->hqk", q, k)'),
    # float64 maths whatever the input dtype (cast back), another order of operations, where()
    '''
def attn_scores(q, k):
    q64, k64 = q.double(), k.double()
    s = (q64 * q.shape[-1] ** -0.5) @ k64.mT
    keep = torch.ones(s.shape[-1], s.shape[-1]).tril().bool()
    return torch.where(keep, s, -torch.inf).to(q.dtype)
''',
    # float32 maths on float64 inputs (precision drops to ~1e-7, still far inside the tolerance)
    '''
def attn_scores(q, k):
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    n = s.shape[-1]
    return s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf")).to(q.dtype)
''',
    # a large finite number as the mask (TransformerLens uses -1e5) is accepted
    ATTN_MASKED.format(scale=" / math.sqrt(q.shape[-1])", diag=1).replace('float("-inf")', "-1e9"),
])
def test_correct_variants_pass(body):
    result = only(body, spec.ATTN)
    assert result.passed, result.feedback
    assert result.score == result.max_score == 3


def test_every_output_kind_passes_when_right():
    body = '''
def embed_logits(X, W_E, W_pos, W_U):
    return torch.einsum("pv,vd,dw->pw", X, W_E, W_U) + W_pos[: X.shape[0]] @ W_U

def double(x):
    return 2.0 * x

def count_pairs(tokens):
    t = tokens.tolist()
    return [(i, j) for j in range(len(t)) for i in range(j) if t[i] == t[j]]   # a list is fine for a set

def ranking(scores):
    return [(int(i),) for i in torch.argsort(-scores, stable=True)]

def mean_norm(x):
    return (x ** 2).sum(-1).sqrt().mean()          # a 0-d tensor counts as a number

def qk_pair(x, W_Q, W_K):
    return x @ W_Q, torch.einsum("pm,md->pd", x, W_K)

def ov_circuit(W_E, W_V, W_O, W_U):
    return torch.einsum("vm,hmd,hdn,nw->hvw", W_E, W_V, W_O, W_U)

def top_direction(M):
    return -torch.linalg.svd(M).Vh[0]              # the other sign: the spec's compare accepts it
'''
    report = grade(body, [e for e in spec.ALL if e is not spec.ATTN])
    assert [r.exercise for r in report.results] == [e.name for e in spec.ALL if e is not spec.ATTN]
    assert all(r.passed for r in report.results), [(r.exercise, r.feedback) for r in report.results]
    assert report.score == report.max_score == sum(e.points for e in spec.ALL) - spec.ATTN.points


# --------------------------------------------------------------------------- relational feedback
def test_divided_by_d_head_names_the_scale():
    result = only(ATTN_MASKED.format(scale=" / q.shape[-1]", diag=1), spec.ATTN)
    assert not result.passed and result.score == 0
    # first case: d_head = 16, so got / expected = (1/16) / (1/sqrt(16)) = 1/4
    assert f"{1 / math.sqrt(16):.6g}" in result.feedback
    assert "1/sqrt(d_head)" in result.feedback
    assert "divide by d_head instead of sqrt(d_head)" in result.feedback


def test_forgot_the_scale_names_sqrt_d_head():
    result = only(ATTN_MASKED.format(scale="", diag=1), spec.ATTN)
    assert not result.passed
    assert f"{math.sqrt(16):.6g}" in result.feedback and "sqrt(d_head)" in result.feedback
    assert "forget to divide by sqrt(d_head)" in result.feedback


def test_catalogue_mistake_message_is_the_feedback():
    body = '''
def attn_scores(q, k):
    return torch.einsum("hqd,hkd->hqk", q, k) / math.sqrt(q.shape[-1])
'''
    result = only(body, spec.ATTN)
    assert not result.passed
    assert result.feedback.startswith("CATALOGUE: you did not apply the causal mask")


def test_masked_diagonal_is_named():
    result = only(ATTN_MASKED.format(scale=" / math.sqrt(q.shape[-1])", diag=0), spec.ATTN)
    assert not result.passed
    assert "masked the diagonal too" in result.feedback


def test_missing_mask_without_catalogue_is_explained():
    plain = spec.Exercise(1, "attn_scores", 3, spec.attn_scores_ref, spec.attn_scores_cases)
    body = '''
def attn_scores(q, k):
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
'''
    result = only(body, plain)
    assert "causal mask" in result.feedback and "above the diagonal" in result.feedback


def test_missing_positional_term_is_named():
    body = '''
def embed_logits(X, W_E, W_pos, W_U):
    return X @ W_E @ W_U
'''
    result = only(body, spec.EMBED)
    assert "missing the positional term" in result.feedback


def test_term_counted_twice_is_named():
    body = '''
def embed_logits(X, W_E, W_pos, W_U):
    n = X.shape[-2]
    return (X @ W_E + 2 * W_pos[:n]) @ W_U
'''
    assert "positional term is counted twice" in only(body, spec.EMBED).feedback


def test_transpose_is_named():
    body = '''
def ov_circuit(W_E, W_V, W_O, W_U):
    return (W_E @ W_V @ W_O @ W_U).transpose(-1, -2)
'''
    feedback = only(body, spec.OV).feedback
    assert "last two axes swapped" in feedback


def test_axis_permutation_with_wrong_shape_is_named():
    body = '''
def embed_logits(X, W_E, W_pos, W_U):
    return ((X @ W_E + W_pos[: X.shape[0]]) @ W_U).T
'''
    feedback = only(body, spec.EMBED).feedback
    # case 0: n_ctx 6, d_vocab 11
    assert "expected (6, 11), got (11, 6)" in feedback
    assert "last two axes swapped" in feedback


def test_per_row_constant_is_named():
    body = '''
def attn_scores(q, k):
    n = q.shape[-2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s - s.mean(-1, keepdim=True)                 # a per-row shift (the wrong normalisation)
    return s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
'''
    feedback = only(body, spec.ATTN).feedback
    assert "different constant in each row" in feedback


def test_constant_offset_is_named():
    feedback = only("def double(x):\n    return 2 * x + 0.5\n", spec.DOUBLE).feedback
    assert "same constant 0.5 everywhere" in feedback


def test_missing_diagonal_is_named():
    body = '''
def ov_circuit(W_E, W_V, W_O, W_U):
    out = W_E @ W_V @ W_O @ W_U
    return out - torch.diag_embed(torch.diagonal(out, dim1=-2, dim2=-1))
'''
    assert "missing the diagonal" in only(body, spec.OV).feedback


def test_sign_flip_is_named():
    feedback = only("def double(x):\n    return -2 * x\n", spec.DOUBLE).feedback
    assert "times a constant factor -1" in feedback and "sign is flipped" in feedback


def test_generic_error_reports_where_and_how_much():
    body = '''
def double(x):
    y = 2 * x.clone()
    y.view(-1)[1] += 0.25
    return y
'''
    feedback = only(body, spec.DOUBLE).feedback
    # case "a 2x3 matrix": flat element 1 is index (0, 1); expected 2 * 1 = 2, got 2.25
    assert "max abs error 0.25 at index (0, 1)" in feedback
    assert "expected 2, got 2.25" in feedback


# --------------------------------------------------------------------------- structural feedback
def test_missing_function():
    result = only("def something_else(x):\n    return x\n", spec.DOUBLE)
    assert "missing function `double`" in result.feedback


def test_not_implemented_yet():
    result = only('def double(x):\n    raise NotImplementedError("not implemented yet")\n', spec.DOUBLE)
    assert result.feedback == "not implemented yet" and result.score == 0


def test_exception_shows_only_the_learners_traceback():
    body = '''
def helper(x):
    return x.reshape(7, 7)


def double(x):
    return helper(x) * 2
'''
    feedback = only(body, spec.DOUBLE).feedback
    lines = (HEAD + body).splitlines()
    reshape_line = lines.index("    return x.reshape(7, 7)") + 1
    call_line = lines.index("    return helper(x) * 2") + 1
    assert "raised RuntimeError on case a 2x3 matrix" in feedback
    assert f"line {reshape_line}, in helper" in feedback and "x.reshape(7, 7)" in feedback
    assert f"line {call_line}, in double" in feedback
    for noise in ("site-packages", "_child.py", "mechinterp_edu", "torch/"):
        assert noise not in feedback


def test_exception_on_an_edge_case_names_the_case():
    body = '''
def attn_scores(q, k):
    n = q.shape[-2]
    if n == 1:
        raise IndexError("no previous position")
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
'''
    feedback = only(body, spec.ATTN).feedback
    assert "raised IndexError on case length-1 sequence" in feedback
    assert "no previous position" in feedback


def test_extra_axis_is_named_with_its_size():
    body = '''
def embed_logits(X, W_E, W_pos, W_U):
    return ((X @ W_E + W_pos[: X.shape[0]]) @ W_U)[None]
'''
    feedback = only(body, spec.EMBED).feedback
    assert "an extra axis 0 of size 1" in feedback


def test_wrong_axis_size_names_the_axis():
    body = '''
def attn_scores(q, k):
    n = q.shape[-2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return s[..., :-1] if n > 1 else s
'''
    feedback = only(body, spec.ATTN).feedback
    assert "expected (2, 5, 5), got (2, 5, 4)" in feedback
    assert "axis 2 (key position) is 4 instead of 5" in feedback


def test_integer_dtype_is_named():
    feedback = only("def double(x):\n    return (2 * x).long()\n", spec.DOUBLE).feedback
    assert "dtype: expected a floating-point tensor" in feedback and "int64" in feedback


def test_inf_output_is_named():
    feedback = only("def double(x):\n    return 2 * x / (x - x)\n", spec.DOUBLE).feedback
    assert ("NaN" in feedback) or ("inf" in feedback)


def test_set_and_list_and_float_and_tuple_feedback():
    report = grade('''
def count_pairs(tokens):
    t = tokens.tolist()
    return {(i, j) for i in range(len(t)) for j in range(len(t)) if i != j and t[i] == t[j]}

def ranking(scores):
    return [(int(i),) for i in torch.argsort(scores)]          # ascending: wrong order

def mean_norm(x):
    return float(x.norm(dim=-1).sum())                          # a sum, not a mean

def qk_pair(x, W_Q, W_K):
    return (x @ W_Q,)
''', [spec.PAIRS, spec.RANKING, spec.MEAN_NORM, spec.QK_PAIR])
    pairs, ranking, mean_norm, qk = report.results
    assert "items should not be there" in pairs.feedback
    assert "right items in the wrong order" in ranking.feedback
    # 4 rows: the sum is 4 x the mean
    assert "times a constant factor 4" in mean_norm.feedback
    assert "tuple of 1 items, expected 2" in qk.feedback
    assert report.score == 0


def test_custom_compare_rejects_a_wrong_direction():
    feedback = only("def top_direction(M):\n    return torch.linalg.svd(M).Vh[1]\n", spec.TOP).feedback
    assert "not the top right-singular direction" in feedback


def test_mutating_inputs_is_noted_and_does_not_corrupt_the_reference():
    body = '''
def double(x):
    out = 2 * x
    x.zero_()
    return out
'''
    first = only(body, spec.DOUBLE)
    assert first.passed and "changed its input" in first.feedback
    # the grader's cached inputs and references are intact: a plain right answer still passes
    second = only("def double(x):\n    return x * 2\n", spec.DOUBLE)
    assert second.passed, second.feedback


# --------------------------------------------------------------------------- tolerance and units
def test_tolerance_is_scaled_to_the_data():
    tol = tolerance_for(1e-4, 1e-5, ["float64"])
    exp = np.array([1e6, 1.0])
    # 5 absolute error on a 1e6 entry is within 1e-5 * 1e6 + 1e-4 * 1e6
    assert compare_arrays(np.array([1e6 + 5, 1.0]), exp, tol).ok
    assert not compare_arrays(np.array([1e6 + 500, 1.0]), exp, tol).ok
    # float32 inputs get a looser tolerance than float64 ones
    assert tolerance_for(1e-4, 1e-5, ["float32"]).atol_frac > tol.atol_frac


def test_masked_positions_must_match():
    tol = Tolerance(1e-4, 1e-5, 1e-12)
    exp = np.array([[1.0, -np.inf], [2.0, 3.0]])
    assert compare_arrays(np.array([[1.0, -np.inf], [2.0, 3.0]]), exp, tol).ok
    assert compare_arrays(np.array([[1.0, -1e9], [2.0, 3.0]]), exp, tol).ok
    # TransformerLens masks with -1e5; fine even when the scores reach 120
    big = np.array([[40.0, -np.inf], [80.0, 120.0]])
    assert compare_arrays(np.array([[40.0, -1e5], [80.0, 120.0]]), big, tol).ok
    assert not compare_arrays(np.array([[1.0, 0.0], [2.0, 3.0]]), exp, tol).ok
    assert not compare_arrays(np.array([[1.0, -50.0], [2.0, 3.0]]), exp, tol).ok


def test_device_mismatch_is_named():
    values = np.zeros((2, 2))
    got = ArrayOut(values, "float32", "cpu", (2, 2))
    exp = ArrayOut(values, "float32", "cuda:0", (2, 2))
    problem = check_array(got, exp, Tolerance(1e-4, 1e-5, 1e-12), {})
    assert problem is not None and problem.message.startswith("device: your result is on cpu")
