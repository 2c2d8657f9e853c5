"""What travels between the grader and its child process, and how the parent reads it.

The parent owns the protocol. Each exercise returns, per case, what its reference returns
(:class:`~mechinterp_edu.grader.spec.Exercise` may override the dtype or the largest item
count): the expected values, computed in the parent, are also the bounds on what the child
may send back. The child's messages are uncompressed ``.npz`` files whose ``__meta__``
member is JSON; :class:`Message` checks every member's zip entry and ``.npy`` header (type,
shape, element count) *before* reading its data, so nothing the child sends can make the
parent allocate more than a small multiple of the expected answer. Anything off is a
:class:`ProtocolError`, which costs only that exercise.

Decoded values are plain numpy arrays and Python numbers wrapped in four small records
(:class:`ArrayOut`, :class:`NumberOut`, :class:`TupleOut`, :class:`RowsOut`) plus
:class:`OtherOut` for a value of the wrong type; the comparison code only ever sees these.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

MAX_META_BYTES = 2**20         # the JSON part of one message
MAX_MEMBERS = 4096
SLACK_ELEMENTS = 4096          # a wrong answer may be somewhat larger than the right one
GROWTH = 4                     # ... up to this many times the expected size


class ProtocolError(Exception):
    """What the child sent does not have the agreed form."""


# --------------------------------------------------------------------------- decoded values
@dataclass
class ArrayOut:
    """A returned tensor: its numbers (float64 / int64 / bool / complex128) and what it was."""
    values: Optional[np.ndarray]
    dtype: str
    device: str
    shape: tuple
    no_values: str = ""


@dataclass
class NumberOut:
    value: Any          # float, int or bool
    type: str


@dataclass
class TupleOut:
    items: list
    container: str
    length: int


@dataclass
class RowsOut:
    rows: list          # list of tuples of ints
    container: str


@dataclass
class OtherOut:
    """A value of the wrong type (``bad_items``: a collection whose items are wrong)."""
    type: str
    repr: str
    values: Optional[np.ndarray] = None
    tensor_subclass: bool = False
    shape: Optional[tuple] = None
    bad_items: str = ""


@dataclass
class Raised:
    """A known wrong variant that raises on a case (e.g. a shape error): a learner whose code
    raises the same exception there made that mistake."""
    etype: str
    message: str


RAISED_MESSAGE_CHARS = 200         # how much of an exception's text a "raises" mistake must match


def exception_text(exc: BaseException) -> str:
    """The one-line description of an exception, as the child reports a learner's, cut to the
    length a mistake that raises is compared on."""
    from mechinterp_edu.grader._learner_io import exception_text as full_text

    return full_text(exc)[:RAISED_MESSAGE_CHARS]


@dataclass
class CaseRun:
    status: str                        # "ok" | "error" | "skipped" | "grader_error"
    value: Any = None
    error: dict = field(default_factory=dict)
    mutated: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ExerciseRun:
    status: str                        # "ran" | "missing" | "not_callable" | "timeout" | "died"
                                       # | "load_failed" | "grader_error"
    cases: list[CaseRun] = field(default_factory=list)
    message: str = ""
    detail: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- bounds
def element_bound(expected) -> int:
    """The most elements a returned array may have for this expected value."""
    if isinstance(expected, ArrayOut):
        n = int(np.prod(expected.shape)) if expected.shape else 1
    elif isinstance(expected, RowsOut):
        n = len(expected.rows) * max(1, len(expected.rows[0]) if expected.rows else 1)
    elif isinstance(expected, TupleOut):
        n = max([element_bound(i) for i in expected.items] or [1])
    else:
        n = 1
    return GROWTH * n + SLACK_ELEMENTS


def byte_bound(expected_cases: list) -> int:
    """The largest message one exercise's results may be (every case at its bound)."""
    per_case = []
    for exp in expected_cases:
        items = exp.items if isinstance(exp, TupleOut) else [exp]
        per_case.append(sum(element_bound(i) * 16 + 4096 for i in items) + 2 * element_bound(exp) * 8)
    return sum(per_case) + MAX_META_BYTES + 65536


