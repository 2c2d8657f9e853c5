"""Running a learner's code and describing what it returned: shared by the grading child
(:mod:`._child`, inside the jail) and the parent's trusted in-process mode.

Standalone on purpose: it imports only the standard library (torch and numpy are passed in),
so the child can load it by path inside the jail.
"""
from __future__ import annotations

import sys
import time
import traceback

MAX_ELEMENTS = 20_000_000          # largest array a result may hold (the parent bounds it again)
MAX_ITEMS = 200_000                # largest set / list result
MAX_TEXT = 1500                    # longest message / traceback kept
COURSE_PACKAGES = ("mechinterp_edu", "solutions")       # never importable by graded code
ALLOWED_PACKAGES = ("torch", "numpy", "einops", "jaxtyping", "transformer_lens")


def allowed_imports_text() -> str:
    return ", ".join(ALLOWED_PACKAGES) + " and Python's standard library"


def refused_import(name: str):
    """The error for a learner's ``import name``, or None when graded code may import it."""
    top = name.partition(".")[0]
    if top in COURSE_PACKAGES:
        return ModuleNotFoundError(f"importing {name!r} is not allowed in graded code: write the "
                                   "exercise yourself", name=name)
    if top in ALLOWED_PACKAGES or top in sys.stdlib_module_names or top == "__future__":
        return None
    return ModuleNotFoundError(f"importing {name!r} is not allowed in graded code, which may import "
                               f"only {allowed_imports_text()}", name=name)


def _learner_builtins(builtins) -> dict:
    """The builtins the learner's code sees: the real ones, with its import statements checked
    (what torch or numpy import in turn is not; the jail hides the course's code anyway)."""
    real_import = builtins.__import__

    def checked_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            error = refused_import(name)
            if error is not None:
                raise error
        return real_import(name, globals, locals, fromlist, level)

    names = dict(vars(builtins))
    names["__import__"] = checked_import
    return names


# --------------------------------------------------------------------------- helpers
def _short(text: str, limit: int = MAX_TEXT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 15] + " ...(truncated)"


def _type_name(value) -> str:
    cls = type(value)
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", None) or cls.__name__
    if module in ("builtins", "") or not isinstance(module, str):
        return str(name)
    return f"{module}.{name}"


def _safe_repr(value, limit: int = 120) -> str:
    try:
        text = repr(value)
    except BaseException:  # noqa: BLE001 - a hostile __repr__ must not stop the child
        return "<unprintable>"
    return _short(text, limit)


# --------------------------------------------------------------------------- inputs
def decode_arg(spec, arrays, device, torch, np, track):
    """Rebuild one argument from its JSON description; tensors are fresh copies."""
    kind = spec.get("k")
    if kind == "py":
        return spec.get("v")
    if kind == "tensor":
        original = arrays[spec["key"]]
        tensor = torch.from_numpy(np.array(original, copy=True))
        dtype = spec.get("dtype")
        if dtype == "bfloat16":
            tensor = tensor.to(torch.bfloat16)
        tensor = tensor.to(device)
        track.append((tensor, original))
        return tensor
    if kind == "ndarray":
        value = np.array(arrays[spec["key"]], copy=True)
        track.append((value, arrays[spec["key"]]))
        return value
    if kind == "list":
        return [decode_arg(s, arrays, device, torch, np, track) for s in spec["items"]]
    if kind == "tuple":
        return tuple(decode_arg(s, arrays, device, torch, np, track) for s in spec["items"])
    if kind == "dict":
        return {k: decode_arg(s, arrays, device, torch, np, track) for k, s in spec["items"].items()}
    raise ValueError(f"unknown argument kind {kind!r}")


def _mutated(track, torch, np) -> list[int]:
    changed = []
    for i, (value, original) in enumerate(track):
        try:
            if isinstance(value, torch.Tensor):
                now = value.detach().to("cpu")
                if now.dtype == torch.bfloat16:
                    now = now.float()
                now = now.numpy()
            else:
                now = np.asarray(value)
            same = now.shape == original.shape and np.array_equal(
                now, original, equal_nan=original.dtype.kind in "fc")
        except BaseException:  # noqa: BLE001
            same = False
        if not same:
            changed.append(i)
    return changed


