"""Shared test fixtures.

* Every test gets its own empty progress store (``MECHINTERP_EDU_PROGRESS`` points at a
  temporary file), so no test reads or writes ``~/.mechinterp_edu``.
* Exercise and solution files are imported with ``support.import_file`` (a plain function,
  so module-level code and module-scoped fixtures can use it too).
* ``one_torch_thread`` (module scope): torch on one thread while a module's tests run, for
  modules of tiny matrices, where the thread pool only adds overhead on a shared CPU.
* ``@pytest.mark.cuda`` tests skip cleanly (with the reason) when torch sees no GPU; the
  ``cuda_device`` fixture does the same and returns ``torch.device("cuda")``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_GPU_REASON = "needs a CUDA GPU (torch.cuda.is_available() is False here)"


def pytest_configure(config):
    # A session-wide default before any fixture runs (module- and session-scoped fixtures
    # and subprocesses included); the autouse fixture below gives each test its own file.
    os.environ["MECHINTERP_EDU_PROGRESS"] = str(
        Path(tempfile.mkdtemp(prefix="mechinterp-progress-")) / "progress.json")


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not _has_cuda():
        pytest.skip(NO_GPU_REASON)


@pytest.fixture(autouse=True)
def progress_store(tmp_path_factory, monkeypatch) -> Path:
    """A fresh, empty progress store for each test; the path is returned."""
    path = tmp_path_factory.mktemp("progress") / "progress.json"
    monkeypatch.setenv("MECHINTERP_EDU_PROGRESS", str(path))
    return path


@pytest.fixture
def cuda_device():
    """``torch.device("cuda")``; the test is skipped when there is no GPU."""
    if not _has_cuda():
        pytest.skip(NO_GPU_REASON)
    import torch
    return torch.device("cuda")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with torch on one thread, restoring the count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
