"""Running a learner's file: in a jailed child process, or (trusted code only) in-process.

Parent side of the protocol described in :mod:`mechinterp_edu.grader._child`.

* A *fork server* (:func:`get_server`, one per grading process, started on first use and
  shared) runs inside the bubblewrap jail (:mod:`.jail`) and imports torch once; each attempt
  at a file is a process forked from it in milliseconds.
* :class:`SandboxRunner` hands the job over as sealed memfds (nothing of the learner's is
  ever written to the host's disk), reads the results from the event pipe with a size bound
  computed from the expected answers, and enforces **hard deadlines the child cannot
  extend**: one per attempt (set-up, then load time plus the exercises' timeouts plus
  slack) and one per exercise, both fixed when they start. Anything out of protocol, a
  death or a missed deadline kills the attempt's process group and costs only the exercise
  it happened in; a fresh attempt grades the rest.
* :func:`run_in_process` does the same work in this process (``sandbox=False``).

This module imports no torch at import time, so starting the server costs the parent nothing.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

from mechinterp_edu.grader import jail
from mechinterp_edu.grader.protocol import (ExerciseRun, Message, ProtocolError, Trusted, byte_bound,
                                            load_errors, normalize_cases)
from mechinterp_edu.grader.server import (ServerError, _Server, get_server, is_isolated,  # noqa: F401
                                          stop_server)

PREIMPORT_CANDIDATES = ("einops", "transformer_lens", "jaxtyping", "fancy_einsum", "typeguard")
MAX_LINE = 256


@dataclass
class Limits:
    """Resource limits of one grading run (the defaults suit every lesson)."""

    memory_mb: int = 4096            # address space the child may add (RLIMIT_AS)
    start_timeout_s: float = 180.0   # starting python + importing torch (the grader's own code)
    load_timeout_s: float = 30.0     # the learner's module-level code
    slack_s: float = 5.0             # added to an attempt's hard deadline
    timeout_scale: float = 1.0       # multiplies each Exercise.timeout_s
    max_timeout_s: Optional[float] = None   # cap on any exercise's timeout (tests)
    budget_s: Optional[float] = None # wall-clock budget for the whole file (the gradebook's)
    threads: Optional[int] = None    # torch threads in the child (None: 1, fastest for the
                                     # small cases here; more threads spin and slow down on busy CPUs)
    fsize_mb: int = 64               # largest file the child may write
    nofile: int = 256                # open files
    gpu_fraction: float = 0.5        # share of GPU memory the child may use
    result_mb: int = 256             # largest result message, whatever the expected size

    def exercise_timeout(self, timeout_s: float) -> float:
        value = timeout_s * self.timeout_scale
        if self.max_timeout_s is not None:
            value = min(value, self.max_timeout_s)
        return max(value, 0.05)

    def n_threads(self) -> int:
        return self.threads or 1


@dataclass
class RunResult:
    load_errors: list[dict]
    exercises: list[ExerciseRun]
    load_failure: str = ""


def preimports_for(sources: list[dict]) -> list[str]:
    text = "\n".join(s.get("code", "") for s in sources)
    return [name for name in PREIMPORT_CANDIDATES if name in text]


def describe_exit(code: Optional[int], memory_mb: int) -> str:
    if code is None:
        return "the grading process stopped"
    if code == -signal.SIGKILL:
        return (f"the grading process was killed (out of memory? the sandbox allows about "
                f"{memory_mb} MB)")
    if code == -signal.SIGXCPU:
        return "the grading process used up its CPU time"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"the grading process crashed ({name})"
    return f"your code ended the grading process (exit code {code}): did it call os._exit()?"


# --------------------------------------------------------------------------- one attempt
def _sealed(data: bytes, name: str) -> int:
    import fcntl

    fd = os.memfd_create(name, os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK
                | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    return fd


class _Violation(Exception):
    """The child broke the protocol (noise on the pipe, an oversize message)."""


class _Attempt:
    """One forked process grading some of a file's exercises, read through its event pipe."""

    def __init__(self, server: _Server, job: bytes, inputs: bytes, run: list[int], timeout: float):
        self.server = server
        read_fd, write_fd = os.pipe()
        fds = [_sealed(job, "job"), _sealed(inputs, "inputs"), write_fd]
        try:
            self.pid = server.fork({"op": "fork", "attempt": {"run": run}}, fds, timeout)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self.fd = read_fd
        self.buffer = bytearray()
        self.eof = False
        self.exited = False
        self.returncode: Optional[int] = None

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
        if ready:
            chunk = os.read(self.fd, 1 << 20)
            if chunk:
                self.buffer += chunk
            else:
                self.eof = True
        return True

    def line(self, deadline: float) -> Optional[str]:
        """The next event line; None on timeout, "" at EOF (the process is gone)."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise _Violation("a line too long")
            if self.eof:
                return ""
            if not self._fill(deadline):
                return None
        index = self.buffer.index(b"\n")
        if index > MAX_LINE:
            raise _Violation("a line too long")
        text = bytes(self.buffer[:index]).decode("ascii", "replace")
        del self.buffer[:index + 1]
        return text

    def take(self, n: int, deadline: float) -> Optional[bytes]:
        while len(self.buffer) < n:
            if self.eof:
                return b""
            if not self._fill(deadline):
                return None
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

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
        if not known:                     # the server does not answer: take the whole jail down
            self.server.stop()
        self.exited, self.returncode = True, code
        return code

    def close(self) -> None:
        if not self.exited:
            self.kill()
            self.wait_exit(5)
        os.close(self.fd)


# --------------------------------------------------------------------------- the runner
class SandboxRunner:
    """One learner file in jailed processes. Create it early (the fork server warms up
    meanwhile), then call :meth:`run` once, then :meth:`close`."""

    def __init__(self, sources: list[dict], continue_on_error: bool = False,
                 limits: Optional[Limits] = None):
        self.sources = sources
        self.continue_on_error = continue_on_error
        self.limits = limits or Limits()
        self.started = time.monotonic()
        self.attempts = 0
        self.retried: set[int] = set()
        self.server_error = ""
        try:
            self.server = get_server()
        except (OSError, ServerError) as exc:
            self.server = None
            self.server_error = f"grader error: the sandbox could not start ({exc})"

    def _job(self, exercises: list[dict], inputs: dict, device: str, timeouts: list[float]):
        import io

        import numpy as np

        lim = self.limits
        cpu_s = int((lim.load_timeout_s + sum(timeouts)) * lim.n_threads() + 30)
        job = {"sources": self.sources, "continue_on_error": self.continue_on_error,
               "preimport": preimports_for(self.sources), "device": device,
               "threads": lim.n_threads(), "gpu_fraction": lim.gpu_fraction,
               "exercises": exercises,
               "limits": {"memory_mb": lim.memory_mb, "cpu_s": cpu_s, "fsize_mb": lim.fsize_mb,
                          "nofile": lim.nofile, "nproc": jail.nproc_limit(lim.n_threads()),
                          "no_as": device.startswith("cuda")}}
        buffer = io.BytesIO()
        np.savez(buffer, **inputs)
        return json.dumps(job).encode(), buffer.getvalue()

    def run(self, exercises: list[dict], inputs: dict, timeouts: list[float], device: str,
            expected: Optional[list[list]] = None) -> RunResult:
        """Grade ``exercises`` (each {"name", "output", "cases"}); ``expected[k]`` holds the
        reference outputs of exercise k, which bound what may come back."""
        if self.server is None:
            return RunResult([], [ExerciseRun("grader_error", message=self.server_error)
                                  for _ in exercises])
        expected = expected or [[None] * len(e["cases"]) for e in exercises]
        job, blob = self._job(exercises, inputs, device, timeouts)
        results: dict[int, ExerciseRun] = {}
        pending = list(range(len(exercises)))
        errors: list[dict] = []
        failure = ""
        while pending:
            self.attempts += 1
            budget = (self.started + self.limits.budget_s if self.limits.budget_s else None)
            if budget is not None and time.monotonic() >= budget:
                for k in pending:
                    results[k] = ExerciseRun("timeout", message=(
                        f"not graded: the time budget of {self.limits.budget_s:g} s for this "
                        "file was used up"))
                break
            try:
                attempt = self._attempt(job, blob, pending)
            except (OSError, ServerError) as exc:
                stop_server()
                for k in pending:
                    results[k] = ExerciseRun("grader_error", message=(
                        f"grader error: the sandbox could not start ({exc})"))
                break
            try:
                kind, info = self._drive(attempt, pending, exercises, timeouts, results, expected,
                                         budget)
            finally:
                attempt.close()
            if kind in ("infra", "load", "fatal"):
                for k in pending:
                    results.setdefault(k, ExerciseRun(
                        "grader_error" if kind == "infra" else "load_failed",
                        message=info if kind != "fatal" else ""))
                if kind == "fatal":
                    errors = info
                elif kind == "load":
                    failure = info
                break
            errors = info
            pending = [k for k in pending if k not in results]
        return RunResult(errors, [results[k] for k in range(len(exercises))], failure)

    def _attempt(self, job: bytes, blob: bytes, pending: list[int]) -> _Attempt:
        """A fresh attempt; a server that is gone, stopped or wedged (a learner may have killed
        or SIGSTOPped it) is replaced once, so it never costs the next file or student."""
        for retry in (False, True):
            try:
                if retry or not self.server.alive():
                    if retry:
                        stop_server()
                    self.server = get_server()
                return _Attempt(self.server, job, blob, pending, self.limits.start_timeout_s)
            except (OSError, ServerError):
                if retry:
                    raise
        raise AssertionError("unreachable")

    def _drive(self, child: _Attempt, pending, exercises, timeouts, results, expected, budget):
        lim = self.limits
        errors: list[dict] = []
        # 1. set-up: the grader's own code (no learner code has run yet)
        try:
            event = child.line(time.monotonic() + lim.start_timeout_s)
        except _Violation:
            event = None
        if event != "prepared":
            code = child.wait_exit(2) if event == "" else None
            why = ("did not get ready in time" if event is None
                   else f"stopped ({describe_exit(code, lim.memory_mb)})")
            return "infra", f"grader error: the sandbox {why}"
        # 2. one hard deadline for the whole attempt, fixed now
        hard = time.monotonic() + lim.load_timeout_s + sum(timeouts[k] for k in pending) + lim.slack_s
        if budget is not None:
            hard = min(hard, budget)
        current: Optional[int] = None
        last_done: Optional[int] = None
        load_deadline = min(hard, time.monotonic() + lim.load_timeout_s)
        try:
            head = child.line(load_deadline)
            payload = self._payload(child, head, "loaded", load_deadline, 4 * 2**20)
        except _Violation as exc:
            child.kill()
            if str(exc) != "timeout":
                return "load", f"while loading your file, the grading process broke the protocol ({exc})"
            head, payload = None, None
        if payload is None:
            if head is None:
                child.kill()
                return "load", (f"your file was still running its top-level code after "
                                f"{lim.load_timeout_s:g} s (an infinite loop, or heavy work "
                                "outside the exercise functions?)")
            return "load", "while loading your file, " + describe_exit(child.wait_exit(2), lim.memory_mb)
        try:
            message = Message(payload)
            errors = load_errors(message.meta())
            if errors and not self.continue_on_error:
                return "fatal", errors
            # 3. the exercises, strictly in order, each with its own fixed deadline
            for k in pending:
                if child.line(hard) != f"start {k}":
                    raise _Violation("no start")
                current = k
                limit = min(lim.result_mb * 2**20, byte_bound([e for e in expected[k] if e is not None]
                                                              or [None]))
                ex_deadline = min(hard, time.monotonic() + timeouts[k])
                head = child.line(ex_deadline)
                payload = self._payload(child, head, f"done {k}", ex_deadline, limit)
                if payload is None:
                    raise _Violation("timeout" if head is None else "gone")
                try:
                    message = Message(payload)
                    results[k] = normalize_cases(message.meta(), message, expected[k])
                except ProtocolError as exc:
                    results[k] = ExerciseRun("grader_error", message=(
                        f"the grader could not accept your function's results ({exc})"))
                except Exception as exc:  # noqa: BLE001 - MemoryError included: this exercise only
                    results[k] = ExerciseRun("grader_error", message=(
                        f"grader error while reading your function's results ({type(exc).__name__})"))
                current, last_done = None, k
            if child.line(hard) != "end":
                raise _Violation("no end")
            child.wait_exit(2)
            return "loaded", errors
        except ProtocolError as exc:
            return "load", f"the grader could not read what your file did while loading ({exc})"
        except _Violation as exc:
            server_died = child.eof and self._server_died()
            child.kill()
            code = child.wait_exit(2)
            left = [k for k in pending if k not in results]
            at_risk = current if current is not None else (left[0] if left else None)
            if server_died and at_risk is not None and at_risk not in self.retried:
                self.retried.add(at_risk)       # it died with the server (which an earlier
                return "loaded", errors         # exercise may have killed): once more, fresh
            if current is None and last_done is not None and str(exc) not in ("timeout", "gone"):
                victim = last_done              # noise after its results: its code made it
            elif not left:
                return "loaded", errors
            else:
                victim = current if current is not None else left[0]
            now = time.monotonic()
            if str(exc) == "timeout" or now >= hard - 0.05:
                seconds = timeouts[victim]
                results[victim] = ExerciseRun("timeout", message=f"timed out after {seconds:g} s",
                                              detail={"seconds": seconds})
            elif str(exc) == "gone" or child.eof:
                results[victim] = ExerciseRun("died", message=describe_exit(code, lim.memory_mb),
                                              detail={"returncode": code})
            else:
                results[victim] = ExerciseRun("grader_error", message=(
                    f"the grading process broke the protocol ({exc}): did your code write to the "
                    "grader's channel or print a huge result?"))
            return "loaded", errors

    def _server_died(self) -> bool:
        try:
            self.server.proc.wait(timeout=1.0)
            return True
        except Exception:  # noqa: BLE001 - still running
            return False

    @staticmethod
    def _payload(child: _Attempt, head: Optional[str], verb: str, deadline: float,
                 limit: int) -> Optional[bytes]:
        """The bytes after ``verb N``; None if there was no line (timeout: ``head`` is None) or the
        process is gone; a deadline passed while reading the bytes raises ``_Violation("timeout")``."""
        if head is None or head == "":
            return None
        word, _, size = head.rpartition(" ")
        if word != verb or not size.isdigit():
            raise _Violation(f"unexpected {head[:40]!r}")
        if int(size) > limit:
            raise _Violation(f"a result of {int(size):,} bytes, more than the {limit:,} allowed")
        data = child.take(int(size), deadline)
        if data is None:
            raise _Violation("timeout")
        return data if len(data) == int(size) else None


# --------------------------------------------------------------------------- trusted, in-process
_in_process_counter = [0]


def run_in_process(sources: list[dict], continue_on_error: bool, exercises: list[dict],
                   inputs: dict, device: str, expected: Optional[list[list]] = None) -> RunResult:
    """Run trusted code here (``sandbox=False``): same encoding and validation, no isolation."""
    import numpy as np
    import torch

    from mechinterp_edu.grader import _learner_io as child

    _in_process_counter[0] += 1
    module_name = f"_mechinterp_submission_{_in_process_counter[0]}"
    namespace, errors, learner_files = child.exec_sources(sources, continue_on_error, module_name)
    try:
        errors = load_errors({"errors": errors})
        runs = []
        fatal = bool(errors) and not continue_on_error
        for index, exercise in enumerate(exercises):
            if fatal:
                runs.append(ExerciseRun("load_failed"))
                continue
            payload, arrays = child.run_exercise(namespace, exercise, index, inputs, torch.device(device),
                                                 learner_files, torch, np)
            exp = expected[index] if expected else [None] * len(payload["cases"])
            runs.append(normalize_cases(payload, Trusted(arrays), exp))
        return RunResult(errors, runs)
    finally:
        sys.modules.pop(module_name, None)