# --------------------------------------------------------------------------- outputs
def _encode_tensor(value, key, arrays, torch):
    meta = {"k": "tensor", "dtype": str(value.dtype).replace("torch.", ""),
            "device": str(value.device), "shape": [int(s) for s in value.shape],
            "layout": str(value.layout).replace("torch.", ""), "key": key}
    if value.device.type == "meta":
        meta["no_values"] = "it lives on the 'meta' device and holds no numbers"
        return meta
    if value.numel() > MAX_ELEMENTS:
        meta["no_values"] = f"it has {value.numel():,} elements (more than {MAX_ELEMENTS:,})"
        return meta
    x = value.detach()
    if x.layout != torch.strided:
        x = x.to_dense()
    if x.is_quantized:
        x = x.dequantize()
    if x.is_complex():
        x = x.to(torch.complex128)
    elif x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    x = x.resolve_conj().resolve_neg().to("cpu").contiguous()
    arrays[key] = x.numpy().copy()
    return meta


def _encode_number(value, np, torch):
    if type(value) is bool or isinstance(value, np.bool_):
        return {"k": "number", "v": bool(value), "type": _type_name(value)}
    if type(value) is int or isinstance(value, np.integer):
        return {"k": "number", "v": int(value), "type": _type_name(value)}
    if type(value) is float or isinstance(value, np.floating):
        return {"k": "number", "v": float(value), "type": _type_name(value)}
    if type(value) is torch.Tensor and value.ndim == 0 and value.device.type != "meta" \
            and not value.is_complex():
        item = value.detach().to("cpu").item()
        return {"k": "number", "v": item, "type": "torch.Tensor",
                "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return {"k": "number", "v": value.item(), "type": "numpy.ndarray"}
    return None


def _encode_other(value, key, arrays, np, torch):
    """Something of the wrong type: say what it is and, when cheap, what numbers it holds."""
    meta = {"k": "other", "type": _type_name(value), "repr": _safe_repr(value)}
    if isinstance(value, torch.Tensor):           # a subclass of torch.Tensor
        meta["tensor_subclass"] = True
        return meta
    try:
        if type(value) is np.ndarray and value.dtype.kind in "biuf" and value.size <= MAX_ELEMENTS:
            arrays[key] = np.array(value, dtype=np.float64)
            meta["values_key"] = key
            meta["shape"] = [int(s) for s in value.shape]
        elif type(value) in (list, tuple) and len(value) <= 100_000:
            array = np.array(value)
            if array.dtype.kind in "biuf" and array.size <= MAX_ELEMENTS:
                arrays[key] = array.astype(np.float64)
                meta["values_key"] = key
                meta["shape"] = [int(s) for s in array.shape]
    except BaseException:  # noqa: BLE001 - ragged lists, hostile objects: just the type then
        arrays.pop(key, None)
        meta.pop("values_key", None)
    return meta


def _is_plain_tensor(value, torch) -> bool:
    return type(value) is torch.Tensor or type(value) is torch.nn.Parameter


def encode_output(value, kind, key, arrays, torch, np):
    """Describe a returned value as JSON (+ plain arrays in ``arrays``), per output kind."""
    if kind == "tensor":
        if _is_plain_tensor(value, torch):
            return _encode_tensor(value, key, arrays, torch)
        return _encode_other(value, key, arrays, np, torch)
    if kind == "float":
        number = _encode_number(value, np, torch)
        if number is not None and type(number["v"]) is not bool:
            return number
        if _is_plain_tensor(value, torch):
            return {"k": "other", "type": "torch.Tensor",
                    "repr": f"a tensor of shape {tuple(value.shape)}", "shape": list(value.shape)}
        return _encode_other(value, key, arrays, np, torch)
    if kind == "tuple":
        if type(value) not in (tuple, list):
            return _encode_other(value, key, arrays, np, torch)
        items = []
        for i, item in enumerate(value[:64]):
            if _is_plain_tensor(item, torch):
                items.append(_encode_tensor(item, f"{key}_{i}", arrays, torch))
                continue
            number = _encode_number(item, np, torch)
            items.append(number if number is not None
                         else _encode_other(item, f"{key}_{i}", arrays, np, torch))
        return {"k": "tuple", "container": type(value).__name__, "len": len(value), "items": items}
    if kind in ("set", "list"):
        allowed = (set, frozenset, list, tuple) if kind == "set" else (list, tuple)
        if type(value) not in allowed:
            return _encode_other(value, key, arrays, np, torch)
        if len(value) > MAX_ITEMS:
            return {"k": "other", "type": type(value).__name__,
                    "repr": f"a collection of {len(value):,} items (more than {MAX_ITEMS:,})"}
        import operator
        rows = []
        width = None
        for element in value:
            if type(element) not in (tuple, list):
                return {"k": "bad_items", "container": type(value).__name__,
                        "item_type": _type_name(element), "item_repr": _safe_repr(element)}
            try:
                rows.append([operator.index(x) for x in element])
            except BaseException:  # noqa: BLE001
                return {"k": "bad_items", "container": type(value).__name__,
                        "item_type": "tuple of " + ", ".join(sorted({_type_name(x) for x in element})),
                        "item_repr": _safe_repr(element)}
            if width is not None and len(rows[-1]) != width:
                return {"k": "bad_items", "container": type(value).__name__,
                        "item_type": "tuples of different lengths", "item_repr": _safe_repr(element)}
            width = len(rows[-1])
        arrays[key] = np.array(rows, dtype=np.int64).reshape(len(rows), width or 0)
        return {"k": "rows", "container": type(value).__name__, "key": key}
    raise ValueError(f"unknown output kind {kind!r}")


# --------------------------------------------------------------------------- errors
def exception_text(exc: BaseException) -> str:
    """An exception's one-line description ("ValueError: ..."); its type alone if that fails."""
    try:
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException:  # noqa: BLE001
        return type(exc).__name__


def describe_exception(exc, learner_files) -> dict:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in learner_files]
    text = exception_text(exc)
    info = {"etype": type(exc).__name__, "message": _short(text),
            "traceback": _short("".join(traceback.format_list(frames[-6:])).rstrip(), 3000),
            "learner_frames": len(frames),
            "not_implemented": isinstance(exc, NotImplementedError),
            "exit": isinstance(exc, SystemExit),
            "memory": isinstance(exc, MemoryError) or "can't allocate memory" in text
            or "out of memory" in text.lower()}
    if isinstance(exc, SystemExit):
        info["code"] = _safe_repr(exc.code, 60)
    if isinstance(exc, SyntaxError):
        info["lineno"] = exc.lineno
        info["filename"] = exc.filename
    return info


