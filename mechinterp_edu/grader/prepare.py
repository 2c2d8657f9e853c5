"""The parent's side of each exercise: its cases, reference answers and known wrong variants.

For every case the reference is computed here, on the grading device, and encoded exactly
as a learner's result is (so both go through the same decoder); the reference outputs are
also the bounds of the result protocol (:mod:`.protocol`). Prepared exercises are cached
for the life of the process (the gradebook grades many students) and on disk
(:mod:`.cache`). Wrong variants that raise are recorded as :class:`~.protocol.Raised`, so a
learner's identical exception can be named.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from mechinterp_edu.grader.protocol import (ArrayOut, NumberOut, OtherOut, Raised, RowsOut,
                                            Trusted, TupleOut, encode_args, exception_text,
                                            normalize_output)


@dataclass
class _Prepared:
    exercise: Any
    device: str
    specs: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    data: list = field(default_factory=list)       # assess.CaseData per case
    error: str = ""
    from_disk: bool = False
    _cases: Optional[list] = None                  # the spec's Case objects (lazy after a disk hit)
    _mistakes: Optional[list] = None
    _terms: dict = field(default_factory=dict)

    def real_cases(self) -> Optional[list]:
        """The Case objects, for terms, mistakes and a spec's compare. After a disk-cache hit
        they are rebuilt from the cached inputs (same label, args and info), so the spec's
        slow case building (e.g. loading a trained model) is not repeated."""
        if self._cases is None:
            import numpy as np
            import torch

            from mechinterp_edu.grader import _learner_io as _child
            from mechinterp_edu.grader.spec import Case

            try:
                cases = []
                for spec, data in zip(self.specs, self.data, strict=True):
                    args = [_child.decode_arg(s, self.arrays, torch.device("cpu"), torch, np, [])
                            for s in spec]
                    cases.append(Case(data.label, tuple(args), dict(data.info)))
            except Exception:  # noqa: BLE001
                return None
            self._cases = cases
            for data, case in zip(self.data, cases):
                data.case = case
        return self._cases


_CACHE: "OrderedDict[tuple, _Prepared]" = OrderedDict()
_CACHE_SIZE = 64
_EXPECTED = "__expected_"


def _to_device(value, device):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone().to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _float_dtypes(value, out: list) -> list:
    import torch

    if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
        out.append(str(value.dtype).replace("torch.", ""))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _float_dtypes(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _float_dtypes(v, out)
    return out


def _encode_trusted(value, kind: str, key: str = "r") -> tuple[dict, dict]:
    """Encode a trusted (reference / mistake) output exactly as a learner's is encoded."""
    import numpy as np
    import torch

    from mechinterp_edu.grader import _learner_io as _child

    arrays: dict = {}
    meta = _child.encode_output(value, kind, key, arrays, torch, np)
    return meta, arrays


def _normalize_trusted(value, kind: str):
    meta, arrays = _encode_trusted(value, kind)
    return normalize_output(meta, Trusted(arrays))


def _output_dtypes(value) -> list:
    if isinstance(value, ArrayOut):
        return [value.dtype]
    if isinstance(value, TupleOut):
        return [d for item in value.items for d in _output_dtypes(item)]
    return []


def _declared(expected, exercise):
    """The reference output with the exercise's declared dtype (``Exercise.dtype``) applied."""
    declared = getattr(exercise, "dtype", None)
    if declared is None:
        return expected
    if isinstance(expected, ArrayOut):
        expected.dtype = f"any {expected.dtype}" if declared == "any" else declared
    elif isinstance(expected, TupleOut):
        for item in expected.items:
            _declared(item, exercise)
    return expected


def _from_disk(exercise, device: str, entry: dict) -> Optional[_Prepared]:
    from mechinterp_edu.grader.assess import CaseData
    from mechinterp_edu.grader.compare import tolerance_for

    try:
        arrays = entry["arrays"]
        prepared = _Prepared(exercise, device, from_disk=True)
        prepared.specs = entry["specs"]
        prepared.arrays = {k: v for k, v in arrays.items() if not k.startswith(_EXPECTED)}
        for label, info, meta, dtypes in zip(entry["labels"], entry["infos"], entry["expected"],
                                             entry["dtypes"], strict=True):
            expected = _declared(normalize_output(meta, Trusted(arrays)), exercise)
            tol = tolerance_for(exercise.rtol, exercise.atol_frac, dtypes)
            prepared.data.append(CaseData(str(label), dict(info), expected, tol, None))
        if len(prepared.specs) != len(prepared.data):
            return None
        return prepared
    except Exception:  # noqa: BLE001 - a damaged entry is a cache miss
        return None


