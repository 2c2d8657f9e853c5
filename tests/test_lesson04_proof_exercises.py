"""Lesson 4, part 7: the proof exercises' diagnoses and the proofs' sympy steps.

Unsound submissions must be named unsound with an input that breaks them; counting ties as
correct must be named; the worked solutions must get full marks; every proof step must be
proven by sympy and every false variant must fail.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechinterp_edu.derivations.framework import check
from mechinterp_edu.lessons.max_of_k import proof_exercises as PE
from mechinterp_edu.lessons.max_of_k.proof_steps import FALSE_STEPS, PROOFS, PROOFS_FALSE, TRUE_STEPS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["strictly_correct_inputs", "pessimal_ablation_bound", "cubic_bound", "rank_one_residual_bound"]


def _grade(source: str, names=NAMES):
    from mechinterp_edu.grader.grade import grade_source

    return {r.exercise: r for r in grade_source(source, 4, exercises=names, sandbox=False).results}


SOLUTION = (ROOT / "solutions" / "04_max_of_k.py").read_text(encoding="utf-8")


def test_solutions_full_marks_and_stubs_zero():
    for r in _grade(SOLUTION).values():
        assert r.passed and r.score == r.max_score, (r.exercise, r.feedback)
    for r in _grade((ROOT / "exercises" / "04_max_of_k.py").read_text(encoding="utf-8")).values():
        assert not r.passed and r.score == 0 and "not implemented" in r.feedback, r.exercise


def _variant(old: str, new: str) -> str:
    assert old in SOLUTION, old
    return SOLUTION.replace(old, new)


def test_ties_counted_as_correct_is_named():
    for old, new in (("right = chosen > others.max(dim=1).values", "right = chosen >= others.max(dim=1).values"),
                     ("right = chosen > others.max(dim=1).values", "right = logits.argmax(dim=1) == target")):
        r = _grade(_variant(old, new), ["strictly_correct_inputs"])["strictly_correct_inputs"]
        assert not r.passed and "ties counted as correct" in r.feedback, r.feedback


def test_unsound_pessimal_ablation_is_named_with_a_counterexample():
    r = _grade(_variant("return torch.minimum(at_floor, at_one)", "return at_floor"),
               ["pessimal_ablation_bound"])["pessimal_ablation_bound"]
    assert not r.passed and "unsound at entry" in r.feedback and "g = " in r.feedback, r.feedback
    r = _grade(_variant("return torch.minimum(at_floor, at_one)", "return torch.minimum(g, b)"),
               ["pessimal_ablation_bound"])["pessimal_ablation_bound"]
    assert not r.passed and "sound, but looser" in r.feedback, r.feedback


def test_unsound_cubic_bound_names_a_wrong_input_it_certifies():
    optimistic = _variant("top_score[:, t] = torch.maximum(top_score[:, t - 1], EQKE[:, t])",
                          "top_score[:, t] = torch.minimum(top_score[:, t - 1], EQKE[:, t])")
    r = _grade(optimistic, ["cubic_bound"])["cubic_bound"]
    assert not r.passed and "unsound" in r.feedback and "input [" in r.feedback, r.feedback
    assert "certifies an input the model gets wrong" in r.feedback or "has margin" in r.feedback


def test_cubic_compare_names_ties_and_accepts_tighter_sound_bounds():
    case = [c for c in PE.table_cases() if "ties" in c.label][0]
    truth, worst = PE._truth(case.label, tuple(case.args))
    expected = PE.cubic_bound(*case.args)
    tie = ((truth == 0) & torch.isfinite(truth)).nonzero()[0]
    got = expected.clone()
    got[tuple(tie)] = 0.5
    message = PE.compare_cubic(got, expected, case)
    assert message and "unsound" in message and "tie counts as wrong" in message, message
    exact = torch.where(torch.isfinite(truth), truth, expected)        # the tightest sound bound
    assert PE.compare_cubic(exact, expected, case) is None
    looser = torch.where(torch.isfinite(truth), expected - 1.0, expected)
    assert "looser" in PE.compare_cubic(looser, expected, case)


def test_rank_one_bound_without_the_residual_is_unsound():
    r = _grade(_variant("rho = R.abs().max()", "rho = 0 * R.abs().max()"),
               ["rank_one_residual_bound"])["rank_one_residual_bound"]
    assert not r.passed and "unsound" in r.feedback and "query" in r.feedback, r.feedback
    r = _grade(_variant("rho = R.abs().max()", "rho = S[1]"), ["rank_one_residual_bound"])["rank_one_residual_bound"]
    assert not r.passed and "sigma2" in r.feedback, r.feedback


def test_reference_bounds_are_sound_on_every_case():
    for case in PE.table_cases():
        truth, _ = PE._truth(case.label, tuple(case.args))
        bound = PE.cubic_bound(*case.args)
        finite = torch.isfinite(truth)
        assert torch.equal(finite, torch.isfinite(bound)), case.label
        assert bool((bound[finite] <= truth[finite] + 1e-9).all()), case.label
        grid = PE.strictly_correct_inputs(*case.args)
        assert grid.shape == (case.args[0].shape[0],) * case.args[1].shape[1]
    for case in PE.eqke_cases():
        (E,) = case.args
        assert PE.compare_gap(PE.rank_one_residual_bound(E), PE.rank_one_residual_bound(E), case) is None


# --------------------------------------------------------------------------- sympy steps
def test_every_proof_step_is_proven():
    for result in check(PROOFS):
        assert result.passed, (result.step, result.detail)


def test_every_proof_step_has_a_false_variant_that_fails():
    assert [s.name for s in TRUE_STEPS] == [s.name for s in FALSE_STEPS]
    for result in check(PROOFS_FALSE):
        assert not result.passed, f"the false variant of {result.step} was proven: {result.detail}"


def test_the_proofs_derivation_and_exercises_are_listed():
    from mechinterp_edu.derivations.framework import get_derivation
    from mechinterp_edu.grader.spec import exercises_for

    assert get_derivation("max_of_k.proofs") is PROOFS
    assert set(NAMES) <= {e.name for e in exercises_for(4)}


def test_sandboxed_grading_of_the_proof_solutions():
    from mechinterp_edu.grader.grade import grade_source

    report = grade_source(SOLUTION, 4, exercises=NAMES, sandbox=True)
    for r in report.results:
        assert r.passed and r.score == r.max_score, (r.exercise, r.feedback)