# --------------------------------------------------------------------------- running
def exec_sources(sources, continue_on_error, module_name="submission"):
    """Run the learner's sources (a file, or notebook cells) in one fresh module namespace."""
    import builtins
    import linecache
    import types

    module = types.ModuleType(module_name)
    module.__dict__["__builtins__"] = _learner_builtins(builtins)
    module.__dict__["__file__"] = sources[0]["name"] if sources else module_name
    sys.modules[module_name] = module
    learner_files = {s["name"] for s in sources}
    errors = []
    for source in sources:
        code_text = source["code"]
        linecache.cache[source["name"]] = (len(code_text), None, code_text.splitlines(True),
                                           source["name"])
        try:
            code = compile(code_text, source["name"], "exec", dont_inherit=True)
        except SyntaxError as exc:
            errors.append({"source": source["name"], **describe_exception(exc, learner_files)})
            if not continue_on_error:
                break
            continue
        try:
            exec(code, module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: the learner's code must not stop us
            errors.append({"source": source["name"], **describe_exception(exc, learner_files)})
            if not continue_on_error:
                break
    return module.__dict__, errors, learner_files


def run_exercise(namespace, exercise, index, arrays_in, device, learner_files, torch, np):
    """One exercise of the learner's namespace: (payload, arrays) as the parent reads them."""
    fn = namespace.get(exercise["name"])
    if fn is None:
        return {"missing": True, "cases": []}, {}
    if not callable(fn):
        return {"missing": False, "not_callable": _type_name(fn), "cases": []}, {}
    cases, arrays = run_cases(fn, exercise["cases"], exercise["output"], arrays_in, device, learner_files,
                              torch, np, key=f"e{index}")
    return {"missing": False, "cases": cases}, arrays


def run_cases(fn, case_specs, kind, arrays_in, device, learner_files, torch, np, key="e"):
    """Call ``fn`` on every case; return (per-case JSON, arrays). Stops after NotImplementedError."""
    results = []
    arrays = {}
    for j, spec in enumerate(case_specs):
        track = []
        try:
            args = [decode_arg(s, arrays_in, device, torch, np, track) for s in spec]
        except BaseException as exc:  # noqa: BLE001
            results.append({"status": "grader_error", "message": _short(f"{type(exc).__name__}: {exc}")})
            continue
        start = time.perf_counter()
        try:
            out = fn(*args)
            meta = encode_output(out, kind, f"{key}c{j}", arrays, torch, np)
            entry = {"status": "ok", "out": meta}
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, MemoryError...
            entry = {"status": "error", **describe_exception(exc, learner_files)}
        entry["seconds"] = round(time.perf_counter() - start, 4)
        entry["mutated"] = _mutated(track, torch, np)
        out = args = track = None
        results.append(entry)
        if entry["status"] == "error" and (entry.get("not_implemented") or entry.get("memory")):
            results += [{"status": "skipped"}] * (len(case_specs) - j - 1)
            break
    return results, arrays


