"""Isolation of learner code with bubblewrap (``bwrap``, Debian package ``bubblewrap``).

The grading child runs in a jail that sees only read-only binds of what Python and torch
need (``/usr``, the Python installation and its site-packages, the child script), a
size-limited tmpfs as the only writable place, no network (``--unshare-net``: only its own
loopback), its own process namespace, and dies with the grader (``--die-with-parent``).
The child adds rlimits (address space, CPU, processes/threads, file size, open files).

Where bwrap is missing or the kernel refuses user namespaces, :func:`isolation` says why;
self-grading then falls back to a plain child process with the same rlimits and says once,
in one line, that it is not isolated. ``MECHINTERP_GRADER_NO_BWRAP=1`` forces the fallback.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Optional

from mechinterp_edu.grader._learner_io import COURSE_PACKAGES as MASKED   # never in the jail, even if installed

CHILD_SCRIPT = Path(__file__).resolve().with_name("_child.py")
JAIL_CHILD = "/grader/_child.py"


def python_dirs() -> list[str]:
    """The Python installation: prefix, base prefix, the executable's folder."""
    dirs = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
            os.path.realpath(os.path.dirname(sys.executable)), os.path.dirname(sys.executable)}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        dirs.add(os.path.realpath(sysconfig.get_paths()[key]))
    return sorted(dirs)


def site_dirs() -> list[str]:
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    dirs += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    out = []
    for d in dirs:
        if os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no message"


def bwrap_args(tmpfs_mb: int = 256) -> list[str]:
    """The bwrap command line, up to and excluding ``--`` and the program."""
    exe = shutil.which("bwrap") or "bwrap"
    args = [exe, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--hostname", "grader", "--proc", "/proc", "--dev", "/dev",
            "--size", str(tmpfs_mb * 2**20), "--tmpfs", "/tmp", "--chdir", "/tmp",
            "--ro-bind", "/usr", "/usr"]
    for top in ("/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    bound: list[str] = []
    for path in python_dirs() + site_dirs():
        if os.path.exists(path) and not any((path + "/").startswith(b + "/") for b in bound):
            bound = [b for b in bound if not (b + "/").startswith(path + "/")] + [path]
    for path in bound:
        args += ["--ro-bind", path, path]
    for folder in site_dirs():
        for name in MASKED:
            if os.path.isdir(os.path.join(folder, name)):
                args += ["--tmpfs", os.path.join(folder, name)]
    if glob.glob("/dev/nvidia*"):                       # CUDA: the devices and what the driver reads
        for dev in glob.glob("/dev/nvidia*"):
            args += ["--dev-bind", dev, dev]
        args += ["--ro-bind", "/sys", "/sys"]
        if os.path.isdir("/proc/driver/nvidia"):
            args += ["--ro-bind", "/proc/driver/nvidia", "/proc/driver/nvidia"]
    for script in (CHILD_SCRIPT, CHILD_SCRIPT.with_name("_learner_io.py")):
        args += ["--ro-bind", str(script), f"/grader/{script.name}"]
    return args


@functools.lru_cache(maxsize=1)
def isolation() -> tuple[bool, str]:
    """(True, "") when learner code can run in a bwrap jail here, else (False, why not)."""
    if os.environ.get("MECHINTERP_GRADER_NO_BWRAP"):
        return False, "MECHINTERP_GRADER_NO_BWRAP is set"
    if shutil.which("bwrap") is None:
        return False, "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run(bwrap_args(8) + ["--", sys.executable, "-I", "-S", "-c", "pass"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap could not run ({exc})"
    if done.returncode != 0:
        return False, f"bwrap refused to start ({_tail(done.stderr)})"
    return True, ""


def nproc_limit(threads: int) -> int:
    """RLIMIT_NPROC counts every process and thread of the user: what runs now plus room for
    torch's threads. (The kernel does not apply it to root.)"""
    uid, count = os.getuid(), 0
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            text = Path(status).read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count + 2 * threads + 64


MAX_TASKS = 256                 # processes and threads in one jail, when a pids cgroup is available


def pids_cgroup_base(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> Optional[str]:
    """Where a pids cgroup can be made: the v1 ``pids`` hierarchy, or (cgroup v2) this process's
    own cgroup when the pids controller is available in it (``cgroup.controllers``: a delegated
    cgroup, as ``systemd-run --scope -p Delegate=yes`` makes). None when neither is there.
    (The v2 path is checked on a model of the files only: the machines here run cgroup v1.)"""
    v1 = os.path.join(root, "pids")
    if os.path.isfile(os.path.join(v1, "cgroup.procs")):
        return v1
    try:
        with open(self_cgroup) as fh:
            own = next((line[3:].strip() for line in fh if line.startswith("0::")), None)
        if own is None:
            return None
        base = os.path.join(root, own.lstrip("/"))
        with open(os.path.join(base, "cgroup.controllers")) as fh:
            return base if "pids" in fh.read().split() else None
    except OSError:
        return None


def _enable_pids_for_children(base: str) -> None:
    """cgroup v2: children get a pids.max file only once their parent's subtree_control names
    pids (pids, unlike memory, may be enabled in a cgroup that holds processes)."""
    control = os.path.join(base, "cgroup.subtree_control")
    if os.path.isfile(control):
        with open(control) as fh:
            if "pids" not in fh.read().split():
                with open(control, "w") as out:
                    out.write("+pids")


def task_cgroup() -> Optional[str]:
    """A fresh pids cgroup capped at MAX_TASKS, for root only: the kernel does not apply
    RLIMIT_NPROC to root, so there the cgroup caps processes and threads. None if unavailable."""
    if os.geteuid() != 0:
        return None
    base = pids_cgroup_base()
    if base is None:
        return None
    for stale in glob.glob(os.path.join(base, "mechinterp-grader-*")):     # left by killed graders
        owner = os.path.basename(stale).split("-")[2]
        if not os.path.exists(f"/proc/{owner}"):
            remove_cgroup(stale)
    path = os.path.join(base, f"mechinterp-grader-{os.getpid()}-{len(os.listdir(base))}")
    try:
        _enable_pids_for_children(base)
        os.mkdir(path)
        Path(path, "pids.max").write_text(str(MAX_TASKS))
    except OSError:
        return None
    return path


def remove_cgroup(path: Optional[str]) -> None:
    import time

    for _ in range(40 if path else 0):             # empty once the jail's processes are reaped
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def describe(isolated: bool, why: str) -> Optional[str]:
    if isolated:
        return None
    return (f"grader: learner code runs in a plain child process with rlimits, NOT isolated "
            f"({why}; install bubblewrap to isolate it)")
