"""The sandbox child: runs a learner file's exercises in separate, locked-down processes.

This file is standalone on purpose: it imports nothing from ``mechinterp_edu`` (the
sandbox forbids that), so the parent starts it by path, as a *fork server*::

    python -I -S -B _child.py --server SOCKET_FD SITE_DIR [SITE_DIR ...]

The server imports numpy / torch / einops once (the slow part, ~1-2 s), then forks one
fresh process per attempt at grading a file (:func:`server_main`). It never runs
learner code itself and never touches CUDA, so forking is safe and takes milliseconds.

In each forked process (:func:`run_job`), protocol with the parent
(:mod:`mechinterp_edu.grader.sandbox`):

1. It reads ``IO_DIR/job.json`` (sources, exercises) and ``IO_DIR/inputs.npz`` (every
   tensor argument of every case, loaded with ``allow_pickle=False``). Its limits and
   sandbox rules come with the fork request itself; the learner's code can write only in
   ``IO_DIR/work`` (its cwd) and this attempt's ``IO_DIR/out_N``.
2. It pre-imports the heavy libraries the submission names (transformer_lens...), sets
   its memory / file-size / CPU limits, installs a seccomp filter (no new processes, no
   exec, no ptrace, no signals to other processes) and an audit hook (no imports of
   ``mechinterp_edu`` / ``solutions``, no reading of the course's files, no writing
   outside its temp folder, no subprocess / ctypes / sockets), writes ``prepared`` on
   the event pipe, and runs the learner's code, then writes ``loaded``.
3. Per exercise: ``start K``, then ``OUT/ex_K.json`` (plain JSON) and ``OUT/ex_K.npz``
   (plain arrays) are written atomically, then ``done K``. At the end ``end``.

The process never sees a reference answer: it only runs the learner's function on the
inputs and reports what came back. Everything it reports is re-validated by the
parent, which compares against its own reference, so nothing the learner's code does
here (patching torch, printing "passed", writing files) can turn into a pass.

The encoders below (:func:`encode_output`, :func:`run_cases`, :func:`exec_sources`)
are also imported by the parent for the trusted in-process mode (``sandbox=False``).
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

MAX_ELEMENTS = 20_000_000          # largest array a result may hold
MAX_ITEMS = 200_000                # largest set / list result
MAX_TEXT = 1500                    # longest message / traceback kept


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
        return {"k": "rows", "container": type(value).__name__, "rows": rows}
    raise ValueError(f"unknown output kind {kind!r}")


# --------------------------------------------------------------------------- errors
def describe_exception(exc, learner_files) -> dict:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in learner_files]
    try:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException:  # noqa: BLE001
        text = type(exc).__name__
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
    module.__dict__["__builtins__"] = builtins
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
            break
    return results, arrays


# --------------------------------------------------------------------------- the sandbox
def _install_guard(blocked_dirs, blocked_modules, write_dirs, ancestor_dirs):
    """Audit hook + meta-path finder: what the learner's code may not do."""
    import posixpath

    realpath = posixpath.realpath
    my_pid = os.getpid()
    blocked_dirs = tuple(d.rstrip("/") + "/" for d in blocked_dirs)
    write_dirs = tuple(d.rstrip("/") + "/" for d in write_dirs) + ("/dev/null/",)
    ancestors = set(ancestor_dirs)
    blocked_modules = tuple(blocked_modules)

    def module_blocked(name) -> bool:
        name = str.__getitem__(name, slice(None)) if isinstance(name, str) else repr(name)
        return any(name == m or name.startswith(m + ".") for m in blocked_modules)

    def deny(what):
        raise PermissionError(f"not allowed in the grader's sandbox: {what}")

    ancestors.update({f"/proc/{my_pid}", "/proc/self", "/proc/thread-self"})
    import pathlib

    safe_path_types = (pathlib.PosixPath, pathlib.PurePosixPath)

    def check_path(path, writing, low_level=False):
        # Exact types only: C converts a path object before auditing it, so a custom object
        # (or a str subclass with overridden methods) could show this hook another path.
        if type(path) is int:
            return
        if path is None:                                     # os.listdir() etc.: the cwd
            path = "."
        if isinstance(path, str):
            path = str.__getitem__(path, slice(None))        # an exact str copy
        elif isinstance(path, bytes):
            path = bytes.__getitem__(path, slice(None)).decode("utf-8", "surrogateescape")
        elif type(path) in safe_path_types:
            path = str(path)
        else:
            deny(f"a path given as {type(path).__name__} (use a plain string)")
        if low_level and not path.startswith("/"):
            # os.open(relative, dir_fd=...) resolves against a folder the hook cannot see
            deny(f"os.open of the relative path {path!r} (use an absolute path)")
        full = realpath(path)
        if full.startswith("/proc/"):
            part = full[6:].split("/", 1)[0]
            if part.isdigit() and int(part) != my_pid:
                deny(f"reading another process ({full})")
        if (full + "/").startswith(blocked_dirs):
            deny(f"opening {path!r} (the course's reference code and solutions are off limits)")
        if full in ancestors:
            deny(f"opening the folder {path!r}")
        if writing and not (full + "/").startswith(write_dirs):
            deny(f"writing {path!r} (only the sandbox's own temp folder is writable)")

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    forbidden_prefixes = ("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                          "os.forkpty", "ctypes.", "socket.", "pty.", "os.system", "os.startfile",
                          "os.chroot", "os.setuid", "os.setgid", "os.setreuid", "os.setregid",
                          "os.chdir", "os.fchdir", "os.symlink", "os.link", "os.mknod",
                          "os.mkfifo", "resource.setrlimit", "resource.prlimit",
                          "winreg.", "mmap.__new__", "_posixsubprocess", "sys.remote_exec", "os.setns",
                          "os.unshare", "os.pidfd_open", "os.memfd_create", "signal.pthread_kill",
                          "os.setpgid", "os.setsid", "os.setpriority")
    path_mutations = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                      "os.utime", "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags",
                      "os.lchmod", "os.lchown", "shutil.rmtree", "shutil.copyfile", "shutil.copytree",
                      "shutil.move", "shutil.chown", "shutil.copymode", "shutil.copystat",
                      "os.scandir", "os.listdir", "os.walk", "os.fwalk", "glob.glob"}
    listing = {"os.scandir", "os.listdir", "os.walk", "os.fwalk", "glob.glob"}

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                      (isinstance(flags, int) and bool(flags & write_flags))
            check_path(path, writing, low_level=mode is None)
        elif event == "import":
            if module_blocked(args[0]):
                raise ImportError(f"importing {args[0]!r} is not allowed in graded code: write the "
                                  "exercise yourself (the grader's sandbox blocks the course's "
                                  "reference code and solutions)")
        elif event in ("os.kill", "os.killpg"):
            if event == "os.killpg" or args[0] not in (my_pid, 0):
                deny(f"{event}{tuple(args)!r}")
        elif event in path_mutations:
            if not args:
                return
            check_path(args[0], event not in listing)
            if event in ("shutil.copyfile", "shutil.copytree", "shutil.move") and len(args) > 1:
                check_path(args[1], True)
        elif event == "os.rename":
            check_path(args[0], True)
            check_path(args[1], True)
        elif event.startswith(forbidden_prefixes):
            deny(event)

    class _BlockFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if module_blocked(name):
                raise ImportError(f"importing {name!r} is not allowed in graded code: write the "
                                  "exercise yourself (the grader's sandbox blocks the course's "
                                  "reference code and solutions)")
            return None

    sys.meta_path.insert(0, _BlockFinder)
    sys.addaudithook(hook)


