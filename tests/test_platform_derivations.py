"""The sympy derivation framework, and every registered derivation step of every lesson."""
from __future__ import annotations


import pytest
import sympy as sp

from mechinterp_edu.course import LESSONS, parts
from mechinterp_edu.derivations import framework
from mechinterp_edu.derivations import (
    Derivation,
    Step,
    check,
    check_step,
    get_derivation,
    one_hot_matrix,
    symbolic_matrix,
)

a, b, x = sp.symbols("a b x", real=True)


def _derivation(*steps: Step) -> Derivation:
    return Derivation(name="test_framework.demo", title="demo", steps=steps)


# --------------------------------------------------------------------------- the framework
def test_true_scalar_identity_proves():
    step = Step("square", "(a+b)^2 = a^2 + 2ab + b^2", lambda: (a + b) ** 2, lambda: a**2 + 2 * a * b + b**2)
    result = check_step(_derivation(step), step)
    assert result.passed, result.detail


def test_false_scalar_identity_fails_with_its_residual():
    step = Step("square", "(a+b)^2 = a^2 + b^2", lambda: (a + b) ** 2, lambda: a**2 + b**2)
    result = check_step(_derivation(step), step)
    assert not result.passed
    assert "2*a*b" in result.detail.replace(" ", "")


def test_true_matrix_identity_proves():
    A, B = symbolic_matrix("A", 2, 3), symbolic_matrix("B", 3, 2)
    step = Step("transpose", "(AB)^T = B^T A^T", lambda: (A * B).T, lambda: B.T * A.T, method="matrix")
    assert check_step(_derivation(step), step).passed


def test_false_matrix_identity_fails_naming_an_entry():
    A, B = symbolic_matrix("A", 2, 2), symbolic_matrix("B", 2, 2)
    step = Step("transpose", "(AB)^T = A^T B^T", lambda: (A * B).T, lambda: A.T * B.T, method="matrix")
    result = check_step(_derivation(step), step)
    assert not result.passed
    assert "entry" in result.detail


def test_matrix_shape_mismatch_fails():
    A = symbolic_matrix("A", 2, 3)
    step = Step("shape", "A = A^T", lambda: A, lambda: A.T, method="matrix")
    result = check_step(_derivation(step), step)
    assert not result.passed and "shape" in result.detail


def test_simplify_works_entrywise_on_matrices():
    M = sp.Matrix([[sp.sin(x) ** 2 + sp.cos(x) ** 2, 0], [0, 1]])
    step = Step("eye", "M = I", lambda: M, lambda: sp.eye(2))
    assert check_step(_derivation(step), step).passed
    bad = Step("eye", "M = 2I", lambda: M, lambda: 2 * sp.eye(2))
    assert not check_step(_derivation(bad), bad).passed


def test_true_method_for_relations():
    pos = sp.Symbol("p", positive=True)
    ok = Step("pos", "p^2 + 1 > 0", lambda: sp.Gt(pos**2 + 1, 0), method="true")
    assert check_step(_derivation(ok), ok).passed
    unknown = Step("sign", "x > 0", lambda: sp.Gt(x, 0), method="true")
    assert not check_step(_derivation(unknown), unknown).passed


def test_a_step_that_cannot_be_built_is_reported_not_raised():
    def broken():
        raise ZeroDivisionError("oops")
    step = Step("broken", "1/0", broken)
    result = check_step(_derivation(step), step)
    assert not result.passed
    assert "could not be checked" in result.detail and "ZeroDivisionError" in result.detail


def test_unknown_method_is_reported():
    step = Step("odd", "?", lambda: a, lambda: a, method="guess")  # type: ignore[arg-type]
    result = check_step(_derivation(step), step)
    assert not result.passed and "could not be checked" in result.detail


def test_check_returns_one_verdict_per_step_in_order():
    good = Step("good", "a = a", lambda: a, lambda: a)
    bad = Step("bad", "a = b", lambda: a, lambda: b)
    results = check(_derivation(good, bad))
    assert [(r.step, r.passed) for r in results] == [("good", True), ("bad", False)]
    assert all(r.derivation == "test_framework.demo" and r.seconds >= 0 for r in results)


def test_one_hot_matrix():
    m = one_hot_matrix([2, 0, 2], 3)
    assert m == sp.Matrix([[0, 0, 1], [1, 0, 0], [0, 0, 1]])


