"""Sympy derivation checks. Each lesson package lists its derivations in ``derivations.DERIVATIONS``."""
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
    softmax,
    symbolic_matrix,
)
