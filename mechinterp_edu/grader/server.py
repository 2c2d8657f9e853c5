"""The fork server: one per grading process, inside the bubblewrap jail when it can be.

It imports torch once; each attempt at a file is a process forked from it in milliseconds.
It is started from one long-lived thread, because bwrap's ``--die-with-parent`` follows the
*thread* that started it and the grader may be called from short-lived threads (each
Streamlit run is one). Where bubblewrap cannot isolate code, the server is a plain child
process and this says so once, in one line, on stderr.
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from mechinterp_edu.grader import jail

TMPFS_MB = 256                   # all the jail may write, together
FORK_ANSWER_S = 15.0             # a server that does not answer a fork by then is replaced


class ServerError(RuntimeError):
    """The fork server is gone or does not answer."""


_LAUNCHER: "queue.Queue" = queue.Queue()


def _launcher() -> None:
    """Starts servers from one long-lived thread: bwrap's --die-with-parent follows the
    *thread* that started it, and the grader may be called from short-lived threads."""
    while True:
        args, kwargs, answer = _LAUNCHER.get()
        try:
            answer.put(subprocess.Popen(args, **kwargs))
        except BaseException as exc:  # noqa: BLE001
            answer.put(exc)


threading.Thread(target=_launcher, name="grader-launcher", daemon=True).start()
_NOTICE_SHOWN = [False]


class _Server:
    def __init__(self):
        import socket

        self.owner = os.getpid()
        self.isolated, why = jail.isolation()
        notice = jail.describe(self.isolated, why)
        if notice and not _NOTICE_SHOWN[0]:
            _NOTICE_SHOWN[0] = True
            print(notice, file=sys.stderr)
        self.home = tempfile.mkdtemp(prefix="mechinterp-grader-")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for key in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "CUDA_HOME"):
            if key in os.environ:
                env[key] = os.environ[key]
        tail = [sys.executable, "-I", "-S", "-B"]
        if self.isolated:
            env.update(HOME="/tmp", TMPDIR="/tmp")
            args = jail.bwrap_args(TMPFS_MB) + ["--clearenv"]
            for key, value in env.items():
                args += ["--setenv", key, value]
            args += ["--", *tail, jail.JAIL_CHILD, "--jailed"]
        else:
            env.update(HOME=self.home, TMPDIR=self.home)
            args = tail + [str(jail.CHILD_SCRIPT)]
        args += ["--server", str(theirs.fileno()), *jail.site_dirs()]
        self.cgroup = jail.task_cgroup()
        if self.cgroup:                  # enter the cgroup before exec: every descendant is in it
            args = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.cgroup, *args]
        answer: "queue.Queue" = queue.Queue()
        _LAUNCHER.put((args, dict(pass_fds=(theirs.fileno(),), env=env, cwd=self.home,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True), answer))
        proc = answer.get()
        theirs.close()
        if isinstance(proc, BaseException):
            mine.close()
            jail.remove_cgroup(self.cgroup)
            raise ServerError(f"could not start ({proc})")
        self.proc, self.sock = proc, mine
        self.lock = threading.RLock()
        self.exits: dict[int, Optional[int]] = {}
        self.ready = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self.ready:
                if time.monotonic() > deadline:
                    raise ServerError("did not get ready in time")
                self._pump(deadline)

    def _pump(self, deadline: float) -> Optional[dict]:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, min(deadline - time.monotonic(), 0.5)))
        if not ready:
            if not self.alive():
                raise ServerError("stopped")
            return None
        data = self.sock.recv(65536)
        if not data:
            raise ServerError("stopped")
        message = json.loads(data)
        if "exit" in message:
            self.exits[int(message["exit"])] = message.get("code")
        if message.get("ready"):
            self.ready = True
        return message

    def fork(self, request: dict, fds: list[int], timeout: float) -> int:
        import socket

        with self.lock:
            self.wait_ready(timeout)
            socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
            deadline = time.monotonic() + FORK_ANSWER_S     # a ready server answers in milliseconds
            while time.monotonic() < deadline:
                message = self._pump(deadline)
                if message and "pid" in message:
                    return int(message["pid"])
            raise ServerError("did not answer a fork request")

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
                except (ServerError, ValueError, OSError):
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
        jail.remove_cgroup(self.cgroup)


_SERVER: Optional[_Server] = None
_SERVER_LOCK = threading.Lock()


def get_server() -> _Server:
    """The running fork server, started if needed (returns at once; it warms up meanwhile)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive() or _SERVER.owner != os.getpid():
            if _SERVER is not None and _SERVER.owner == os.getpid():
                _SERVER.stop()
            _SERVER = _Server()
        return _SERVER


def stop_server() -> None:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None and _SERVER.owner == os.getpid():
            _SERVER.stop()
        _SERVER = None


atexit.register(stop_server)


def is_isolated() -> bool:
    return jail.isolation()[0]