def test_lookup_through_the_course_map(monkeypatch):
    from support import add_fake_lesson

    demo = _derivation(Step("s", "a = a", lambda: a, lambda: a))
    add_fake_lesson(monkeypatch, "test_framework", derivations=[demo])
    assert get_derivation("test_framework.demo") is demo
    assert demo in framework.all_derivations()
    with pytest.raises(KeyError, match="known"):
        get_derivation("test_framework.no_such")
    with pytest.raises(KeyError, match="no step"):
        demo.step("no_such")


def test_a_name_defined_twice_is_an_error(monkeypatch):
    from support import add_fake_lesson

    add_fake_lesson(monkeypatch, "test_framework", derivations=[
        _derivation(Step("s", "a = a", lambda: a, lambda: a)),
        _derivation(Step("s", "b = b", lambda: b, lambda: b))])
    with pytest.raises(ValueError, match="twice"):
        framework.all_derivations()


# --------------------------------------------------------------------------- every lesson
def _collect():
    """(lesson, derivation, step) triples; a lesson whose module cannot be imported yields
    one parameter that fails with the reason (so collection itself never breaks)."""
    params = []
    for lesson in LESSONS:
        try:
            found = parts(lesson, "derivations")
        except Exception as exc:  # reported by the test below
            params.append(pytest.param(lesson, None, None, exc, id=f"lesson{lesson.number:02d}-import"))
            continue
        for derivation in found:
            for step in derivation.steps:
                params.append(pytest.param(lesson, derivation, step, None,
                                           id=f"{derivation.name}:{step.name}"))
    return params


PARAMS = _collect()


@pytest.mark.parametrize("lesson, derivation, step, import_error", PARAMS)
def test_every_registered_step_is_proven(lesson, derivation, step, import_error):
    assert import_error is None, (
        f"lesson {lesson.number}: {lesson.module}.derivations cannot be imported: "
        f"{type(import_error).__name__}: {import_error}")
    result = framework.check_step(derivation, step)    # proven once per run (conftest), then shared
    assert result.passed, f"{derivation.name}:{step.name} is not proven: {result.detail}"


@pytest.mark.parametrize("lesson, derivation, step, import_error",
                         [p for p in PARAMS if p.values[1] is not None])
def test_every_registered_step_fails_when_made_false(lesson, derivation, step, import_error):
    """Perturb each step (rhs + a fresh symbol, or negate a relation): it must no longer prove.
    This catches a checker that would pass anything for that kind of step."""
    eps = sp.Symbol("perturbation_eps", positive=True)
    if step.method == "true":
        broken = Step(step.name, step.statement, lambda: sp.Not(step.lhs()), method="true")
    else:
        def rhs():
            value = step.rhs()
            if isinstance(value, sp.MatrixBase):
                bump = sp.zeros(*value.shape)
                bump[0, 0] = eps
                return value + bump
            return value + eps
        broken = Step(step.name, step.statement, step.lhs, rhs, method=step.method)
    result = check_step(derivation, broken)
    assert not result.passed, f"{derivation.name}:{step.name} still 'proves' after perturbation"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: f"lesson{l.number:02d}")
def test_each_lesson_registers_a_derivation(lesson):
    prefix = lesson.slug + "."
    mine = [d for d in parts(lesson, "derivations") if d.lesson == lesson.number]
    assert mine, f"{lesson.module}.derivations lists no Derivation with lesson={lesson.number}"
    for derivation in mine:
        assert derivation.name.startswith(prefix), \
            f"{derivation.name!r} should be named '{prefix}<name>' (the contract in docs/architecture.md)"
        names = [s.name for s in derivation.steps]
        assert names and len(names) == len(set(names)), f"{derivation.name}: step names must be unique"
        assert all(s.statement.strip() for s in derivation.steps), f"{derivation.name}: empty statement"


def test_statements_hold_no_control_characters():
    """A LaTeX statement typed without r"..." turns \\frac into a form feed and \\alpha into a bell;
    KaTeX then shows a parse error on the page. Catch it here, with the step's name."""
    from mechinterp_edu.derivations import all_derivations

    bad = [f"{d.name}:{s.name}" for d in all_derivations() for s in d.steps
           if any(ord(ch) < 32 for ch in s.statement + s.explanation)]
    assert not bad, f"control characters in: {bad}"
