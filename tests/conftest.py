"""Shared test fixtures.

* Every test gets its own empty progress store (``MECHINTERP_EDU_PROGRESS`` points at a
  temporary file), and the grader's case cache lives in the system's temporary folder
  (``MECHINTERP_EDU_GRADER_CACHE``; kept between runs, it is keyed on the package's files),
  so no test reads or writes ``~/.mechinterp_edu`` or ``~/.cache/mechinterp_edu``.
* Exercise and solution files are imported with ``support.import_file`` (a plain function,
  so module-level code and module-scoped fixtures can use it too).
* ``one_torch_thread`` (module scope): torch on one thread while a module's tests run, for
  modules of tiny matrices, where the thread pool only adds overhead on a shared CPU.
* Every sympy step of the lessons is proven once per test run (``prove_each_step_once``):
  ``framework.check_step`` keeps each lesson step's verdict in a folder shared by the xdist
  workers, so the per-step tests, the lesson tests, the app and the CLI read it after the first proof.
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
    os.environ["MECHINTERP_EDU_GRADER_CACHE"] = os.path.join(tempfile.gettempdir(),
                                                             "mechinterp-edu-tests-grader-cache")


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


@pytest.fixture(scope="session", autouse=True)
def prove_each_step_once(tmp_path_factory):
    """Memoise ``check_step`` for the lessons' own steps, across xdist workers (filelock per step).

    Keyed by "derivation:step"; only steps that belong to a lesson's DERIVATIONS are memoised
    (a perturbed or fixture step is a new object and is always proven)."""
    import hashlib
    import json

    from filelock import FileLock

    from mechinterp_edu import derivations as package
    from mechinterp_edu.course import LESSONS, parts
    from mechinterp_edu.derivations import framework

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent                   # this run's folder, common to every worker
    folder = shared / "sympy-proofs"
    folder.mkdir(exist_ok=True)
    real = framework.check_step
    course = tuple(LESSONS)                      # the real course, whatever a test adds later
    lesson_steps: dict[int, tuple[object, str]] = {}   # id(step) -> (step, key); holding the step keeps its id

    def check_step(derivation, step):
        if not lesson_steps:
            lesson_steps.update({id(s): (s, f"{d.name}:{s.name}")
                                 for lesson in course for d in parts(lesson, "derivations") for s in d.steps})
        entry = lesson_steps.get(id(step))
        if entry is None or entry[0] is not step:
            return real(derivation, step)
        key = entry[1]
        path = folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
        with FileLock(str(path) + ".lock"):
            if path.exists():
                return framework.StepResult(**json.loads(path.read_text(encoding="utf-8")))
            result = real(derivation, step)
            path.write_text(json.dumps(result.__dict__), encoding="utf-8")
            return result

    patch = pytest.MonkeyPatch()
    patch.setattr(framework, "check_step", check_step)
    patch.setattr(package, "check_step", check_step)
    yield
    patch.undo()
