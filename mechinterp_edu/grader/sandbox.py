"""Running a learner's file: in a sandboxed child process, or (trusted code only) in-process.

Parent side of the protocol described in :mod:`mechinterp_edu.grader._child`.

* :class:`SandboxRunner` starts the child as soon as it is created (the child's
  ``import torch`` then overlaps with the parent building cases and references), sends
  the job, enforces every wall-clock limit (start, module load, each exercise), kills
  the whole process group on a timeout, and restarts a fresh child for the exercises
  still to grade when one dies (``os._exit``, a segfault, the kernel's OOM killer).
* :func:`run_in_process` does the same work in this process (``sandbox=False``).
* Everything that comes back is validated here by :func:`normalize_output`: JSON that
  must have the expected shape and ``.npz`` arrays loaded with ``allow_pickle=False``,
  of plain numeric dtypes. Comparison code therefore only ever sees float64 / int64 /
  bool numpy arrays and plain Python numbers, never an object of the learner's.

This module imports no torch at import time, so starting a child costs the parent nothing.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

CHILD_SCRIPT = Path(__file__).resolve().with_name("_child.py")
BLOCKED_MODULES = ("mechinterp_edu", "solutions", "_posixsubprocess")
MAX_JSON_BYTES = 50 * 2**20
PREIMPORT_CANDIDATES = ("einops", "transformer_lens", "jaxtyping", "fancy_einsum", "scipy",
                        "sklearn", "pandas", "sympy", "typeguard")


@dataclass
class Limits:
    """Resource limits of one grading run (the defaults suit every lesson)."""

    memory_mb: int = 4096            # extra memory the child may allocate (RLIMIT_DATA)
    start_timeout_s: float = 180.0   # starting python + importing torch (the grader's own code)
    load_timeout_s: float = 30.0     # the learner's module-level code
    timeout_scale: float = 1.0       # multiplies each Exercise.timeout_s
    max_timeout_s: Optional[float] = None   # cap on any exercise's timeout (tests)
    threads: Optional[int] = None    # torch threads in the child (None: torch's default, max 4)
    fsize_mb: int = 1024             # largest file the child may write
    gpu_fraction: float = 0.5        # share of GPU memory the child may use
    extra_blocked: tuple[str, ...] = ()   # more paths the learner's code may not open

    def exercise_timeout(self, timeout_s: float) -> float:
        value = timeout_s * self.timeout_scale
        if self.max_timeout_s is not None:
            value = min(value, self.max_timeout_s)
        return max(value, 0.05)


# --------------------------------------------------------------------------- what came back
@dataclass
class CaseRun:
    status: str                        # "ok" | "error" | "grader_error"
    value: Any = None                  # a normalized output (see normalize_output)
    error: dict = field(default_factory=dict)
    mutated: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class ExerciseRun:
    status: str                        # "ran" | "missing" | "not_callable" | "timeout" | "died"
                                       # | "load_failed" | "grader_error"
    cases: list[CaseRun] = field(default_factory=list)
    message: str = ""                  # for timeout / died / load_failed / grader_error
    detail: dict = field(default_factory=dict)


@dataclass
class RunResult:
    load_errors: list[dict]
    exercises: list[ExerciseRun]
    load_failure: str = ""             # set when the module could not be loaded at all


class ProtocolError(Exception):
    """What the child sent does not have the agreed form."""


# --------------------------------------------------------------------------- normalized values
@dataclass
class ArrayOut:
    """A returned tensor: float64 / int64 / bool / complex128 numbers plus what it was."""
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
    type: str
    repr: str
    values: Optional[np.ndarray] = None
    tensor_subclass: bool = False
    shape: Optional[tuple] = None


@dataclass
class BadItemsOut:
    container: str
    item_type: str
    item_repr: str


_NUMERIC_KINDS = "biufc"


def _as_int_list(value, what) -> list[int]:
    if not isinstance(value, list) or not all(type(v) is int and v >= 0 for v in value):
        raise ProtocolError(f"{what} must be a list of non-negative ints")
    return value


def _text(meta, key, default="") -> str:
    value = meta.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be text")
    return value[:2000]


def _plain_array(array, key) -> np.ndarray:
    if type(array) is not np.ndarray or array.dtype.kind not in _NUMERIC_KINDS or array.dtype.hasobject:
        raise ProtocolError(f"array {key!r} is not a plain numeric array")
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    if array.dtype.kind == "c":
        return array.astype(np.complex128)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array.astype(bool)


def normalize_output(meta, arrays, depth: int = 0):
    """Validate one output description from the child and rebuild it from plain data."""
    if depth > 2 or not isinstance(meta, dict):
        raise ProtocolError("output description is not an object")
    kind = meta.get("k")
    if kind == "tensor":
        shape = tuple(_as_int_list(meta.get("shape"), "shape"))
        no_values = _text(meta, "no_values")
        values = None
        if not no_values:
            key = _text(meta, "key")
            if key not in arrays:
                raise ProtocolError(f"missing array {key!r}")
            values = _plain_array(arrays[key], key)
            if values.shape != shape:
                raise ProtocolError("array shape does not match its description")
        return ArrayOut(values, _text(meta, "dtype"), _text(meta, "device"), shape, no_values)
    if kind == "number":
        value = meta.get("v")
        if type(value) not in (int, float, bool):
            raise ProtocolError("number is not a number")
        return NumberOut(value, _text(meta, "type"))
    if kind == "tuple":
        items = meta.get("items")
        length = meta.get("len")
        if not isinstance(items, list) or type(length) is not int:
            raise ProtocolError("tuple description is malformed")
        return TupleOut([normalize_output(m, arrays, depth + 1) for m in items[:64]],
                        _text(meta, "container"), length)
    if kind == "rows":
        rows = meta.get("rows")
        if not isinstance(rows, list):
            raise ProtocolError("rows must be a list")
        clean = []
        for row in rows:
            if not isinstance(row, list) or not all(type(v) is int for v in row):
                raise ProtocolError("rows must hold lists of ints")
            clean.append(tuple(row))
        return RowsOut(clean, _text(meta, "container"))
    if kind == "bad_items":
        return BadItemsOut(_text(meta, "container"), _text(meta, "item_type"), _text(meta, "item_repr"))
    if kind == "other":
        values = None
        shape = meta.get("shape")
        key = meta.get("values_key")
        if isinstance(key, str) and key in arrays:
            values = _plain_array(arrays[key], key)
        if shape is not None:
            shape = tuple(_as_int_list(shape, "shape"))
        return OtherOut(_text(meta, "type"), _text(meta, "repr"), values,
                        bool(meta.get("tensor_subclass", False)), shape)
    raise ProtocolError(f"unknown output kind {kind!r}")


def _error_info(entry) -> dict:
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


def normalize_cases(payload, arrays, n_cases: int) -> ExerciseRun:
    """Validate one exercise's results (``ex_K.json`` + ``ex_K.npz``)."""
    if not isinstance(payload, dict):
        raise ProtocolError("result is not an object")
    if payload.get("missing") is True:
        return ExerciseRun("missing")
    if isinstance(payload.get("not_callable"), str):
        return ExerciseRun("not_callable", detail={"type": payload["not_callable"][:200]})
    entries = payload.get("cases")
    if not isinstance(entries, list) or len(entries) > n_cases:
        raise ProtocolError("cases must be a list of at most one entry per case")
    cases = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ProtocolError("case entry is not an object")
        status = entry.get("status")
        mutated = entry.get("mutated", [])
        mutated = _as_int_list(mutated, "mutated") if mutated else []
        seconds = entry.get("seconds", 0.0)
        seconds = float(seconds) if type(seconds) in (int, float) else 0.0
        if status == "ok":
            cases.append(CaseRun("ok", normalize_output(entry.get("out"), arrays), mutated=mutated,
                                 seconds=seconds))
        elif status == "error":
            cases.append(CaseRun("error", error=_error_info(entry), mutated=mutated, seconds=seconds))
        elif status == "grader_error":
            cases.append(CaseRun("grader_error", error={"message": _text(entry, "message")}))
        else:
            raise ProtocolError(f"unknown case status {status!r}")
    return ExerciseRun("ran", cases)