def install_seccomp() -> str:
    """Kernel-level second wall (Linux x86_64 / aarch64): no new processes, no exec, no
    ptrace, no signals to other processes. Python's audit hooks miss a few C paths (e.g.
    ``_posixsubprocess.fork_exec``); the kernel does not. Threads (clone with
    CLONE_THREAD) stay allowed. Returns "" on success, else why it was skipped."""
    import ctypes
    import platform
    import struct

    machine = platform.machine()
    if not sys.platform.startswith("linux"):
        return f"seccomp is Linux-only (this is {sys.platform})"
    if machine == "x86_64":
        arch = 0xC000003E
        nr = {"clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "ptrace": 101,
              "tkill": 200, "tgkill": 234, "execveat": 322, "process_vm_readv": 310,
              "process_vm_writev": 311, "clone3": 435, "pidfd_open": 434,
              "pidfd_send_signal": 424, "pidfd_getfd": 438, "unshare": 272, "setns": 308,
              "io_uring_setup": 425, "open_by_handle_at": 304, "mount": 165, "chroot": 161}
    elif machine in ("aarch64", "arm64"):
        arch = 0xC00000B7
        nr = {"clone": 220, "execve": 221, "kill": 129, "ptrace": 117, "tkill": 130,
              "tgkill": 131, "execveat": 281, "process_vm_readv": 270, "process_vm_writev": 271,
              "clone3": 435, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438,
              "unshare": 97, "setns": 268, "io_uring_setup": 425, "open_by_handle_at": 265,
              "mount": 40, "chroot": 51}
    else:
        return f"no seccomp filter for {machine}"
    pid = os.getpid()
    ld_w, jeq_k, jset_k, ret_k = 0x20, 0x15, 0x45, 0x06
    allow = 0x7FFF0000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    prog = []   # (code, jt, jf, k); jumps are relative, filled in below

    def op(code, k, jt=0, jf=0):
        prog.append([code, jt, jf, k])

    op(ld_w, 4)                                     # arch
    op(jeq_k, arch, 1, 0)
    op(ret_k, eperm)                                # a foreign ABI (i386 via int 0x80): refuse
    op(ld_w, 0)                                     # syscall number
    op(0x35, 0x40000000, 0, 1)                      # jge: x32 ABI numbers: refuse
    op(ret_k, eperm)
    denied = [n for name, n in nr.items() if name not in ("clone", "clone3", "kill", "tkill", "tgkill")]
    for number in denied:
        op(jeq_k, number, 0, 1)
        op(ret_k, eperm)
    op(jeq_k, nr["clone3"], 0, 1)
    op(ret_k, enosys)                               # glibc falls back to clone() for threads
    op(jeq_k, nr["clone"], 0, 4)
    op(ld_w, 16)                                    # clone flags (low 32 bits of args[0])
    op(jset_k, 0x00010000, 0, 1)                    # CLONE_THREAD
    op(ret_k, allow)
    op(ret_k, eperm)
    for name in ("kill", "tkill", "tgkill"):
        op(jeq_k, nr[name], 0, 4)
        op(ld_w, 16)                                # first argument: pid / tid / tgid
        op(jeq_k, pid, 0, 1)
        op(ret_k, allow)
        op(ret_k, eperm)
    op(ret_k, allow)
    raw = b"".join(struct.pack("HBBI", code, jt, jf, k) for code, jt, jf, k in prog)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        return f"prctl(NO_NEW_PRIVS) failed (errno {ctypes.get_errno()})"
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        return f"prctl(SECCOMP) failed (errno {ctypes.get_errno()})"
    return ""


