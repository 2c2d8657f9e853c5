"""Running a learner's file: in sandboxed processes, or (trusted code only) in-process.

Parent side of the protocol described in :mod:`mechinterp_edu.grader._child`.

* A *fork server* (:func:`get_server`, one per grading process, started on first use and
  shared) imports torch once; each attempt at a file is a process forked from it in
  milliseconds, so grading many files (a gradebook, the app, the test-suite) does not pay
  ``import torch`` per file.
* :class:`SandboxRunner` writes the job (inputs only, never a reference answer), enforces
  every wall-clock limit (sandbox set-up, module load, each exercise), kills the process
  group on a timeout, and forks a fresh process for the exercises still to grade when one
  dies (``os._exit``, a segfault, the OOM killer) or times out.
* :func:`run_in_process` does the same work in this process (``sandbox=False``).
* Everything that comes back is validated here by :func:`normalize_output`: JSON that
  must have the expected shape and ``.npz`` arrays loaded with ``allow_pickle=False``,
  of plain numeric dtypes. Comparison code therefore only ever sees float64 / int64 /
  bool numpy arrays and plain Python numbers, never an object of the learner's.

This module imports no torch at import time, so starting the server costs the parent nothing.
"""
from __future__ import annotations

import atexit
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
import threading
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
    inside it), the installed package, the solutions folder, the grader's case cache (it
    holds reference answers), and ``extra``."""
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
    from mechinterp_edu.grader.cache import cache_dir

    folder = cache_dir()
    if folder is not None:                       # it holds reference answers
        blocked.add(os.path.realpath(folder))
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


# --------------------------------------------------------------------------- the fork server
class ServerError(RuntimeError):
    """The sandbox's fork server could not start or stopped."""


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


def _tail(path: Path, lines: int = 6) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class _Server:
    """The fork server (``_child.py --server``): imports torch once, forks a sandboxed
    process per attempt. One per grading process, started lazily and shared."""

    def __init__(self):
        import socket

        self.owner = os.getpid()
        self.home = Path(tempfile.mkdtemp(prefix="mechinterp-grader-server-"))
        self.log = self.home / "server.log"
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "TMPDIR": str(self.home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
               "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for key in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "CUDA_HOME"):
            if key in os.environ:
                env[key] = os.environ[key]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(CHILD_SCRIPT), "--server",
                 str(theirs.fileno()), *site_dirs()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(self.home), env=env,
                pass_fds=(theirs.fileno(),), close_fds=True, start_new_session=True)
        theirs.close()
        self.sock = mine
        self.ready = False
        self.exits: dict[int, Optional[int]] = {}
        self.lock = threading.RLock()

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def _gone(self, what: str) -> ServerError:
        code = self.proc.poll()
        tail = _tail(self.log)
        return ServerError(f"the grader's sandbox server {what}"
                           + (f" (exit code {code})" if code is not None else "")
                           + (f":\n{tail}" if tail else ""))

    def _pump(self, deadline: float) -> Optional[dict]:
        """Read one message (None on timeout); bookkeeping for ready / exit messages."""
        remaining = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.sock], [], [], min(remaining, 1.0))
        if not ready:
            if self.proc.poll() is not None:
                raise self._gone("stopped")
            return None
        try:
            data = self.sock.recv(1 << 16)
        except OSError as exc:
            raise self._gone(f"could not be reached ({exc})") from None
        if not data:
            raise self._gone("stopped")
        message = json.loads(data)
        if message.get("ready"):
            self.ready = True
        if "exit" in message:
            self.exits[int(message["exit"])] = message.get("code")
        return message

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.ready:
                if time.monotonic() > deadline:
                    raise self._gone(f"did not start within {timeout:g} s")
                self._pump(deadline)

    def fork(self, request: dict, event_fd: int, timeout: float) -> int:
        import socket

        with self.lock:
            self.wait_ready(timeout)
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], [event_fd])
            except OSError as exc:
                raise self._gone(f"could not be reached ({exc})") from None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = self._pump(deadline)
                if message and "pid" in message:
                    return int(message["pid"])
            raise self._gone("did not answer a fork request")

    def kill(self, pid: int) -> None:
        with self.lock:
            try:
                self.sock.send(json.dumps({"op": "kill", "pid": pid}).encode())
            except OSError:
                pass

    def wait_exit(self, pid: int, timeout: float) -> tuple[bool, Optional[int]]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while pid not in self.exits:
                if time.monotonic() >= deadline:
                    return False, None
                try:
                    self._pump(deadline)
                except (ServerError, ValueError):
                    return False, None
            return True, self.exits.pop(pid)

    def stop(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.home, ignore_errors=True)