def _load_errors(payload) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("errors"), list):
        raise ProtocolError("module.json is malformed")
    return [_error_info(e) for e in payload["errors"][:50] if isinstance(e, dict)]


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


# --------------------------------------------------------------------------- sandbox paths
def _python_dirs() -> list[str]:
    dirs = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
            os.path.realpath(os.path.dirname(sys.executable))}
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        try:
            dirs.add(os.path.realpath(sysconfig.get_paths()[key]))
        except KeyError:
            pass
    return sorted(dirs)


def site_dirs() -> list[str]:
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except AttributeError:
        pass
    for key in ("purelib", "platlib"):
        dirs.append(sysconfig.get_paths()[key])
    out = []
    for d in dirs:
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def blocked_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """What the learner's code may not open: the repository (except the Python environment
    inside it), the installed package, the solutions folder, and ``extra``."""
    from mechinterp_edu.course import ROOT, SOLUTIONS_DIR

    python_dirs = _python_dirs()
    blocked = set()
    root = os.path.realpath(ROOT)
    try:
        entries = os.listdir(root)
    except OSError:
        entries = []
    for entry in entries:
        full = os.path.realpath(os.path.join(root, entry))
        # keep a folder that holds the running Python (a .venv inside the checkout)
        if any((p + "/").startswith(full.rstrip("/") + "/") for p in python_dirs):
            continue
        blocked.add(full)
    blocked.add(os.path.realpath(Path(__file__).resolve().parent.parent))   # the installed package
    blocked.add(os.path.realpath(SOLUTIONS_DIR))
    for path in extra:
        blocked.add(os.path.realpath(path))
    return sorted(blocked)