LANDLOCK_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/opt", "/sys",
                        "/proc/driver/nvidia")
LANDLOCK_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
LANDLOCK_PROC = ("/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys/kernel",
                 "/proc/sys/vm")


def install_landlock(read_dirs, write_dirs) -> str:
    """Kernel-level file access control (Linux Landlock, any user): from now on this process may
    read only ``read_dirs`` (Python, system libraries...) and write only ``write_dirs``.
    Unlike the audit hook, this also covers files opened by C / C++ code (e.g.
    ``torch.from_file``), raw devices and anything else not listed: the course's folder, the
    home folder, other students' work. Returns "" on success, else why it was skipped."""
    import ctypes
    import glob

    if not sys.platform.startswith("linux"):
        return f"Landlock is Linux-only (this is {sys.platform})"
    libc = ctypes.CDLL(None, use_errno=True)
    create, add_rule, restrict = 444, 445, 446          # the same numbers on x86_64 and arm64
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return f"Landlock is not available (errno {ctypes.get_errno()})"
    execute, write_file, read_file, read_dir = 1, 2, 4, 8
    make_remove = sum(1 << b for b in range(4, 13))     # remove dir/file, make char/dir/reg/sock/fifo/block/sym
    handled = execute | write_file | read_file | read_dir | make_remove
    if abi >= 2:
        handled |= 1 << 13                              # refer (rename/link across folders)
    if abi >= 3:
        handled |= 1 << 14                              # truncate
    file_rights = execute | write_file | read_file | (1 << 14 if abi >= 3 else 0)
    read_rights = execute | read_file | read_dir

    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        return f"landlock_create_ruleset failed (errno {ctypes.get_errno()})"

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    def allow(path, rights):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not os.path.isdir(path):
                rights &= file_rights
            rule = PathBeneath(rights & handled, fd)
            if libc.syscall(add_rule, ruleset, ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)):
                failed.append(f"{path} (errno {ctypes.get_errno()})")
        finally:
            os.close(fd)

    failed = []
    try:
        for path in list(read_dirs) + list(LANDLOCK_SYSTEM_DIRS) + list(LANDLOCK_PROC):
            allow(path, read_rights)
        for path in LANDLOCK_DEVICES:
            allow(path, read_rights | write_file)
        for path in glob.glob("/dev/nvidia*"):
            allow(path, read_rights | write_file)
        for path in write_dirs:
            allow(path, handled)
        if failed:
            print(f"[grader sandbox] file access rules not added for: {', '.join(failed)}",
                  file=sys.stderr)
        if libc.prctl(38, 1, 0, 0, 0) != 0:             # PR_SET_NO_NEW_PRIVS
            return f"prctl(NO_NEW_PRIVS) failed (errno {ctypes.get_errno()})"
        if libc.syscall(restrict, ruleset, ctypes.c_uint32(0)) != 0:
            return f"landlock_restrict_self failed (errno {ctypes.get_errno()})"
    finally:
        os.close(ruleset)
    return ""


