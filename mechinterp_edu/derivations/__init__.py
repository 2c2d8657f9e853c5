"""Sympy derivation checks. Each lesson module registers its derivation(s)."""
from mechinterp_edu.derivations.framework import (  # noqa: F401
    Derivation,
    Step,
    StepResult,
    all_derivations,
    check,
    check_step,
    get_derivation,
    one_hot_matrix,
    prove,
    register,
    symbolic_matrix,
)
