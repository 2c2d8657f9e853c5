"""Comparing a learner's outputs with the reference, and explaining the difference.

All inputs here are values decoded and bounded by :mod:`mechinterp_edu.grader.protocol`
(:class:`ArrayOut` with float64 / int64 / bool numpy arrays, :class:`NumberOut`, ...),
never objects of the learner's.

Order of diagnosis (:func:`assess`):

1. structural, per case: missing function, "not implemented yet", an exception (with the
   learner's own traceback lines; first, a catalogue mistake that raises the same exception,
   such as a shape error, is named), wrong return type;
2. the lesson's catalogue of known mistakes: a submission that matches a wrong variant on
   every case gets that mistake's message;
3. structural again: device, shape (which axis), dtype (exactly the reference's, or the
   exercise's declared ``dtype``), NaN / inf;
4. relational, against the reference on the same case: a constant scale factor (named:
   ``1/sqrt(d_head)`` ...), a transpose or axis permutation, a difference equal to one
   known term (``Exercise.terms``), a per-row / per-column constant, a difference only on
   the diagonal, a wrong causal mask;
5. otherwise the largest error, where, and on which case.

Tolerance: ``|got - expected| <= atol_frac * max|expected| + rtol * |expected|`` (looser
for float32 / half precision), so float64 maths, einsum vs matmul and a different order of
operations all pass, as long as the result has the inputs' dtype.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mechinterp_edu.grader.protocol import ArrayOut, NumberOut, OtherOut, RowsOut, TupleOut

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
    if e.startswith("any "):             # Exercise.dtype == "any": the reference's kind is enough
        e = e[4:]
        if g == e or (g in _FLOAT_DTYPES and e in _FLOAT_DTYPES) or (g in _INT_DTYPES and e in _INT_DTYPES):
            return None
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


# --------------------------------------------------------------------------- axis permutations
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
