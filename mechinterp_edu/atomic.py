"""Write a file so that a crash or an error mid-write never leaves it half written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def write_atomically(path, write: Callable[[IO[bytes]], object], *, durable: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary binary file beside ``path``, then rename it over ``path``.

    The old file stays intact until the rename, and the temporary file is removed on any error.
    An existing file keeps its permissions. ``durable`` also fsyncs the data and the folder, so
    the new contents survive a power cut (progress, saved work); caches can skip that.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
    return path