def _ancestors(paths: list[str]) -> list[str]:
    out = {"/", "/proc", "/proc/self"}
    for path in paths:
        parent = os.path.dirname(path)
        while parent and parent != "/":
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out)


def preimports_for(sources: list[dict]) -> list[str]:
    """The heavy libraries the learner's code imports (loaded before the sandbox closes)."""
    import ast

    names = set()
    for source in sources:
        try:
            tree = ast.parse(source["code"])
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return [n for n in PREIMPORT_CANDIDATES if n in names]


# --------------------------------------------------------------------------- the child process
def _describe_exit(returncode: Optional[int], memory_mb: int) -> str:
    if returncode is None:
        return "the grading process stopped responding"
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGKILL:
            return (f"the grading process was killed (SIGKILL), most likely for using too much "
                    f"memory (the sandbox allows about {memory_mb} MB)")
        if sig == signal.SIGSEGV:
            return "the grading process crashed (segmentation fault)"
        if sig == signal.SIGXCPU:
            return "the grading process used too much CPU time"
        return f"the grading process was stopped by {name}"
    return (f"your code ended the grading process (exit code {returncode}), e.g. with os._exit() "
            "or sys.exit() from a thread; return a value instead of exiting")


class _Child:
    def __init__(self, io_dir: Path, attempt: int, limits: Limits, preimport: list[str]):
        self.io_dir = io_dir
        self.attempt = attempt
        self.limits = limits
        work = io_dir / "work"
        work.mkdir(exist_ok=True)
        self.stdout_path = io_dir / f"stdout_{attempt}.txt"
        self.stderr_path = io_dir / f"stderr_{attempt}.txt"
        read_fd, write_fd = os.pipe()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
               "TMPDIR": str(work), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(self._threads())}
        for key in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "CUDA_HOME"):
            if key in os.environ:
                env[key] = os.environ[key]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(CHILD_SCRIPT), str(io_dir), str(write_fd),
                 *site_dirs()],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=str(work), env=env,
                pass_fds=(write_fd,), close_fds=True, start_new_session=True)
        os.close(write_fd)
        self.fd = read_fd
        os.set_blocking(read_fd, False)
        self.buffer = b""
        self.eof = False
        self.preimport = preimport

    def _threads(self) -> int:
        if self.limits.threads:
            return int(self.limits.threads)
        return max(1, min(4, os.cpu_count() or 1))

    def next_event(self, deadline: float) -> Optional[str]:
        """The next event line, or None on timeout; "" at EOF (the child is gone)."""
        while True:
            if b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                return line.decode("utf-8", "replace").strip() or self.next_event(deadline)
            if self.eof:
                return ""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self.eof = True
            else:
                self.buffer += chunk
                if len(self.buffer) > 2**20:      # a flood on the event pipe
                    self.buffer = self.buffer[-65536:]

    def send(self, obj) -> bool:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass

    def wait_exit(self, timeout: float = 2.0) -> Optional[int]:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            try:
                return self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return None

    def stderr_tail(self, lines: int = 6) -> str:
        try:
            with open(self.stderr_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 4000))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.wait_exit(5)
        for stream in (self.proc.stdin,):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.close(self.fd)
        except OSError:
            pass


def _read_small_json(path: Path):
    if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
        raise ProtocolError(f"{path.name} is missing or too large")
    with open(path) as fh:
        return json.load(fh)


def _read_npz(path: Path, limit_bytes: int) -> dict:
    if not path.is_file() or path.stat().st_size > limit_bytes:
        raise ProtocolError(f"{path.name} is missing or too large")
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