def _prepare(exercise, device: str) -> _Prepared:
    key = (id(exercise), device)
    cached = _CACHE.get(key)
    if cached is not None and cached.exercise is exercise:
        _CACHE.move_to_end(key)
        return cached
    from mechinterp_edu.grader import cache
    from mechinterp_edu.grader.assess import CaseData
    from mechinterp_edu.grader.compare import tolerance_for

    disk = cache.entry_key(exercise, device)
    prepared = None
    if disk is not None:
        entry = cache.load(*disk)
        if entry is not None:
            prepared = _from_disk(exercise, device, entry)
    if prepared is None:
        prepared = _Prepared(exercise, device)
        try:
            cases = list(exercise.cases())
        except Exception as exc:  # noqa: BLE001 - a broken spec must not stop the other exercises
            prepared.error = (f"grader error: the cases of `{exercise.name}` could not be built "
                              f"({type(exc).__name__}: {exc})")
            return prepared
        metas, dtype_lists, expected_arrays = [], [], {}
        try:
            for j, case in enumerate(cases):
                prepared.specs.append(encode_args(case.args, f"{exercise.name}_{j}", prepared.arrays))
                meta, arrays = _encode_trusted(exercise.reference(*_to_device(case.args, device)),
                                               exercise.output, f"{_EXPECTED}{j}")
                expected = normalize_output(meta, Trusted(arrays))
                if isinstance(expected, OtherOut):
                    raise TypeError(f"the reference returned {expected.type} for a "
                                    f"{exercise.output!r} exercise")
                dtypes = _float_dtypes(case.args, []) + _output_dtypes(expected)
                expected = _declared(expected, exercise)
                tol = tolerance_for(exercise.rtol, exercise.atol_frac, dtypes)
                prepared.data.append(CaseData(case.label, dict(case.info), expected, tol, case))
                metas.append(meta)
                dtype_lists.append(dtypes)
                expected_arrays.update(arrays)
            prepared._cases = cases
        except Exception as exc:  # noqa: BLE001
            prepared.error = (f"grader error: the reference answer of `{exercise.name}` could not be "
                              f"computed ({type(exc).__name__}: {exc})")
            return prepared
        if disk is not None:
            cache.store(*disk, prepared.specs, [d.label for d in prepared.data],
                        [d.info for d in prepared.data], metas, dtype_lists,
                        {**prepared.arrays, **expected_arrays})
    _CACHE[key] = prepared
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prepared


def _mistake_outputs(prepared: _Prepared) -> list:
    if prepared._mistakes is None:
        out = []
        cases = prepared.real_cases() or []
        for mistake in prepared.exercise.mistakes if cases else []:
            outputs = []
            for case in cases:
                try:
                    value = _normalize_trusted(mistake.fn(*_to_device(case.args, prepared.device)),
                                               prepared.exercise.output)
                    outputs.append(None if isinstance(value, OtherOut) else value)
                except Exception as exc:  # noqa: BLE001 - matched against a learner's exception
                    outputs.append(Raised(type(exc).__name__, exception_text(exc)))
            out.append((mistake, outputs))
        prepared._mistakes = out
    return prepared._mistakes


def _terms(prepared: _Prepared, index: int):
    if prepared.exercise.terms is None:
        return None
    if index not in prepared._terms:
        import numpy as np
        import torch

        try:
            cases = prepared.real_cases()
            raw = prepared.exercise.terms(cases[index])
            terms = {}
            for name, value in dict(raw).items():
                if isinstance(value, torch.Tensor):
                    value = value.detach().to("cpu")
                    value = value.to(torch.complex128 if value.is_complex() else torch.float64).numpy()
                terms[str(name)] = np.asarray(value, dtype=np.float64)
        except Exception:  # noqa: BLE001
            terms = None
        prepared._terms[index] = terms
    return prepared._terms[index]


def _to_torch(value, kind: str = "tensor"):
    import torch

    if isinstance(value, ArrayOut):
        return torch.from_numpy(value.values.copy()) if value.values is not None else None
    if isinstance(value, NumberOut):
        return value.value
    if isinstance(value, TupleOut):
        return tuple(_to_torch(v) for v in value.items)
    if isinstance(value, RowsOut):
        return set(value.rows) if kind == "set" else list(value.rows)
    return None


