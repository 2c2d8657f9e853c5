"""write_atomically: the old file survives a failed write, no temp file is left, modes are kept."""
import os

import pytest

from mechinterp_edu.atomic import write_atomically


def test_new_content_replaces_old(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_atomically(path, lambda fh: fh.write(b"one"))
    write_atomically(path, lambda fh: fh.write(b"two"), durable=False)
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "progress.json"
    path.write_bytes(b"earlier work")

    def half_then_crash(fh):
        fh.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(path, half_then_crash)
    assert path.read_bytes() == b"earlier work"
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_existing_permissions_are_kept(tmp_path):
    path = tmp_path / "01_tensor_products.py"
    path.write_text("x = 1\n")
    os.chmod(path, 0o644)
    write_atomically(path, lambda fh: fh.write(b"x = 2\n"))
    assert path.stat().st_mode & 0o777 == 0o644 and path.read_text() == "x = 2\n"