class SandboxRunner:
    """One learner file in sandboxed child processes. Create it early (the child starts
    importing torch at once), then call :meth:`run` once, then :meth:`close`."""

    def __init__(self, sources: list[dict], continue_on_error: bool = False,
                 limits: Optional[Limits] = None):
        self.sources = sources
        self.continue_on_error = continue_on_error
        self.limits = limits or Limits()
        self.preimport = preimports_for(sources)
        self.io_dir = Path(tempfile.mkdtemp(prefix="mechinterp-grade-"))
        self.attempts = 0
        self.child: Optional[_Child] = self._spawn()

    def _spawn(self) -> _Child:
        self.attempts += 1
        return _Child(self.io_dir, self.attempts, self.limits, self.preimport)

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None
        shutil.rmtree(self.io_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write_job(self, exercises: list[dict], inputs: dict, device: str) -> None:
        blocked = blocked_paths(self.limits.extra_blocked)
        job = {"sources": self.sources, "continue_on_error": self.continue_on_error,
               "preimport": self.preimport, "device": device,
               "memory_mb": self.limits.memory_mb, "fsize_mb": self.limits.fsize_mb,
               "threads": self.limits.threads or max(1, min(4, os.cpu_count() or 1)),
               "gpu_fraction": self.limits.gpu_fraction,
               "blocked_dirs": blocked, "ancestor_dirs": _ancestors(blocked),
               "write_dirs": [os.path.realpath(self.io_dir)],
               "blocked_modules": list(BLOCKED_MODULES), "exercises": exercises}
        with open(self.io_dir / "job.json", "w") as fh:
            json.dump(job, fh)
        with open(self.io_dir / "inputs.npz", "wb") as fh:
            np.savez(fh, **inputs)

    def run(self, exercises: list[dict], inputs: dict, timeouts: list[float], device: str) -> RunResult:
        """Grade ``exercises`` (each {"name", "output", "cases": [arg specs]}) in the sandbox."""
        self._write_job(exercises, inputs, device)
        results: dict[int, ExerciseRun] = {}
        pending = list(range(len(exercises)))
        load_errors: list[dict] = []
        load_failure = ""
        npz_limit = self.limits.fsize_mb * 2**20 + 2**20
        while pending:
            child = self.child if self.child is not None else self._spawn()
            self.child = None
            out_name = f"out_{child.attempt}"
            out_dir = self.io_dir / out_name
            try:
                outcome = self._drive(child, out_dir, out_name, pending, exercises, timeouts, results,
                                      npz_limit)
            finally:
                child.close()
            kind, info = outcome
            if kind == "infra":
                for k in pending:
                    results[k] = ExerciseRun("grader_error", message=info)
                pending = []
            elif kind == "fatal":
                load_errors = info
                for k in pending:
                    results[k] = ExerciseRun("load_failed")
                pending = []
            elif kind == "load":
                load_failure = info
                for k in pending:
                    results[k] = ExerciseRun("load_failed", message=info)
                pending = []
            else:
                if kind == "loaded":
                    load_errors = info
                pending = [k for k in pending if k not in results]
                if self.attempts > len(exercises) + 3:        # should not happen: each attempt ends one
                    for k in pending:
                        results[k] = ExerciseRun("died", message="the grading process kept dying")
                    pending = []
        return RunResult(load_errors, [results[k] for k in range(len(exercises))], load_failure)

    def _drive(self, child: _Child, out_dir: Path, out_name: str, pending: list[int],
               exercises: list[dict], timeouts: list[float], results: dict, npz_limit: int):
        limits = self.limits
        # 1. python + torch
        event = child.next_event(time.monotonic() + limits.start_timeout_s)
        if event != "ready":
            code = child.wait_exit(1) if event == "" else None
            tail = child.stderr_tail()
            why = "did not start in time" if event is None else f"exited early ({_describe_exit(code, limits.memory_mb)})"
            return "infra", (f"grader error: the sandbox {why}" + (f":\n{tail}" if tail else ""))
        if not child.send({"out": out_name, "run": pending}):
            return "infra", "grader error: the sandbox stopped before it got its job"
        # 2. the learner's module-level code
        event = child.next_event(time.monotonic() + limits.start_timeout_s)
        if event == "prepared":
            event = child.next_event(time.monotonic() + limits.load_timeout_s)
        elif event is None or event == "":
            code = child.wait_exit(1) if event == "" else None
            tail = child.stderr_tail()
            return "infra", ("grader error: the sandbox could not prepare its job"
                             + (f" ({_describe_exit(code, limits.memory_mb)})" if event == "" else "")
                             + (f":\n{tail}" if tail else ""))
        if event != "loaded":
            if event is None:
                msg = (f"your file was still running its top-level code after "
                       f"{limits.load_timeout_s:g} s (an infinite loop, or heavy work outside "
                       "the exercise functions?)")
            else:
                code = child.wait_exit(2)
                msg = "while loading your file, " + _describe_exit(code, limits.memory_mb)
            return "load", msg
        try:
            module_payload = _read_small_json(out_dir / "module.json")
            load_errors = _load_errors(module_payload)
        except (ProtocolError, ValueError, OSError) as exc:
            return "load", f"the grader could not read what your file did while loading ({exc})"
        if load_errors and not self.continue_on_error:
            return "fatal", load_errors           # grade.py reports the load error
        # 3. the exercises
        current: Optional[int] = None
        deadline = time.monotonic() + limits.load_timeout_s
        while True:
            event = child.next_event(deadline)
            if event is None:                    # timeout
                child.kill()
                if current is None:
                    current = next(k for k in pending if k not in results)
                    results[current] = ExerciseRun("died", message="the grading process stopped responding")
                else:
                    results[current] = ExerciseRun(
                        "timeout", message=f"timed out after {timeouts[current]:g} s",
                        detail={"seconds": timeouts[current]})
                return "loaded", load_errors
            if event == "":                      # the child is gone
                code = child.wait_exit(2)
                if current is None:
                    left = [k for k in pending if k not in results]
                    if not left:
                        return "loaded", load_errors
                    current = left[0]
                results[current] = ExerciseRun("died", message=_describe_exit(code, limits.memory_mb),
                                               detail={"returncode": code, "stderr": child.stderr_tail()})
                return "loaded", load_errors
            if event == "end":
                child.wait_exit(2)
                left = [k for k in pending if k not in results]
                for k in left:
                    results[k] = ExerciseRun("died", message="the grading process skipped this exercise")
                return "loaded", load_errors
            verb, _, arg = event.partition(" ")
            if not arg.isdigit() or int(arg) not in pending:
                continue                          # noise on the pipe
            k = int(arg)
            if verb == "start":
                current = k
                deadline = time.monotonic() + timeouts[k]
            elif verb == "done" and k == current:
                try:
                    payload = _read_small_json(out_dir / f"ex_{k}.json")
                    arrays = _read_npz(out_dir / f"ex_{k}.npz", npz_limit)
                    results[k] = normalize_cases(payload, arrays, len(exercises[k]["cases"]))
                except (ProtocolError, ValueError, OSError, KeyError) as exc:
                    results[k] = ExerciseRun(
                        "grader_error",
                        message=("the grader could not read your function's results "
                                 f"({exc}); did your code write into the grader's files?"))
                current = None
                deadline = time.monotonic() + limits.load_timeout_s


# --------------------------------------------------------------------------- trusted, in-process
_in_process_counter = [0]


def run_in_process(sources: list[dict], continue_on_error: bool, exercises: list[dict],
                   inputs: dict, device: str) -> RunResult:
    """Run trusted code here (``sandbox=False``): same encoding and validation, no isolation."""
    import torch

    from mechinterp_edu.grader import _child as child

    _in_process_counter[0] += 1
    module_name = f"_mechinterp_submission_{_in_process_counter[0]}"
    namespace, errors, learner_files = child.exec_sources(sources, continue_on_error, module_name)
    try:
        load_errors = [_error_info(e) for e in errors]
        runs = []
        fatal = bool(load_errors) and not continue_on_error
        for index, exercise in enumerate(exercises):
            if fatal:
                runs.append(ExerciseRun("load_failed"))
                continue
            fn = namespace.get(exercise["name"])
            if fn is None:
                runs.append(ExerciseRun("missing"))
                continue
            if not callable(fn):
                runs.append(ExerciseRun("not_callable", detail={"type": type(fn).__name__}))
                continue
            cases, arrays = child.run_cases(fn, exercise["cases"], exercise["output"], inputs,
                                            torch.device(device), learner_files, torch, np,
                                            key=f"e{index}")
            runs.append(normalize_cases({"missing": False, "cases": cases}, arrays,
                                        len(exercise["cases"])))
        return RunResult(load_errors, runs)
    finally:
        sys.modules.pop(module_name, None)