_SERVER: Optional[_Server] = None
_SERVER_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def get_server() -> _Server:
    """The running fork server, started if needed (returns at once; it warms up meanwhile)."""
    global _SERVER, _ATEXIT_REGISTERED
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            if _SERVER is not None and _SERVER.owner == os.getpid():
                _SERVER.stop()
            _SERVER = _Server()
            if not _ATEXIT_REGISTERED:
                atexit.register(stop_server)
                _ATEXIT_REGISTERED = True
        return _SERVER


def stop_server() -> None:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None and _SERVER.owner == os.getpid():
            _SERVER.stop()
        _SERVER = None


class _Attempt:
    """One forked sandbox process grading some of a file's exercises."""

    def __init__(self, server: _Server, io_dir: Path, number: int, run: list[int],
                 limits: Limits, guard: dict):
        self.server = server
        self.io_dir = io_dir
        self.number = number
        self.out_name = f"out_{number}"
        self.stderr_path = io_dir / f"stderr_{number}.txt"
        work = io_dir / "work"
        work.mkdir(exist_ok=True)
        out = io_dir / self.out_name
        out.mkdir(exist_ok=True)
        read_fd, write_fd = os.pipe()
        guard = dict(guard, write_dirs=[os.path.realpath(work), os.path.realpath(out)])
        request = {"op": "fork", "io_dir": str(io_dir), "cwd": str(work),
                   "stdout": str(io_dir / f"stdout_{number}.txt"), "stderr": str(self.stderr_path),
                   "attempt": {"out": self.out_name, "run": run}, "guard": guard}
        try:
            self.pid = server.fork(request, write_fd, limits.start_timeout_s)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.fd = read_fd
        os.set_blocking(read_fd, False)
        self.buffer = b""
        self.eof = False
        self.exited = False
        self.returncode: Optional[int] = None

    def next_event(self, deadline: float) -> Optional[str]:
        """The next event line, or None on timeout; "" at EOF (the process is gone)."""
        while True:
            if b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text:
                    return text
                continue
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

    def kill(self) -> None:
        if not self.exited:
            self.server.kill(self.pid)

    def wait_exit(self, timeout: float = 2.0) -> Optional[int]:
        if self.exited:
            return self.returncode
        known, code = self.server.wait_exit(self.pid, timeout)
        if not known:
            self.kill()
            known, code = self.server.wait_exit(self.pid, 5)
        if known:
            self.exited, self.returncode = True, code
        return code

    def stderr_tail(self, lines: int = 6) -> str:
        return _tail(self.stderr_path, lines)

    def close(self) -> None:
        if not self.exited:
            self.kill()
            self.wait_exit(5)
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
    """One learner file in sandboxed processes. Create it early (the fork server warms up
    meanwhile), then call :meth:`run` once, then :meth:`close`."""

    def __init__(self, sources: list[dict], continue_on_error: bool = False,
                 limits: Optional[Limits] = None):
        self.sources = sources
        self.continue_on_error = continue_on_error
        self.limits = limits or Limits()
        self.preimport = preimports_for(sources)
        self.io_dir = Path(tempfile.mkdtemp(prefix="mechinterp-grade-"))
        self.attempts = 0
        self.server_error = ""
        try:
            self.server = get_server()
        except (OSError, ServerError) as exc:
            self.server = None
            self.server_error = f"grader error: the sandbox could not start ({exc})"

    def close(self) -> None:
        shutil.rmtree(self.io_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write_job(self, exercises: list[dict], inputs: dict, device: str) -> None:
        blocked = blocked_paths(self.limits.extra_blocked)
        self.guard = {"memory_mb": self.limits.memory_mb, "fsize_mb": self.limits.fsize_mb,
                      "blocked_dirs": blocked, "ancestor_dirs": _ancestors(blocked),
                      "blocked_modules": list(BLOCKED_MODULES),
                      "read_dirs": _python_dirs() + site_dirs()}
        job = {"sources": self.sources, "continue_on_error": self.continue_on_error,
               "preimport": self.preimport, "device": device,
               "threads": self.limits.threads or max(1, min(4, os.cpu_count() or 1)),
               "gpu_fraction": self.limits.gpu_fraction, "exercises": exercises}
        with open(self.io_dir / "job.json", "w") as fh:
            json.dump(job, fh)
        with open(self.io_dir / "inputs.npz", "wb") as fh:
            np.savez(fh, **inputs)

    def run(self, exercises: list[dict], inputs: dict, timeouts: list[float], device: str) -> RunResult:
        """Grade ``exercises`` (each {"name", "output", "cases": [arg specs]}) in the sandbox."""
        results: dict[int, ExerciseRun] = {}
        pending = list(range(len(exercises)))
        load_errors: list[dict] = []
        load_failure = ""
        if self.server is None:
            return RunResult([], [ExerciseRun("grader_error", message=self.server_error)
                                  for _ in exercises])
        self._write_job(exercises, inputs, device)
        npz_limit = self.limits.fsize_mb * 2**20 + 2**20
        threads = self.limits.threads or max(1, min(4, os.cpu_count() or 1))
        while pending:
            self.attempts += 1
            cpu_s = int((self.limits.load_timeout_s + sum(timeouts[k] for k in pending)) * threads * 2 + 60)
            try:
                attempt = _Attempt(self.server, self.io_dir, self.attempts, pending, self.limits,
                                   dict(self.guard, cpu_s=cpu_s))
            except (OSError, ServerError) as exc:
                kind, info = "infra", f"grader error: the sandbox could not start ({exc})"
            else:
                try:
                    kind, info = self._drive(attempt, pending, exercises, timeouts, results, npz_limit)
                finally:
                    attempt.close()
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
                load_errors = info
                pending = [k for k in pending if k not in results]
                if self.attempts > len(exercises) + 3:        # cannot happen: each attempt ends one
                    for k in pending:
                        results[k] = ExerciseRun("died", message="the grading process kept dying")
                    pending = []
        return RunResult(load_errors, [results[k] for k in range(len(exercises))], load_failure)

    def _drive(self, child: _Attempt, pending: list[int], exercises: list[dict],
               timeouts: list[float], results: dict, npz_limit: int):
        limits = self.limits
        out_dir = self.io_dir / child.out_name
        # 1. limits, sandbox, pre-imports (the grader's own code)
        event = child.next_event(time.monotonic() + limits.start_timeout_s)
        if event != "prepared":
            code = child.wait_exit(2) if event == "" else None
            tail = child.stderr_tail()
            why = "did not get ready in time" if event is None else f"stopped ({_describe_exit(code, limits.memory_mb)})"
            return "infra", f"grader error: the sandbox {why}" + (f":\n{tail}" if tail else "")
        # 2. the learner's module-level code
        event = child.next_event(time.monotonic() + limits.load_timeout_s)
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
            load_errors = _load_errors(_read_small_json(out_dir / "module.json"))
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
                    left = [k for k in pending if k not in results]
                    if not left:
                        return "loaded", load_errors
                    results[left[0]] = ExerciseRun("died", message="the grading process stopped responding")
                else:
                    results[current] = ExerciseRun(
                        "timeout", message=f"timed out after {timeouts[current]:g} s",
                        detail={"seconds": timeouts[current]})
                return "loaded", load_errors
            if event == "":                      # the process is gone
                code = child.wait_exit(2)
                left = [k for k in pending if k not in results]
                if not left:
                    return "loaded", load_errors
                victim = current if current is not None else left[0]
                results[victim] = ExerciseRun("died", message=_describe_exit(code, limits.memory_mb),
                                              detail={"returncode": code, "stderr": child.stderr_tail()})
                return "loaded", load_errors
            if event == "end":
                child.wait_exit(2)
                for k in [k for k in pending if k not in results]:
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
