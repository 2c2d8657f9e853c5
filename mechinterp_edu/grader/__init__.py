"""The diagnostic, sandboxed autograder. See :mod:`mechinterp_edu.grader.spec` for
what lessons register, and :mod:`mechinterp_edu.grader.grade` for grading files."""