def disable_native_file_readers(torch) -> None:
    """Without Landlock, the audit hook cannot see files opened by C++: switch off torch's
    functions that read a named file that way (a fallback; Landlock is the real wall)."""

    def refuse(*args, **kwargs):
        raise PermissionError("Permission denied: reading files from C++ (torch.from_file, "
                              "torch.jit.load, ...) is not allowed in the grader's sandbox")

    targets = [(torch, "from_file"), (torch._C._VariableFunctions, "from_file"),
               (torch._C._VariableFunctionsClass, "from_file"), (torch.ops.aten, "from_file"),
               (torch.UntypedStorage, "from_file"), (torch.TypedStorage, "from_file"),
               (torch._C, "import_ir_module"), (torch._C, "_load_for_lite_interpreter"),
               (torch._C, "_load_for_lite_interpreter_from_buffer"), (torch.ops, "load_library")]
    for name in dir(torch):
        if name.endswith("Storage") and hasattr(getattr(torch, name), "from_file"):
            targets.append((getattr(torch, name), "from_file"))
    for owner, name in targets:
        try:
            if hasattr(owner, name):
                setattr(owner, name, refuse)
        except (AttributeError, TypeError):
            pass


def _set_limits(memory_mb, fsize_mb, cpu_s=0):
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # oversize writes raise instead of killing us
    data_now = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    data_now = int(line.split()[1]) * 1024
    except OSError:
        pass
    limits = [(resource.RLIMIT_DATA, data_now + memory_mb * 2**20),
              (resource.RLIMIT_FSIZE, fsize_mb * 2**20),
              (resource.RLIMIT_CORE, 0)]
    if cpu_s:
        # a backstop only: the parent's wall-clock timeouts come first
        used = resource.getrusage(resource.RUSAGE_SELF)
        limits.append((resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime) + int(cpu_s)))
    for which, value in limits:
        try:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, hard if hard != resource.RLIM_INFINITY else value))
        except (ValueError, OSError):
            pass


def _write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def _write_npz_atomic(path, arrays, np):
    tmp = path + ".tmp.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def _prctl_deathsig() -> None:
    """Die with SIGKILL when our parent dies (Linux); no orphans if the grader is killed."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the parent's kill still applies
        pass


def run_job(io_dir, event_fd, attempt, guard) -> None:
    """The sandboxed work of one attempt (runs in a freshly forked process). ``guard`` (limits,
    blocked paths, writable folders) comes with the fork request from the parent, never from
    a file the learner's code could have rewritten in an earlier attempt."""
    import numpy as np
    import torch

    events = os.fdopen(event_fd, "w", buffering=1)

    def emit(text):
        try:
            events.write(text + "\n")
            events.flush()
        except (OSError, ValueError):
            pass

    with open(os.path.join(io_dir, "job.json")) as fh:
        job = json.load(fh)
    out_dir = os.path.join(io_dir, attempt["out"])
    os.makedirs(out_dir, exist_ok=True)
    with np.load(os.path.join(io_dir, "inputs.npz"), allow_pickle=False) as npz:
        arrays_in = {name: npz[name] for name in npz.files}

    for name in job.get("preimport", []):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the learner's own import will report it
            pass
    device = torch.device(job.get("device", "cpu"))
    if device.type == "cuda":
        # initialise CUDA and load its libraries (cuBLAS, cuSOLVER...) before the sandbox closes
        warm = torch.eye(8, device=device) + 0.5
        for dtype in (torch.float32, torch.float64):
            w = warm.to(dtype)
            (w @ w).sum().item()
            torch.einsum("ij,jk->ik", w, w).softmax(-1).sum().item()
            torch.linalg.svd(w)[1].sum().item()
        torch.cuda.synchronize(device)
        try:
            torch.cuda.set_per_process_memory_fraction(float(job.get("gpu_fraction", 0.5)), device)
        except Exception:  # noqa: BLE001
            pass
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    _set_limits(int(guard["memory_mb"]), int(guard["fsize_mb"]), int(guard["cpu_s"]))
    sys.dont_write_bytecode = True
    for layer, skipped in (("file access rules", install_landlock(guard["read_dirs"], guard["write_dirs"])),
                           ("system call filter", install_seccomp())):
        if skipped:
            print(f"[grader sandbox] {layer} not installed: {skipped}", file=sys.stderr)
            if layer == "file access rules":
                disable_native_file_readers(torch)
    _install_guard(guard["blocked_dirs"], guard["blocked_modules"], guard["write_dirs"],
                   guard["ancestor_dirs"])

    emit("prepared")
    namespace, errors, learner_files = exec_sources(job["sources"], job.get("continue_on_error", False))
    _write_json_atomic(os.path.join(out_dir, "module.json"), {"errors": errors})
    emit("loaded")

    exercises = job["exercises"]
    for index in attempt["run"]:
        exercise = exercises[index]
        emit(f"start {index}")
        fn = namespace.get(exercise["name"])
        if fn is None:
            payload = {"missing": True, "cases": []}
            arrays_out = {}
        elif not callable(fn):
            payload = {"missing": False, "not_callable": _type_name(fn), "cases": []}
            arrays_out = {}
        else:
            cases, arrays_out = run_cases(fn, exercise["cases"], exercise["output"], arrays_in,
                                          device, learner_files, torch, np, key=f"e{index}")
            payload = {"missing": False, "cases": cases}
        _write_npz_atomic(os.path.join(out_dir, f"ex_{index}.npz"), arrays_out, np)
        _write_json_atomic(os.path.join(out_dir, f"ex_{index}.json"), payload)
        arrays_out = None
        emit(f"done {index}")
    emit("end")