# --------------------------------------------------------------------------- reading a message
def _check_directory(blob: bytes) -> None:
    """Bound the zip's central directory before ``zipfile`` parses it (it builds one object
    per entry): at most MAX_MEMBERS entries in a directory of bounded size, and no zip64 end
    record (a message never needs one)."""
    tail = blob[-(65535 + 22):]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise ProtocolError("not a valid npz file (no end of central directory)")
    entries = int.from_bytes(tail[at + 10:at + 12], "little")
    size = int.from_bytes(tail[at + 12:at + 16], "little")
    if entries > MAX_MEMBERS or size > MAX_MEMBERS * 1024:
        raise ProtocolError(f"a directory of {entries} members in {size:,} bytes (at most {MAX_MEMBERS})")
    if b"PK\x06\x07" in tail[max(0, at - 20):at] or (len(blob) > len(tail) and at < 20):
        raise ProtocolError("a zip64 directory (not needed for a result)")


class Message:
    """A child's ``.npz`` message: zip entries and array headers checked before data is read."""

    def __init__(self, blob: bytes):
        _check_directory(blob)
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(blob))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise ProtocolError(f"not a valid npz file ({exc})") from None
        if len(infos) > MAX_MEMBERS:
            raise ProtocolError(f"{len(infos)} members (at most {MAX_MEMBERS})")
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise ProtocolError(f"member {info.filename!r} is compressed")
            if info.header_offset + info.compress_size > len(blob) or not info.filename.endswith(".npy"):
                raise ProtocolError(f"member {info.filename!r} is malformed")
            self.members[info.filename[:-4]] = info

    def header(self, key: str):
        """(shape, fortran_order, dtype, stream) of one array, the stream at its data."""
        info = self.members.get(key)
        if info is None:
            raise ProtocolError(f"missing array {key!r}")
        try:
            stream = self.zip.open(info)
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"npy version {version}")
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader(stream, max_header_size=10000)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ProtocolError(f"array {key!r} has a bad header ({exc})") from None
        if dtype.hasobject or dtype.kind not in "biufc" or dtype.itemsize > 16 or dtype.fields:
            raise ProtocolError(f"array {key!r} has dtype {dtype} (plain numbers only)")
        if len(shape) > 16 or any(type(s) is not int or s < 0 for s in shape):
            raise ProtocolError(f"array {key!r} has a bad shape")
        if int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
            raise ProtocolError(f"array {key!r} claims more data than it holds")
        return tuple(shape), fortran, dtype, stream

    def array(self, key: str, max_elements: int):
        """(array or None, shape, dtype): None when it has more than ``max_elements`` elements."""
        shape, fortran, dtype, stream = self.header(key)
        n = int(np.prod(shape, dtype=object))
        if n > max_elements:
            return None, shape, dtype
        data = stream.read(n * dtype.itemsize)
        if len(data) != n * dtype.itemsize:
            raise ProtocolError(f"array {key!r} is truncated")
        values = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
        return values, shape, dtype

    def meta(self):
        shape, _, dtype, stream = self.header("__meta__")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
            raise ProtocolError("the description is missing or too large")
        try:
            return json.loads(stream.read(shape[0]).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ProtocolError(f"the description is not valid JSON ({type(exc).__name__})") from None


class Trusted:
    """The same interface over a dict of arrays (reference and mistake outputs, in-process)."""

    def __init__(self, arrays: dict):
        self.arrays = arrays

    def array(self, key: str, max_elements: int):
        if key not in self.arrays:
            raise ProtocolError(f"missing array {key!r}")
        a = np.asarray(self.arrays[key])
        return a, a.shape, a.dtype


# --------------------------------------------------------------------------- normalizing
def _text(meta, key, default="") -> str:
    value = meta.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be text")
    return value[:2000]


def _widen(array: np.ndarray) -> np.ndarray:
    kind = array.dtype.kind
    target = {"f": np.float64, "c": np.complex128, "i": np.int64, "u": np.int64, "b": bool}[kind]
    return array.astype(target)


def _sent_dtype(claimed: str) -> str:
    """The numpy dtype a tensor of torch dtype ``claimed`` travels as (see _child._encode_tensor)."""
    if claimed.startswith("complex"):
        return "complex128"
    if claimed.startswith(("float8", "float16", "bfloat16", "half")):
        return "float32"
    return claimed


def normalize_output(meta, reader, expected=None, depth: int = 0):
    """Validate one output description against what the exercise returns; read its arrays."""
    if depth > 1 or not isinstance(meta, dict):
        raise ProtocolError("output description is not an object")
    bound = element_bound(expected) if expected is not None else 2**62
    kind = meta.get("k")
    if kind == "tensor":
        dtype, device = _text(meta, "dtype"), _text(meta, "device")
        shape = meta.get("shape")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise ProtocolError("shape must be a list of non-negative ints")
        if _text(meta, "no_values"):
            return ArrayOut(None, dtype, device, tuple(shape), _text(meta, "no_values"))
        values, got_shape, got_dtype = reader.array(_text(meta, "key"), bound)
        if tuple(got_shape) != tuple(shape) or got_dtype.name != _sent_dtype(dtype):
            raise ProtocolError("an array does not match its description")
        if values is None:
            return ArrayOut(None, dtype, device, tuple(shape),
                            f"it has {int(np.prod(shape)):,} elements, far more than expected")
        return ArrayOut(_widen(values), dtype, device, tuple(shape))
    if kind == "number":
        value = meta.get("v")
        if type(value) not in (int, float, bool) or (type(value) is int and abs(value) > 2**63):
            raise ProtocolError("number is not a number")
        return NumberOut(value, _text(meta, "type"))
    if kind == "tuple":
        items, length = meta.get("items"), meta.get("len")
        if not isinstance(items, list) or type(length) is not int or len(items) != min(length, 64):
            raise ProtocolError("tuple description is malformed")
        exp_items = expected.items if isinstance(expected, TupleOut) else []
        return TupleOut([normalize_output(m, reader, exp_items[i] if i < len(exp_items) else expected,
                                          depth + 1) for i, m in enumerate(items)],
                        _text(meta, "container"), length)
    if kind == "rows":
        values, shape, dtype = reader.array(_text(meta, "key"), bound)
        if len(shape) != 2 or dtype.kind not in "iu" or shape[1] > 64:
            raise ProtocolError("rows must be a 2-D integer array")
        if values is None:
            return OtherOut(_text(meta, "container"), f"a collection of {shape[0]:,} items, far "
                            "more than expected")
        return RowsOut([tuple(int(v) for v in row) for row in values.tolist()], _text(meta, "container"))
    if kind == "bad_items":
        return OtherOut(_text(meta, "container"), _text(meta, "item_repr"),
                        bad_items=_text(meta, "item_type"))
    if kind == "other":
        values = shape = None
        key = meta.get("values_key")
        if isinstance(key, str):
            values, shape, _ = reader.array(key, bound)
            values = None if values is None else _widen(values).astype(np.float64)
        return OtherOut(_text(meta, "type"), _text(meta, "repr"), values,
                        bool(meta.get("tensor_subclass", False)),
                        tuple(shape) if shape is not None else None)
    raise ProtocolError(f"unknown output kind {kind!r}")


def error_info(entry) -> dict:
    info = {}
    for key in ("etype", "message", "traceback", "code", "filename", "source"):
        if isinstance(entry.get(key), str):
            info[key] = entry[key][:4000]
    for key in ("not_implemented", "exit", "memory"):
        info[key] = bool(entry.get(key, False))
    for key in ("lineno", "learner_frames"):
        if type(entry.get(key)) is int:
            info[key] = entry[key]
    return info


def normalize_cases(payload, reader, expected: list) -> ExerciseRun:
    """One exercise's results: exactly one entry per case, each checked against its bound."""
    if not isinstance(payload, dict):
        raise ProtocolError("result is not an object")
    if payload.get("missing") is True:
        return ExerciseRun("missing")
    if isinstance(payload.get("not_callable"), str):
        return ExerciseRun("not_callable", detail={"type": payload["not_callable"][:200]})
    entries = payload.get("cases")
    if not isinstance(entries, list) or len(entries) != len(expected):
        raise ProtocolError(f"expected results for {len(expected)} cases, got "
                            f"{len(entries) if isinstance(entries, list) else 'none'}")
    cases = []
    for entry, exp in zip(entries, expected):
        if not isinstance(entry, dict):
            raise ProtocolError("case entry is not an object")
        status = entry.get("status")
        mutated = entry.get("mutated", [])
        if not isinstance(mutated, list) or len(mutated) > 64 or \
                not all(type(v) is int and 0 <= v < 64 for v in mutated):
            raise ProtocolError("mutated must be a short list of argument numbers")
        seconds = entry.get("seconds", 0.0)
        seconds = float(seconds) if type(seconds) in (int, float) else 0.0
        if status == "ok":
            cases.append(CaseRun("ok", normalize_output(entry.get("out"), reader, exp),
                                 mutated=mutated, seconds=seconds))
        elif status == "error":
            cases.append(CaseRun("error", error=error_info(entry), mutated=mutated, seconds=seconds))
        elif status == "skipped":
            if not cases or not (cases[-1].status == "skipped" or cases[-1].error.get("not_implemented")
                                 or cases[-1].error.get("memory")):
                raise ProtocolError("a case was skipped without a reason")
            cases.append(CaseRun("skipped"))
        elif status == "grader_error":
            cases.append(CaseRun("grader_error", error={"message": _text(entry, "message")}))
        else:
            raise ProtocolError(f"unknown case status {status!r}")
    return ExerciseRun("ran", cases)


def load_errors(payload) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("errors"), list):
        raise ProtocolError("the module report is malformed")
    return [error_info(e) for e in payload["errors"][:50] if isinstance(e, dict)]


