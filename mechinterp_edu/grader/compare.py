"""Comparing a learner's outputs with the reference, and explaining the difference.

All inputs here are normalized values from :mod:`mechinterp_edu.grader.sandbox`
(:class:`ArrayOut` with float64 / int64 / bool numpy arrays, :class:`NumberOut`, ...),
never objects of the learner's.

Order of diagnosis (:func:`assess`):

1. structural, per case: missing function, "not implemented yet", an exception (with the
   learner's own traceback lines), wrong return type;
2. the lesson's catalogue of known mistakes: a submission that matches a wrong variant on
   every case gets that mistake's message;
3. structural again: device, shape (which axis), dtype, NaN / inf;
4. relational, against the reference on the same case: a constant scale factor (named:
   ``1/sqrt(d_head)`` ...), a transpose or axis permutation, a difference equal to one
   known term (``Exercise.terms``), a per-row / per-column constant, a difference only on
   the diagonal, a wrong causal mask;
5. otherwise the largest error, where, and on which case.

Tolerance: ``|got - expected| <= atol_frac * max|expected| + rtol * |expected|`` (looser
for float32 / half precision), so float64, float32, einsum vs matmul and a different
order of operations all pass.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from mechinterp_edu.grader.protocol import (ArrayOut, CaseRun, ExerciseRun, NumberOut, OtherOut,
                                            Raised, RowsOut, TupleOut)

_PRECISION = {"float64": 0, "complex128": 0, "float32": 1, "complex64": 1, "float16": 2,
              "bfloat16": 2}
_FLOAT_DTYPES = set(_PRECISION)
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol_frac: float
    floor: float

    def looser(self, factor: float) -> "Tolerance":
        return Tolerance(self.rtol * factor, self.atol_frac * factor, self.floor * factor)


def tolerance_for(rtol: float, atol_frac: float, dtypes) -> Tolerance:
    """Tolerance for a case whose float inputs/outputs have ``dtypes`` (names like "float32")."""
    level = max([_PRECISION.get(str(d).replace("torch.", ""), 0) for d in dtypes] or [0])
    if level == 0:
        return Tolerance(rtol, atol_frac, 1e-12)
    if level == 1:
        return Tolerance(max(rtol, 1e-3), max(atol_frac, 1e-4), 1e-6)
    return Tolerance(max(rtol, 2e-2), max(atol_frac, 1e-2), 1e-3)


# --------------------------------------------------------------------------- formatting helpers
def fmt(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def fmt_index(index) -> str:
    index = tuple(int(i) for i in index)
    return "(" + ", ".join(map(str, index)) + ("," if len(index) == 1 else "") + ")"


def fmt_shape(shape) -> str:
    return fmt_index(shape)


def size_names(n: int, info: dict) -> list[str]:
    return [k for k, v in info.items() if type(v) is int and v == n and k not in ("seed",)]


def _axis_label(axis: int, ndim: int, axes) -> str:
    if axes and len(axes) == ndim:
        return f"axis {axis} ({axes[axis]})"
    return f"axis {axis}"


# --------------------------------------------------------------------------- array comparison
@dataclass
class ArrayDiff:
    ok: bool
    bad: Optional[np.ndarray] = None     # bool mask of out-of-tolerance positions
    max_err: float = 0.0
    worst: Optional[tuple] = None
    allowed: float = 0.0
    count: int = 0


def _mask_ok(got, exp, scale):
    """Non-finite expected values (e.g. -inf for masked scores) must be matched: the same
    value, or a very large number of the same sign (-1e9 as a mask is fine)."""
    big = max(1e4, 100.0 * scale)      # -1e5 (TransformerLens) or -1e9 both count as masked
    same = (got == exp) | (np.isnan(got) & np.isnan(exp))
    neg = (exp == -np.inf) & (got <= -big)
    pos = (exp == np.inf) & (got >= big)
    return same | neg | pos


def compare_arrays(got: np.ndarray, exp: np.ndarray, tol: Tolerance) -> ArrayDiff:
    """Elementwise closeness of two same-shape arrays (float, int or bool)."""
    if got.shape != exp.shape:
        return ArrayDiff(False)
    if got.size == 0:
        return ArrayDiff(True)
    if exp.dtype.kind in "biu" and got.dtype.kind in "biu":
        bad = got.astype(np.int64) != exp.astype(np.int64)
        count = int(bad.sum())
        worst = tuple(np.argwhere(bad)[0]) if count else None
        return ArrayDiff(count == 0, bad, float(count), worst, 0.0, count)
    got = got.astype(np.complex128 if np.iscomplexobj(got) or np.iscomplexobj(exp) else np.float64)
    exp = exp.astype(got.dtype)
    fin_e = np.isfinite(exp)
    scale = float(np.max(np.abs(exp[fin_e]))) if fin_e.any() else 0.0
    atol = tol.atol_frac * scale + tol.floor
    bad = np.zeros(exp.shape, dtype=bool)
    both = fin_e & np.isfinite(got)
    err = np.zeros(exp.shape, dtype=np.float64)
    err[both] = np.abs(got[both] - exp[both])
    allowed = atol + tol.rtol * np.abs(np.where(fin_e, exp, 0))
    bad[both] = err[both] > allowed[both]
    bad[fin_e & ~np.isfinite(got)] = True
    bad[~fin_e] = ~_mask_ok(got[~fin_e], exp[~fin_e], scale)
    count = int(bad.sum())
    if not count:
        return ArrayDiff(True, bad, float(err.max()) if err.size else 0.0, None, atol, 0)
    ratio = np.where(bad, np.where(both, err / np.maximum(allowed, 1e-300), np.inf), -1.0)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), exp.shape))
    max_err = float(err[both & bad].max()) if (both & bad).any() else float("inf")
    return ArrayDiff(False, bad, max_err, worst, float(allowed[worst]), count)


def close(got: np.ndarray, exp: np.ndarray, tol: Tolerance) -> bool:
    return got.shape == exp.shape and compare_arrays(got, exp, tol).ok


# --------------------------------------------------------------------------- per-case checks
@dataclass
class Problem:
    stage: str               # "type" | "structure" | "values"
    message: str
    got: Optional[np.ndarray] = None
    exp: Optional[np.ndarray] = None
    diff: Optional[ArrayDiff] = None
    item: Optional[int] = None      # tuple item index, when the output is a tuple


def _type_problem(got, expected_kind: str) -> Optional[str]:
    want = {"tensor": "a torch.Tensor", "float": "a single number (a Python float)",
            "tuple": "a tuple", "set": "a set of tuples of ints",
            "list": "a list of tuples of ints"}[expected_kind]
    if isinstance(got, OtherOut) and got.bad_items:
        return (f"returned a {got.type} whose items are {got.bad_items} (e.g. {got.repr}): "
                f"expected {want}")
    if isinstance(got, OtherOut):
        if got.type == "NoneType":
            return f"returned None: expected {want}. Did you forget the `return` statement?"
        if got.tensor_subclass:
            return (f"returned an object of type {got.type}, a subclass of torch.Tensor: return a "
                    "plain torch.Tensor (subclasses are not accepted by the grader)")
        if got.type == "numpy.ndarray" and expected_kind == "tensor":
            return ("returned a numpy.ndarray: expected a torch.Tensor on the inputs' device. Keep "
                    "the computation in torch (or convert with torch.as_tensor(..., device=x.device))")
        if got.type in ("list", "tuple") and expected_kind == "tensor":
            return (f"returned a Python {got.type}: expected a torch.Tensor. Build the result with "
                    "torch operations (or torch.stack / torch.tensor) instead of a Python list")
        if got.type == "torch.Tensor" and expected_kind == "float":
            return (f"returned {got.repr}: expected a single number. Use .item() on a 0-d tensor, "
                    "or check which axes you reduce over")
        return f"returned {got.type} ({got.repr}): expected {want}"
    ok = {"tensor": ArrayOut, "float": NumberOut, "tuple": TupleOut, "set": RowsOut,
          "list": RowsOut}[expected_kind]
    if not isinstance(got, ok):
        return f"returned the wrong kind of value: expected {want}"
    return None


def _shape_message(got_shape, exp_shape, info: dict) -> str:
    axes = info.get("axes")
    head = f"shape: expected {fmt_shape(exp_shape)}, got {fmt_shape(got_shape)}"

    def named(n):
        names = size_names(n, info)
        return f" ({' / '.join(names)} = {n})" if names else ""

    if len(got_shape) == len(exp_shape):
        parts = [f"{_axis_label(i, len(exp_shape), axes)} is {g} instead of {e}{named(e)}"
                 for i, (g, e) in enumerate(zip(got_shape, exp_shape)) if g != e]
        text = head + ": " + "; ".join(parts)
        if sorted(got_shape) == sorted(exp_shape):
            text += ". The sizes are all there but in another order: axes permuted or transposed?"
        return text
    if len(got_shape) == len(exp_shape) + 1:
        for i in range(len(got_shape)):
            if tuple(got_shape[:i]) + tuple(got_shape[i + 1:]) == tuple(exp_shape):
                return (f"{head}: an extra axis {i} of size {got_shape[i]}{named(got_shape[i])}. "
                        "Did you forget to sum (or select) over it, or add a dimension?")
    if len(got_shape) + 1 == len(exp_shape):
        for i in range(len(exp_shape)):
            if tuple(exp_shape[:i]) + tuple(exp_shape[i + 1:]) == tuple(got_shape):
                return (f"{head}: {_axis_label(i, len(exp_shape), axes)} of size {exp_shape[i]}"
                        f"{named(exp_shape[i])} is missing. Did you sum, squeeze or index it away?")
    text = f"{head}: {len(got_shape)} axes instead of {len(exp_shape)}"
    if int(np.prod(got_shape)) == int(np.prod(exp_shape)):
        text += " (the same number of elements: reshaped or flattened?)"
    return text


def _dtype_problem(got: ArrayOut, exp: ArrayOut) -> Optional[str]:
    g, e = got.dtype, exp.dtype
    if e in _FLOAT_DTYPES:
        if g in _INT_DTYPES or g == "bool":
            return (f"dtype: expected a floating-point tensor ({e}), got {g}. Something turned the "
                    "numbers into integers (argmax, .long(), integer division //, torch.tensor of ints?)")
        if g in ("float16", "bfloat16") and e not in ("float16", "bfloat16"):
            return (f"dtype: expected {e}, got {g}: half precision loses too much accuracy; "
                    "keep the inputs' dtype")
        if g.startswith("complex") and not e.startswith("complex"):
            return f"dtype: expected a real tensor ({e}), got {g}"
        if g != e:
            return (f"dtype: expected {e} (the dtype of the inputs), got {g}. Keep the inputs' dtype: "
                    "create new tensors with dtype=x.dtype, and do not call .float() or .double()")
        return None
    if e in _INT_DTYPES:
        if g in _INT_DTYPES:
            return None
        return (f"dtype: expected an integer tensor ({e}), got {g}. Indices and counts should be "
                "integers (use .long() or an integer-valued operation)")
    if e == "bool":
        if g == "bool":
            return None
        return f"dtype: expected a boolean tensor, got {g} (use a comparison such as x > 0)"
    return None


def _nan_problem(got: np.ndarray, exp: np.ndarray, info: dict) -> Optional[str]:
    if got.dtype.kind not in "fc":
        return None
    bad_nan = np.isnan(got) & ~np.isnan(exp)
    bad_inf = np.isinf(got) & np.isfinite(exp)
    for mask, what in ((bad_nan, "NaN"), (bad_inf, "inf")):
        n = int(mask.sum())
        if not n:
            continue
        first = fmt_index(np.argwhere(mask)[0])
        text = (f"your result contains {what} at {n} of {got.size} positions (first at index "
                f"{first}) where the expected values are finite")
        if what == "NaN":
            text += (": typical causes are a softmax over a row that is entirely -inf (a mask that "
                     "hides every position), 0/0, or inf - inf")
        else:
            diag = _only_diagonal(mask)
            if diag:
                text += (": you masked the diagonal too. Each position may attend to itself; "
                         "mask only the positions strictly above the diagonal (diagonal=1)")
            else:
                text += ": an overflow, a division by zero, or a mask applied where it should not be"
        return text
    return None


def _only_diagonal(mask: np.ndarray) -> bool:
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2] or not mask.any():
        return False
    eye = np.eye(mask.shape[-1], dtype=bool)
    return not (mask & ~eye).any()


def _mask_problem(got: np.ndarray, exp: np.ndarray) -> Optional[str]:
    """Expected -inf (masked) where the learner has ordinary numbers, or the reverse."""
    if got.dtype.kind not in "fc" or exp.dtype.kind not in "fc":
        return None
    scale = float(np.max(np.abs(exp[np.isfinite(exp)]))) if np.isfinite(exp).any() else 0.0
    masked = ~np.isfinite(exp)
    wrong = masked & ~_mask_ok(got, exp, scale)
    n = int(wrong.sum())
    if not n:
        return None
    first = tuple(np.argwhere(wrong)[0])
    where = ""
    if got.ndim >= 2 and got.shape[-1] == got.shape[-2]:
        i, j = first[-2], first[-1]
        if j > i:
            where = " (above the diagonal: a later position)"
    return (f"expected {fmt(exp[first])} (masked) at {n} positions, yours has ordinary numbers "
            f"there, e.g. {fmt(got[first])} at index {fmt_index(first)}{where}. Did you apply the "
            "causal mask (positions may only look at themselves and earlier positions)?")


def check_array(got: ArrayOut, exp: ArrayOut, tol: Tolerance, info: dict,
                compare_values: bool = True) -> Optional[Problem]:
    if exp.values is None:
        return Problem("structure", "grader error: the reference result holds no values")
    gdev, edev = got.device.split(":")[0], exp.device.split(":")[0]
    if gdev != edev:
        return Problem("structure",
                       f"device: your result is on {got.device} but the inputs were on {exp.device}. "
                       "Create new tensors on the inputs' device (e.g. torch.zeros(..., "
                       "device=x.device)) rather than on the default device")
    if tuple(got.shape) != tuple(exp.shape):
        problem = Problem("structure", _shape_message(got.shape, exp.shape, info),
                          got.values, exp.values)
        perm = _permutation_match(got.values, exp.values, tol)
        if perm is not None:
            problem.message = (f"shape: expected {fmt_shape(exp.shape)}, got {fmt_shape(got.shape)}. "
                               + perm)
        return problem
    if got.no_values:
        return Problem("structure", f"the returned tensor cannot be graded: {got.no_values}")
    dtype = _dtype_problem(got, exp)
    if dtype:
        return Problem("structure", dtype)
    if not compare_values:
        return None
    nan = _nan_problem(got.values, exp.values, info)
    if nan:
        return Problem("structure", nan, got.values, exp.values)
    diff = compare_arrays(got.values, exp.values, tol)
    if diff.ok:
        return None
    mask = _mask_problem(got.values, exp.values)
    if mask:
        return Problem("values", mask, got.values, exp.values, diff)
    return Problem("values", "", got.values, exp.values, diff)


def check_number(got: NumberOut, exp: NumberOut, tol: Tolerance) -> Optional[Problem]:
    g, e = got.value, exp.value
    if type(e) is bool or type(g) is bool:
        if bool(g) != bool(e) or type(g) is not type(e):
            return Problem("values", f"expected {fmt(e)}, got {fmt(g)}")
        return None
    garr, earr = np.array([float(g)]), np.array([float(e)])
    if isinstance(e, int) and isinstance(g, float) and not float(g).is_integer():
        return Problem("values", f"expected the whole number {e}, got {fmt(g)}", garr, earr)
    if math.isnan(float(g)) and not math.isnan(float(e)):
        return Problem("structure", "your result is NaN (0/0, or a softmax over only -inf?)")
    diff = compare_arrays(garr, earr, tol)
    if diff.ok:
        return None
    return Problem("values", "", garr, earr, diff)


def check_rows(got: RowsOut, exp: RowsOut, ordered: bool) -> Optional[Problem]:
    if ordered:
        if got.rows == exp.rows:
            return None
        if sorted(got.rows) == sorted(exp.rows):
            first = next(i for i, (a, b) in enumerate(zip(got.rows, exp.rows)) if a != b)
            return Problem("values", f"the right items in the wrong order: position {first} holds "
                                     f"{got.rows[first]}, expected {exp.rows[first]}")
    got_set, exp_set = set(got.rows), set(exp.rows)
    if not ordered and got_set == exp_set:
        if len(got.rows) != len(set(got.rows)):
            return Problem("values", "the right items, but some appear more than once")
        return None
    missing = sorted(exp_set - got_set)
    extra = sorted(got_set - exp_set)
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the {len(exp_set)} expected items are missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} items should not be there, e.g. {extra[0]}")
    if not parts and ordered:
        if len(got.rows) != len(exp.rows):
            parts.append(f"expected {len(exp.rows)} items, got {len(got.rows)} (duplicates?)")
        else:
            first = next(i for i, (a, b) in enumerate(zip(got.rows, exp.rows)) if a != b)
            parts.append(f"position {first} holds {got.rows[first]}, expected {exp.rows[first]}")
    if got.rows and exp.rows and len(got.rows[0]) != len(exp.rows[0]):
        parts.append(f"items have {len(got.rows[0])} numbers each, expected {len(exp.rows[0])}")
    return Problem("values", "; ".join(parts))


def check_output(kind: str, got, exp, tol: Tolerance, info: dict,
                 custom: bool = False) -> Optional[Problem]:
    """One case: None if acceptable, else the first problem."""
    problem = _type_problem(got, kind)
    if problem:
        return Problem("type", problem)
    if kind == "tensor":
        return check_array(got, exp, tol, info, compare_values=not custom)
    if kind == "float":
        return None if custom else check_number(got, exp, tol)
    if kind in ("set", "list"):
        return None if custom else check_rows(got, exp, ordered=(kind == "list"))
    if kind == "tuple":
        if got.length != exp.length:
            return Problem("structure", f"returned a tuple of {got.length} items, expected {exp.length}")
        for i, (g, e) in enumerate(zip(got.items, exp.items)):
            sub = _check_item(g, e, tol, info, custom)
            if sub:
                sub.item = i
                return sub
        return None
    raise ValueError(f"unknown output kind {kind!r}")


def _check_item(got, exp, tol, info, custom) -> Optional[Problem]:
    if isinstance(exp, ArrayOut):
        if not isinstance(got, ArrayOut):
            return Problem("type", _describe_wrong_item(got, "a torch.Tensor"))
        return check_array(got, exp, tol, info, compare_values=not custom)
    if isinstance(exp, NumberOut):
        if not isinstance(got, NumberOut):
            return Problem("type", _describe_wrong_item(got, "a number"))
        return None if custom else check_number(got, exp, tol)
    return Problem("structure", "grader error: unexpected reference item")


def _describe_wrong_item(got, want) -> str:
    if isinstance(got, OtherOut):
        extra = " (a subclass of torch.Tensor)" if got.tensor_subclass else ""
        return f"expected {want}, got {got.type}{extra}"
    if isinstance(got, ArrayOut):
        return f"expected {want}, got a tensor of shape {fmt_shape(got.shape)}"
    if isinstance(got, NumberOut):
        return f"expected {want}, got the number {fmt(got.value)}"
    return f"expected {want}"


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


def _describe_perm(perm: tuple) -> str:
    n = len(perm)
    if n >= 2 and perm == tuple(range(n - 2)) + (n - 1, n - 2):
        return ("your result is the expected one with the last two axes swapped (a transpose): "
                "e.g. k @ q.T instead of q @ k.T, W.T where W was meant, or einsum output "
                "indices in the wrong order")
    moved = ", ".join(f"your axis {i} holds expected axis {p}" for i, p in enumerate(perm) if i != p)
    return (f"your result holds the expected values with the axes in another order ({moved}): "
            "check the output order of your einsum, or your .permute / .transpose")


def _permutation_match(got: Optional[np.ndarray], exp: Optional[np.ndarray],
                       tol: Tolerance) -> Optional[str]:
    if got is None or exp is None or exp.ndim < 2 or exp.ndim > 5 or got.ndim != exp.ndim:
        return None
    for perm in itertools.permutations(range(exp.ndim)):
        if perm == tuple(range(exp.ndim)):
            continue
        moved = np.transpose(exp, perm)
        if moved.shape == got.shape and close(got, moved, tol):
            return _describe_perm(perm)
    return None


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
        message = run.error.get("message", "")[:200]
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
    if len(outs) < len(cases):
        # the sandbox stops early only after "not implemented yet" or running out of memory
        last = outs[-1] if outs else None
        if last is None or last.status != "error" or not (
                last.error.get("not_implemented") or last.error.get("memory")):
            return False, (f"not graded: results came back for only {len(outs)} of {len(cases)} "
                           "cases (did your code interfere with the grader?)")
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
