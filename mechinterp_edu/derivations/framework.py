"""A derivation is a list of named steps, each proven with sympy.

Each :class:`Step` states an equality ``lhs == rhs`` (both built lazily by
zero-argument callables, so importing a lesson's derivation is cheap) and says
how it is proven:

* ``"simplify"``: ``sympy.simplify(lhs - rhs) == 0`` for scalar expressions
  (entrywise for matrices);
* ``"matrix"``: exact identity over small explicit symbolic matrices: every entry
  of ``lhs - rhs`` expands to 0 (``sympy.expand``), shapes must agree;
* ``"true"``: ``lhs`` is a sympy boolean / relational that must simplify to True
  (``rhs`` ignored), e.g. an inequality under assumptions.

A false step fails: its verdict carries the first non-zero residual so a reader
sees *why*.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import sympy as sp

Method = Literal["simplify", "matrix", "true"]


@dataclass(frozen=True)
class Step:
    name: str                      # short id, unique inside its derivation
    statement: str                 # LaTeX shown to the learner, e.g. r"(A \otimes W)\,\mathrm{vec}(X) = ..."
    lhs: Callable[[], Any]
    rhs: Callable[[], Any] = lambda: 0
    method: Method = "simplify"
    explanation: str = ""          # one or two sentences: what this step means / why it holds


@dataclass(frozen=True)
class Derivation:
    name: str                      # "<lesson slug>.<name>", e.g. "tensor_products.kron"
    title: str
    steps: tuple[Step, ...]
    lesson: int = 0

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"Derivation {self.name!r} has no step {name!r}; steps: {[s.name for s in self.steps]}")


@dataclass
class StepResult:
    derivation: str
    step: str
    statement: str
    passed: bool
    detail: str
    seconds: float
    explanation: str = ""


def _residual_entries(lhs: Any, rhs: Any) -> list[Any]:
    diff = sp.Matrix(lhs) - sp.Matrix(rhs) if isinstance(lhs, sp.MatrixBase) or isinstance(rhs, sp.MatrixBase) else lhs - rhs
    if isinstance(diff, sp.MatrixBase):
        return list(diff)
    return [diff]


def prove(step: Step) -> tuple[bool, str]:
    """Return (passed, detail) for one step."""
    lhs = step.lhs()
    if step.method == "true":
        verdict = sp.simplify(lhs)
        if verdict is sp.true or verdict is True:
            return True, "holds (simplifies to True)"
        return False, f"does not simplify to True: {verdict}"
    rhs = step.rhs()
    if step.method == "matrix":
        L, R = sp.Matrix(lhs), sp.Matrix(rhs)
        if L.shape != R.shape:
            return False, f"shapes differ: left {L.shape}, right {R.shape}"
        for idx, entry in enumerate(L - R):
            if sp.expand(entry) != 0:
                r, c = divmod(idx, L.shape[1])
                return False, f"entry ({r}, {c}) of left - right is {sp.expand(entry)}, not 0"
        return True, f"exact identity over symbolic {L.shape[0]}x{L.shape[1]} matrices"
    if step.method == "simplify":
        entries = _residual_entries(lhs, rhs)
        for entry in entries:
            res = sp.simplify(entry)
            if res != 0:
                return False, f"left - right simplifies to {res}, not 0"
        return True, "left - right simplifies to 0"
    raise ValueError(f"Unknown proof method {step.method!r} in step {step.name!r}")


def check_step(derivation: Derivation, step: Step) -> StepResult:
    start = time.perf_counter()
    try:
        passed, detail = prove(step)
    except Exception as exc:  # a step that cannot even be built is a failed step, with the reason
        passed, detail = False, f"could not be checked: {type(exc).__name__}: {exc}"
    return StepResult(derivation.name, step.name, step.statement, passed, detail,
                      time.perf_counter() - start, step.explanation)


def check(derivation: Derivation) -> list[StepResult]:
    return [check_step(derivation, s) for s in derivation.steps]


# --------------------------------------------------------------------------- lookup
def all_derivations() -> list[Derivation]:
    """Every lesson's DERIVATIONS, in course order (read through the course map)."""
    from mechinterp_edu.course import all_parts
    found = all_parts("derivations")
    names = [d.name for d in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"Derivations defined twice: {twice}; give each a unique '<slug>.<name>'.")
    return found


def get_derivation(name: str) -> Derivation:
    """Look up ``"<lesson slug>.<derivation>"`` (e.g. ``"tensor_products.kron"``)."""
    from mechinterp_edu.course import LESSONS, parts
    slug = name.split(".", 1)[0]
    for lesson in LESSONS:
        if lesson.slug == slug:
            for derivation in parts(lesson, "derivations"):
                if derivation.name == name:
                    return derivation
    raise KeyError(f"No derivation {name!r}; known: {sorted(d.name for d in all_derivations())}")


# --------------------------------------------------------------------------- helpers
def symbolic_matrix(name: str, rows: int, cols: int, **assumptions) -> sp.Matrix:
    """A rows x cols matrix of fresh symbols ``name_i_j`` (real by default)."""
    assumptions.setdefault("real", True)
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}_{j}", **assumptions))


def one_hot_matrix(tokens: list[int], d_vocab: int) -> sp.Matrix:
    """[len(tokens), d_vocab] one-hot rows."""
    return sp.Matrix(len(tokens), d_vocab, lambda i, j: 1 if tokens[i] == j else 0)


def softmax(entries: list) -> sp.Matrix:
    """softmax of symbolic scores, as a column: exp(s_i) / sum_j exp(s_j)."""
    exps = [sp.exp(e) for e in entries]
    total = sum(exps)
    return sp.Matrix([e / total for e in exps])