def _forked_child(sock, request, fds) -> None:
    """In the freshly forked process: cut every tie to the server, then run the job."""
    code = 70
    try:
        sock.close()
        event_fd = fds[0]
        for fd in fds[1:]:
            os.close(fd)
        os.setsid()
        _prctl_deathsig()
        devnull = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (devnull, out, err):
            if fd > 2:
                os.close(fd)
        # nothing but stdio and the event pipe stays open: the learner cannot reach the server
        os.closerange(3, event_fd)
        os.closerange(event_fd + 1, 65536)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        os.environ["HOME"] = request["cwd"]
        os.environ["TMPDIR"] = request["cwd"]
        import tempfile

        tempfile.tempdir = request["cwd"]            # the server may have cached its own
        run_job(request["io_dir"], event_fd, request["attempt"], request["guard"])
        code = 0
    except BaseException:  # noqa: BLE001
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def server_main(sock_fd: int) -> None:
    """The fork server: import torch once, then fork one sandboxed process per request.

    Requests (one SOCK_SEQPACKET message each, JSON): ``{"op": "fork", ...}`` with the
    event pipe's write end attached (SCM_RIGHTS), answered ``{"pid": N}``;
    ``{"op": "kill", "pid": N}``. When a forked process ends the server sends
    ``{"exit": N, "code": C}`` (C < 0: killed by signal -C). EOF on the socket: the
    grader is gone, so the server kills its children and exits.
    """
    import select
    import signal
    import socket

    # No PR_SET_PDEATHSIG here: Linux sends it when the *thread* that started us exits, and
    # the grader may be called from short-lived threads (each Streamlit run is one). The
    # parent's death is seen instead as EOF on the socket below (the kernel closes its end).
    sock = socket.socket(fileno=sock_fd)
    import numpy  # noqa: F401
    import torch  # noqa: F401
    try:
        import einops  # noqa: F401 - cheap, and common in exercises
    except ImportError:
        pass

    def send(obj):
        try:
            sock.send(json.dumps(obj).encode())
        except OSError:
            shutdown()

    children: set[int] = set()

    def shutdown():
        for pid in list(children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)

    send({"ready": True})
    while True:
        for pid in list(children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)
                send({"exit": pid, "code": None})
                continue
            if done:
                children.discard(pid)
                send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
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
            for fd in fds:
                os.close(fd)
            continue
        if request.get("op") == "fork" and fds:
            pid = os.fork()
            if pid == 0:
                _forked_child(sock, request, fds)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            send({"pid": pid})
        elif request.get("op") == "kill":
            pid = request.get("pid")
            if pid in children:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        elif request.get("op") == "stop":
            shutdown()
        else:
            for fd in fds:
                os.close(fd)


def main(argv) -> None:
    # python -I -S -B _child.py --server SOCKET_FD SITE_DIR...
    if len(argv) < 3 or argv[1] != "--server":
        print("usage: _child.py --server SOCKET_FD SITE_DIR...", file=sys.stderr)
        raise SystemExit(2)
    for site_dir in argv[3:]:
        if site_dir not in sys.path:
            sys.path.append(site_dir)
    server_main(int(argv[2]))


if __name__ == "__main__":
    main(sys.argv)