# --------------------------------------------------------------------------- arguments
def encode_args(args, prefix: str, arrays: dict) -> list:
    """Describe a case's arguments as JSON, putting arrays into ``arrays`` (parent side)."""
    import torch

    counter = [0]

    def enc(value):
        if isinstance(value, torch.Tensor):
            key = f"{prefix}_{counter[0]}"
            counter[0] += 1
            tensor = value.detach().to("cpu")
            spec = {"k": "tensor", "key": key, "dtype": str(tensor.dtype).replace("torch.", "")}
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            arrays[key] = tensor.contiguous().numpy().copy()
            return spec
        if isinstance(value, np.ndarray):
            key = f"{prefix}_{counter[0]}"
            counter[0] += 1
            arrays[key] = np.array(value, copy=True)
            return {"k": "ndarray", "key": key}
        if value is None or type(value) in (bool, int, float, str):
            return {"k": "py", "v": value}
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return {"k": "py", "v": value.item()}
        if isinstance(value, list):
            return {"k": "list", "items": [enc(v) for v in value]}
        if isinstance(value, tuple):
            return {"k": "tuple", "items": [enc(v) for v in value]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"k": "dict", "items": {k: enc(v) for k, v in value.items()}}
        raise TypeError(f"a case argument of type {type(value).__name__} cannot be sent to the "
                        "sandbox (use tensors, arrays, numbers, strings, lists, tuples or dicts)")

    return [enc(a) for a in args]
