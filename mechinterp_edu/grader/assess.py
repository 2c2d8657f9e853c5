"""Deciding one exercise: pass or fail, and the feedback that explains a failure.

:func:`assess` applies the order of diagnosis described in :mod:`.compare` to every case of
an exercise; the relational diagnoses (a constant factor, a missing term, a per-row
constant, a wrong mask...) are here too, since they compare a whole wrong answer with the
reference rather than check one property.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from mechinterp_edu.grader.compare import (Problem, Tolerance, _only_diagonal, _permutation_match,
                                           _type_problem, check_output, close, compare_arrays, fmt,
                                           fmt_index)
from mechinterp_edu.grader.protocol import RAISED_MESSAGE_CHARS, CaseRun, ExerciseRun, Raised


# --------------------------------------------------------------------------- relational diagnosis
def _fit_scale(got: np.ndarray, exp: np.ndarray) -> Optional[float]:
    fin = np.isfinite(got) & np.isfinite(exp)
    e, g = exp[fin].astype(np.float64), got[fin].astype(np.float64)
    denom = float(np.dot(e.ravel(), e.ravel()))
    if denom == 0.0 or not np.isfinite(denom):
        return None
    return float(np.dot(g.ravel(), e.ravel()) / denom)


def _scale_reasons(c: float, info: dict) -> list[str]:
    reasons = []
    for key, value in info.items():
        if type(value) not in (int, float) or key in ("seed",) or value <= 0 or value == 1:
            continue
        forms = [
            (1 / math.sqrt(value), f"1/sqrt({key})",
             f"did you divide by {key} instead of sqrt({key}), or apply the 1/sqrt({key}) scale twice?"),
            (math.sqrt(value), f"sqrt({key})",
             f"did you forget to divide by sqrt({key}), or multiply by it instead of dividing?"),
            (1 / value, f"1/{key}",
             f"an extra division by {key} (a mean where a sum is needed?)"),
            (float(value), f"{key}",
             f"a missing division by {key} (a sum where a mean is needed?), or an extra factor {key}"),
        ]
        for target, label, why in forms:
            if abs(c - target) <= 2e-3 * abs(target):
                reasons.append(f"{fmt(c)} = {label} with {key} = {fmt(value)}: {why}")
                break
    if not reasons:
        if abs(c + 1) <= 2e-3:
            reasons.append("the sign is flipped: subtracted the wrong way round, or a minus sign too many?")
        elif abs(c - 2) <= 4e-3:
            reasons.append("twice the expected value: something is counted twice (added both ways?)")
        elif abs(c - 0.5) <= 1e-3:
            reasons.append("half the expected value: a factor 1/2 too many, or half of a sum missing?")
    return reasons


def _constant_along(d: np.ndarray, axis: int, tol_abs: float) -> Optional[np.ndarray]:
    """The per-slice constant if ``d`` (NaN where masked) is constant along ``axis``."""
    if d.ndim == 0 or d.shape[axis] < 2:
        return None
    finite = np.isfinite(d)
    counts = finite.sum(axis=axis)
    if not np.any(counts >= 2):
        return None
    with np.errstate(invalid="ignore"):
        means = np.nanmean(np.where(finite, d, np.nan), axis=axis, keepdims=True)
    centered = np.where(finite, d - means, 0.0)
    if np.max(np.abs(centered)) <= tol_abs:
        return np.squeeze(np.where(np.isfinite(means), means, 0.0), axis=axis)
    return None


def relational(got: np.ndarray, exp: np.ndarray, tol: Tolerance, info: dict,
               terms: Optional[dict[str, np.ndarray]], label: str) -> Optional[str]:
    """Explain how ``got`` relates to ``exp`` (same shape), or None."""
    if got.dtype.kind not in "fc" or exp.dtype.kind not in "fc":
        perm = _permutation_match(got, exp, tol) if got.ndim >= 2 else None
        return perm
    loose = tol.looser(10)
    fin = np.isfinite(exp) & np.isfinite(got)
    scale = float(np.max(np.abs(exp[fin]))) if fin.any() else 0.0
    on = f" (case {label})"
    # all zeros
    if fin.any() and scale > 0 and np.all(got[fin] == 0):
        return ("your result is all zeros" + on + ": did you return a freshly made torch.zeros(...) "
                "without filling it in, or multiply by a zero mask?")
    # constant scale factor
    c = _fit_scale(got, exp)
    if c is not None and abs(c - 1) > 1e-3 and abs(c) > 1e-12:
        if close(np.where(fin, got, 0), np.where(fin, c * exp, 0), loose):
            reasons = _scale_reasons(c, info)
            text = f"your result is the expected one times a constant factor {fmt(c)}{on}"
            if reasons:
                text += ": " + "; ".join(reasons)
            else:
                text += ": a scale factor is wrong somewhere (a normalisation, a sum vs a mean?)"
            return text
    # transpose / permutation
    perm = _permutation_match(got, exp, tol)
    if perm:
        return perm + on
    # a known term missing, doubled, flipped, or alone
    if terms:
        usable = {name: t for name, t in terms.items() if t is not None and t.shape == exp.shape}
        usable = {name: t for name, t in usable.items()
                  if np.any(np.abs(t[np.isfinite(t)]) > tol.atol_frac * scale + tol.floor)}
        checks = [(lambda t: exp - t, "your result is missing the {}: the difference from the "
                                      "expected answer is exactly that term"),
                  (lambda t: exp + t, "the {} is counted twice"),
                  (lambda t: exp - 2 * t, "the {} has the wrong sign"),
                  (lambda t: t, "your result is only the {}; the other terms are missing")]
        for make, message in checks:          # "missing X" before "only Y" (the same with two terms)
            for name, t in usable.items():
                if close(got, make(t), loose):
                    return message.format(name.replace("_", " ")) + on
        for (n1, t1), (n2, t2) in itertools.combinations(usable.items(), 2):
            if close(got, exp - t1 - t2, loose):
                return (f"your result is missing both the {n1.replace('_', ' ')} and the "
                        f"{n2.replace('_', ' ')}" + on)
    # per-row / per-column / overall constant
    if fin.any() and exp.ndim >= 1 and np.array_equal(np.isfinite(got), np.isfinite(exp)):
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.where(fin, got - exp, np.nan)
        tol_abs = loose.atol_frac * scale + loose.floor
        rows = _constant_along(d, -1, tol_abs)
        if rows is not None:
            flat = np.ravel(rows)
            if np.max(np.abs(flat - flat.mean())) <= tol_abs:
                return (f"your result differs from the expected one by the same constant "
                        f"{fmt(flat.mean())} everywhere{on}: an added or subtracted constant "
                        "(a bias, a max or mean subtracted?)")
            first = tuple(np.argwhere(np.abs(rows) > tol_abs)[0]) if np.any(np.abs(rows) > tol_abs) else (0,)
            return (f"your result differs from the expected one by a different constant in each "
                    f"row (along the last axis), e.g. {fmt(rows[first])} in row {fmt_index(first)}"
                    f"{on}. A softmax would not notice, but these values must match: did you "
                    "subtract each row's max or mean, or add a per-row term?")
        if exp.ndim >= 2:
            cols = _constant_along(d, -2, tol_abs)
            if cols is not None:
                return (f"your result differs from the expected one by a constant in each column "
                        f"(along axis {exp.ndim - 2}){on}: a per-column offset, e.g. a term that "
                        "depends only on the key position / last index?")
    # only the diagonal
    diff = compare_arrays(got, exp, tol)
    if diff.bad is not None and _only_diagonal(diff.bad):
        n = exp.shape[-1]
        eye = np.eye(n, dtype=bool)
        g_diag = got[..., eye]
        e_diag = exp[..., eye]
        small = tol.atol_frac * scale + tol.floor
        if np.all(np.abs(g_diag[np.isfinite(g_diag)]) <= small):
            return ("your result is missing the diagonal: it is 0 where each position meets itself, "
                    "but the expected values there are not" + on + ". Did you exclude the current "
                    "position (a mask or triu/tril with the wrong diagonal= argument)?")
        if np.all(np.abs(e_diag[np.isfinite(e_diag)]) <= small):
            return ("your result has an extra diagonal: the expected values are 0 where each "
                    "position meets itself, yours are not" + on + ". Did you include the current "
                    "position where it should be left out?")
        return ("your result differs from the expected one only on the diagonal (each position "
                "with itself)" + on)
    return None


def generic_message(problem: Problem, label: str) -> str:
    diff = problem.diff
    got, exp = problem.got, problem.exp
    if diff is None or got is None or exp is None or diff.worst is None:
        return problem.message or f"wrong values on case {label}"
    idx = diff.worst
    if exp.dtype.kind in "biu" and got.dtype.kind in "biu":
        return (f"{diff.count} of {exp.size} entries differ on case {label}; first at index "
                f"{fmt_index(idx)}: expected {fmt(exp[idx])}, got {fmt(got[idx])}")
    where = f" at index {fmt_index(idx)}" if exp.ndim else ""
    return (f"max abs error {fmt(diff.max_err)}{where} on case {label} (expected {fmt(exp[idx])}, "
            f"got {fmt(got[idx])}, allowed {diff.allowed:.2g}); {diff.count} of {exp.size} "
            "entries are off")




# --------------------------------------------------------------------------- one exercise
@dataclass
class CaseData:
    """What the grader knows about one case, parent side."""
    label: str
    info: dict
    expected: Any                  # normalized reference output
    tol: Tolerance
    case: Any = None               # the spec's Case object (for terms / compare / mistakes)


def _error_feedback(err: dict, label: str, others: int, memory_mb: int) -> str:
    if err.get("exit"):
        return (f"your code called sys.exit() (or raised SystemExit) on case {label}: return a "
                "value instead of exiting")
    if err.get("memory"):
        return (f"your code ran out of memory on case {label} (the sandbox allows about "
                f"{memory_mb} MB): avoid building huge intermediate tensors")
    text = f"raised {err.get('etype', 'an exception')} on case {label}"
    if others:
        text += f" (and on {others} other case{'s' if others > 1 else ''})"
    tb = err.get("traceback", "")
    message = err.get("message", "")
    if tb:
        text += ":\n" + tb.rstrip() + "\n" + message
    else:
        text += f": {message}"
        if err.get("etype") == "TypeError" and "argument" in message:
            text += "\n(check your function's signature: the grader calls it with the exercise's arguments)"
    return text


def _same_output(got, out, data: CaseData, kind: str, exercise, to_torch) -> bool:
    """Does a learner's output equal a known wrong variant's output on this case?"""
    if out is None or isinstance(out, Raised) or check_output(
            kind, got, out, data.tol, data.info, custom=exercise.compare is not None) is not None:
        return False
    if exercise.compare is None:
        return True
    try:
        return not exercise.compare(to_torch(got), to_torch(out), data.case)
    except Exception:  # noqa: BLE001
        return False


def _same_run(run: CaseRun, out, data: CaseData, kind: str, exercise, to_torch) -> bool:
    if isinstance(out, Raised):
        message = run.error.get("message", "")[:RAISED_MESSAGE_CHARS]
        return run.status == "error" and run.error.get("etype") == out.etype and message == out.message
    return run.status == "ok" and _same_output(run.value, out, data, kind, exercise, to_torch)


def assess(exercise, cases: list[CaseData], run: ExerciseRun,
           mistake_outputs: Callable[[], list[tuple[Any, list[Any]]]],
           terms_for: Callable[[int], Optional[dict[str, np.ndarray]]],
           to_torch: Callable[[Any], Any],
           memory_mb: int = 4096) -> tuple[bool, str]:
    """Decide pass/fail for one exercise and write the feedback."""
    name = exercise.name
    kind = exercise.output
    if run.status == "missing":
        return False, (f"missing function `{name}`: your file does not define it. Define it at the "
                       f"top level (def {name}(...):) and check the spelling")
    if run.status == "not_callable":
        return False, f"`{name}` is a {run.detail.get('type', 'value')}, not a function"
    if run.status == "timeout":
        return False, (f"{run.message}: an infinite loop, or much slower than needed (Python loops "
                       "over every element instead of tensor operations?). The other exercises "
                       "were still graded")
    if run.status in ("died", "load_failed", "grader_error"):
        return False, run.message or run.status
    outs = run.cases
    if len(outs) != len(cases):          # the protocol guarantees one entry per case
        return False, f"grader error: {len(outs)} results for {len(cases)} cases"
    # 1. exceptions
    for case_run in outs:
        if case_run.status == "error" and case_run.error.get("not_implemented"):
            return False, "not implemented yet"
    errors = [(i, c) for i, c in enumerate(outs) if c.status != "ok"]
    if errors and exercise.mistakes and len(outs) == len(cases):
        for mistake, outputs in mistake_outputs():   # a known mistake that raises (a shape error...)
            if len(outputs) == len(outs) and any(isinstance(o, Raised) for o in outputs) and all(
                    _same_run(c, o, data, kind, exercise, to_torch)
                    for c, o, data in zip(outs, outputs, cases)):
                return False, mistake.message
    if errors:
        i, case_run = errors[0]
        if case_run.status == "grader_error":
            return False, f"grader error on case {cases[i].label}: {case_run.error.get('message', '')}"
        return False, _error_feedback(case_run.error, cases[i].label, len(errors) - 1, memory_mb)
    gots = [c.value for c in outs]
    # 2. types
    for i, got in enumerate(gots):
        problem = _type_problem(got, kind)
        if problem:
            return False, problem + (f" (case {cases[i].label})" if len(cases) > 1 else "")
        if kind == "tuple":
            tp = check_output(kind, got, cases[i].expected, cases[i].tol, cases[i].info, custom=True)
            if tp and tp.stage == "type":
                return False, tp.message + f" (case {cases[i].label})"
    # per-case checks
    problems: list[Optional[Problem]] = []
    for got, data in zip(gots, cases):
        problem = check_output(kind, got, data.expected, data.tol, data.info,
                               custom=exercise.compare is not None)
        if problem is None and exercise.compare is not None:
            try:
                message = exercise.compare(to_torch(got), to_torch(data.expected), data.case)
            except Exception as exc:  # noqa: BLE001 - the spec's compare failed on this output
                message = f"could not be compared ({type(exc).__name__}: {exc})"
            if message:
                problem = Problem("values", str(message))
        problems.append(problem)
    mutated = sorted({i for c in outs for i in c.mutated})
    note = ""
    if mutated:
        which = ", ".join(f"#{i + 1}" for i in mutated)
        note = (f"\nnote: your function changed its input tensor{'s' if len(mutated) > 1 else ''} "
                f"{which} in place (e.g. x += ..., x.masked_fill_(...)); work on a copy instead")
    if all(p is None for p in problems):
        return True, note.strip()
    # 3. the catalogue of known mistakes
    def same(got, out, data: CaseData) -> bool:
        return _same_output(got, out, data, kind, exercise, to_torch)

    if exercise.mistakes:
        for mistake, outputs in mistake_outputs():
            if len(outputs) == len(gots) and all(
                    same(got, out, data) for got, out, data in zip(gots, outputs, cases)):
                return False, mistake.message + note
    def where(problem: Problem, data: CaseData) -> tuple[str, str]:
        pre = f"item {problem.item} of the returned tuple: " if problem.item is not None else ""
        post = f" (case {data.label})" if len(cases) > 1 else ""
        return pre, post

    # 4. structural
    for problem, data in zip(problems, cases):
        if problem is not None and problem.stage in ("type", "structure"):
            pre, post = where(problem, data)
            return False, pre + problem.message + post + note
    # 5. relational
    failing = [(i, p) for i, p in enumerate(problems) if p is not None]
    for i, problem in failing:
        if problem.message or problem.got is None or problem.exp is None \
                or problem.got.shape != problem.exp.shape:
            continue
        terms = terms_for(i) if problem.item is None else None
        text = relational(problem.got, problem.exp, cases[i].tol, cases[i].info, terms, cases[i].label)
        if text:
            pre, _ = where(problem, cases[i])
            return False, pre + text + note
    # 6. the largest error
    i, problem = failing[0]
    pre, post = where(problem, cases[i])
    if problem.message:
        text = pre + problem.message + post
    else:
        text = pre + generic_message(problem, cases[i].label)
    if len(failing) < len(cases):
        text += f" ({len(failing)} of {len(cases)} cases fail)"
    return False, text + note
