"""A disk cache of each registered exercise's cases and reference answers.

Building a lesson's cases can mean loading a trained model (through TransformerLens),
which costs seconds; the cases are seeded and deterministic, so the grader keeps the
encoded inputs and the normalized reference outputs on disk and reuses them.

* Where: ``$MECHINTERP_EDU_GRADER_CACHE`` (``off`` disables it), else
  ``${XDG_CACHE_HOME:-~/.cache}/mechinterp_edu/grader``.
* Key: the exercise, the device, torch / numpy versions, and the size and mtime of every
  file of the ``mechinterp_edu`` package (code, specs, checkpoints): any change to the
  course's code or models invalidates every entry (old entries are pruned).
* Only exercises registered by a lesson's spec module are cached (not ones defined ad hoc,
  e.g. in tests), and only when their case ``info`` is plain JSON and the arrays are small.
* The sandbox cannot read this folder (it holds reference answers).
* A damaged entry is ignored and rewritten; the cache never makes grading fail.

The ``Case`` objects are not pickled: when terms, mistakes or a spec's own ``compare``
need them, the grader rebuilds them from the cached inputs (same label, args and info).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from mechinterp_edu import cache_paths
from mechinterp_edu.atomic import write_atomically

ENV_VAR = "MECHINTERP_EDU_GRADER_CACHE"
FORMAT = 1
MAX_BYTES = 64 * 2**20


def cache_dir() -> Optional[Path]:
    return cache_paths.cache_dir(ENV_VAR, "grader")   # ~/.cache/mechinterp_edu/grader on Linux


def package_fingerprint() -> str:
    """Hash of (path, size, mtime) of every file in the mechinterp_edu package."""
    import mechinterp_edu
    import torch

    root = Path(mechinterp_edu.__file__).resolve().parent
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}")
    text = "\n".join([f"format {FORMAT}", torch.__version__, np.__version__, *entries])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cacheable(exercise) -> bool:
    from mechinterp_edu.grader import spec

    try:
        registered = any(e is exercise for e in spec.exercises_for(exercise.lesson))
    except (LookupError, ModuleNotFoundError):
        return False
    module = getattr(exercise.cases, "__module__", "") or ""
    return registered and module.startswith("mechinterp_edu.")


def entry_key(exercise, device: str) -> Optional[tuple[Path, str]]:
    folder = cache_dir()
    if folder is None or not cacheable(exercise):
        return None
    try:
        fingerprint = package_fingerprint()
    except Exception:  # noqa: BLE001
        return None
    tag = hashlib.sha256(f"{exercise.lesson}\0{exercise.name}\0{device}".encode()).hexdigest()[:16]
    return folder, f"{fingerprint}-{tag}"


def load(folder: Path, key: str) -> Optional[dict]:
    """{"specs", "labels", "infos", "expected": [meta], "dtypes", "arrays"} or None."""
    meta_path = folder / f"{key}.json"
    npz_path = folder / f"{key}.npz"
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta["arrays"] = arrays
        return meta
    except (OSError, ValueError, KeyError, EOFError):
        return None
    except Exception:  # noqa: BLE001 - a damaged entry (bad zip...) is just a miss
        return None


def store(folder: Path, key: str, specs, labels, infos, expected_metas, dtypes, arrays: dict) -> bool:
    """Write an entry atomically; False (and nothing written) when it is not cacheable."""
    try:
        if sum(a.nbytes for a in arrays.values()) > MAX_BYTES:
            return False
        json.dumps(infos)                       # plain JSON only (tuples come back as lists)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "specs": specs, "labels": labels, "infos": infos,
                "expected": expected_metas, "dtypes": dtypes}
        fingerprint = key.split("-", 1)[0]
        for old in folder.iterdir():            # entries of an older version of the course
            if old.suffix in (".json", ".npz") and not old.name.startswith(fingerprint):
                try:
                    old.unlink()
                except OSError:
                    pass
        for suffix, writer in ((".npz", lambda fh: np.savez(fh, **arrays)),
                               (".json", lambda fh: fh.write(json.dumps(meta).encode()))):
            write_atomically(folder / f"{key}{suffix}", writer, durable=False)
        return True
    except (OSError, TypeError, ValueError):
        return False
