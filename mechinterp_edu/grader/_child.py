"""The grading child: runs a learner file's exercises, inside the jail the parent built.

Standalone on purpose (it imports nothing from ``mechinterp_edu``): the parent starts it by
path as a *fork server*, inside bubblewrap when it can (:mod:`mechinterp_edu.grader.jail`)::

    python -I -S -B _child.py --server SOCKET_FD SITE_DIR [SITE_DIR ...]

The server imports numpy / torch once, then forks one process per attempt at grading a
file. It never runs learner code itself and never touches CUDA, so forking is safe and takes
milliseconds. It is not dumpable (a learner process cannot read or patch its memory), and
it empties the scratch folder of each attempt when the attempt ends.

Protocol of one attempt (:func:`run_job`); the parent enforces every deadline and bound:

1. The fork request brings three file descriptors: the job (sealed memfd, JSON: sources,
   exercises, limits), the inputs (sealed memfd, ``.npz`` of every tensor argument) and the
   write end of the event pipe.
2. The process sets its rlimits (address space, CPU, processes/threads, file size, open
   files), writes ``prepared``, runs the learner's module-level code and sends
   ``loaded N`` followed by N bytes: an ``.npz`` whose ``__meta__`` member is JSON.
3. Per exercise: ``start K``, then ``done K N`` and N bytes (``.npz``: ``__meta__`` with
   one entry per case, plus the arrays it names). At the end ``end``.

Nothing here is trusted by the parent: the learner's code runs in this process and can
rewrite any of it. The parent checks every header against what the exercise must return
before it reads a byte of data, and compares with its own reference answer.
"""
from __future__ import annotations

import io
import json
import os
import sys


def _load_learner_io():
    """The sibling ``_learner_io.py``, loaded by path (the jail binds both files, nothing else)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_learner_io.py")
    spec = importlib.util.spec_from_file_location("_grader_learner_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_io = _load_learner_io()
exec_sources = _io.exec_sources


# --------------------------------------------------------------------------- the process
def pack(meta, arrays, np) -> bytes:
    """One message: an uncompressed ``.npz`` whose ``__meta__`` member holds the JSON."""
    buffer = io.BytesIO()
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buffer, __meta__=blob, **arrays)
    return buffer.getvalue()


def _block_imports() -> None:
    """A clear message for the course's own packages (in the jail they are not even there)."""

    class _BlockFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.partition(".")[0] in _io.COURSE_PACKAGES:      # importlib too, not only `import`
                raise _io.refused_import(name)
            return None

    sys.meta_path.insert(0, _BlockFinder)


def set_limits(limits) -> None:
    """rlimits of this attempt; address space and CPU counted from what the server already uses."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # oversize writes raise instead of killing us
    vm = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                vm = int(line.split()[1]) * 1024
    used = resource.getrusage(resource.RUSAGE_SELF)
    wanted = [(resource.RLIMIT_AS, vm + int(limits["memory_mb"]) * 2**20),
              (resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime) + int(limits["cpu_s"])),
              (resource.RLIMIT_NPROC, int(limits["nproc"])),
              (resource.RLIMIT_FSIZE, int(limits["fsize_mb"]) * 2**20),
              (resource.RLIMIT_NOFILE, int(limits["nofile"])),
              (resource.RLIMIT_CORE, 0)]
    for which, value in wanted:
        if limits.get("no_as") and which == resource.RLIMIT_AS:
            continue                                 # CUDA maps huge virtual ranges
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def run_job(job_fd, inputs_fd, event_fd, attempt) -> None:
    """The work of one attempt (in a freshly forked process)."""
    import numpy as np
    import torch

    events = os.fdopen(event_fd, "wb", buffering=0)
    main_pid = os.getpid()

    def emit(text, payload=b""):
        if os.getpid() != main_pid:          # a copy made by the learner's os.fork(): silence it
            os._exit(0)
        head = f"{text} {len(payload)}\n" if payload else f"{text}\n"
        try:
            events.write(head.encode() + payload)
        except (OSError, ValueError):
            os._exit(71)

    with os.fdopen(job_fd, "rb") as fh:
        job = json.loads(fh.read())
    with os.fdopen(inputs_fd, "rb") as fh:
        with np.load(io.BytesIO(fh.read()), allow_pickle=False) as npz:
            arrays_in = {name: npz[name] for name in npz.files}
    for name in job.get("preimport", []):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the learner's own import will report it
            pass
    device = torch.device(job.get("device", "cpu"))
    if device.type == "cuda":
        # load CUDA's libraries (cuBLAS, cuSOLVER...) before the limits apply
        warm = torch.eye(8, device=device, dtype=torch.float64) + 0.5
        (warm @ warm).sum().item()
        torch.linalg.svd(warm)[1].sum().item()
        torch.cuda.set_per_process_memory_fraction(float(job.get("gpu_fraction", 0.5)), device)
    torch.set_num_threads(int(job.get("threads", 1)))
    set_limits(job["limits"])
    sys.dont_write_bytecode = True
    _block_imports()

    emit("prepared")
    namespace, errors, learner_files = exec_sources(job["sources"], job.get("continue_on_error", False))
    emit("loaded", pack({"errors": errors}, {}, np))

    exercises = job["exercises"]
    for index in attempt["run"]:
        exercise = exercises[index]
        emit(f"start {index}")
        payload, arrays_out = _io.run_exercise(namespace, exercise, index, arrays_in, device, learner_files,
                                               torch, np)
        emit(f"done {index}", pack(payload, arrays_out, np))
        arrays_out = payload = None
    emit("end")


def _prctl(option, value) -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(option, value, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux
        pass


def _forked_child(sock, request, fds, workdir) -> None:
    """In the freshly forked process: cut every tie to the server, then run the job."""
    import signal

    code = 70
    try:
        sock.close()
        job_fd, inputs_fd, event_fd = fds[:3]
        os.setsid()
        _prctl(1, int(signal.SIGKILL))               # PR_SET_PDEATHSIG: die with the server
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)                     # the learner's prints go nowhere
        keep = sorted({0, 1, 2, job_fd, inputs_fd, event_fd})
        for low, high in zip([2] + keep[3:], keep[3:] + [65536]):
            os.closerange(low + 1, high)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir)
        import tempfile

        tempfile.tempdir = workdir
        run_job(job_fd, inputs_fd, event_fd, request["attempt"])
        code = 0
    except BaseException:  # noqa: BLE001
        pass
    finally:
        os._exit(code)


def _wipe(path) -> None:
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def _kill_strays() -> None:
    """Inside the jail's own process namespace: kill every process but bwrap's init and us."""
    import signal

    keep = {1, os.getpid(), os.getppid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in keep:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def server_main(sock_fd: int, jailed: bool = False) -> None:
    """The fork server. Requests (SOCK_SEQPACKET, JSON): ``{"op": "fork", "attempt": ...}``
    with the job, inputs and event fds attached, answered ``{"pid": N}``; ``{"op": "kill",
    "pid": N}``. When a process ends the server sends ``{"exit": N, "code": C}``. EOF on the
    socket: the grader is gone, so the server kills its children and exits."""
    import select
    import signal
    import socket
    import tempfile

    sock = socket.socket(fileno=sock_fd)
    import numpy  # noqa: F401
    import torch  # noqa: F401
    try:
        import einops  # noqa: F401 - cheap, and common in exercises
    except ImportError:
        pass
    _prctl(4, 0)                                     # PR_SET_DUMPABLE 0: no ptrace, no /proc/N/mem
    scratch = tempfile.gettempdir()

    def send(obj):
        try:
            sock.send(json.dumps(obj).encode())
        except OSError:
            shutdown()

    children: dict[int, str] = {}

    def shutdown():
        for pid in list(children):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        os._exit(0)

    send({"ready": True})
    while True:
        for pid in list(children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
                code = os.waitstatus_to_exitcode(status) if done else None
            except ChildProcessError:
                done, code = True, None
            if done:
                try:
                    os.killpg(pid, signal.SIGKILL)   # anything it left running
                except OSError:
                    pass
                children.pop(pid)
                if jailed and not children:          # anything it left behind, in the jail only
                    _kill_strays()
                for entry in os.listdir(scratch):    # this attempt's files, and any it left
                    if os.path.join(scratch, entry) not in children.values():
                        _wipe(os.path.join(scratch, entry))
                send({"exit": pid, "code": code})
        ready, _, _ = select.select([sock], [], [], 0.02 if children else 0.5)
        if not ready:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 4)
        except OSError:
            shutdown()
        if not data:
            shutdown()
        try:
            request = json.loads(data)
        except ValueError:
            request = {}
        if request.get("op") == "fork" and len(fds) == 3:
            workdir = tempfile.mkdtemp(prefix="attempt-", dir=scratch)
            pid = os.fork()
            if pid == 0:
                _forked_child(sock, request, fds, workdir)
            children[pid] = workdir
            send({"pid": pid})
        elif request.get("op") == "kill" and request.get("pid") in children:
            for kill in (os.killpg, os.kill):
                try:
                    kill(request["pid"], signal.SIGKILL)
                except OSError:
                    pass
        for fd in fds:
            os.close(fd)


def main(argv) -> None:
    jailed = "--jailed" in argv
    argv = [a for a in argv if a != "--jailed"]
    if len(argv) < 3 or argv[1] != "--server":
        print("usage: _child.py --server SOCKET_FD [--jailed] SITE_DIR...", file=sys.stderr)
        raise SystemExit(2)
    for site_dir in argv[3:]:
        if site_dir not in sys.path:
            sys.path.append(site_dir)
    server_main(int(argv[2]), jailed)


if __name__ == "__main__":
    main(sys.argv)
