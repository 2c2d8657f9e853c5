"""Packaging: pyproject.toml declares real dependency ranges that admit the exact pins of
requirements.txt and cover every third-party import of the package; ``pip install .`` into
an empty virtual environment gives a package that imports, runs its CLI, finds its lesson
text and loads its checkpoints."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_dependencies_are_ranges_that_admit_the_pins():
    declared, pins = _declared(), _pins()
    assert len(declared) >= 10, "pyproject.toml must declare the course's dependencies"
    for name, req in declared.items():
        assert str(req.specifier), f"{name}: give a version range"
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{name}: the pin {pins[name]} is outside the declared range {req.specifier}"
    # the CPU torch wheel's local version satisfies the range too
    assert declared["torch"].specifier.contains("2.13.0+cpu")


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in (ROOT / "mechinterp_edu").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in stdlib and m not in {"mechinterp_edu", "__future__"}}


def test_every_third_party_import_is_declared():
    declared = set(_declared())
    dists = packages_distributions()
    optional = {"playwright", "pytest"}          # test-only ("test" extra)
    missing = []
    for module in sorted(_third_party_imports() - optional):
        names = {canonicalize_name(d) for d in dists.get(module, [])}
        if not names & declared:
            missing.append(f"{module} (distribution {sorted(names) or '?'})")
    assert not missing, f"imported but not in pyproject.toml dependencies: {missing}"


def _copy_project(dest: Path) -> Path:
    """The files a build reads (the build writes build/ and *.egg-info; keep the checkout clean)."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "requirements.txt"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mechinterp_edu", "lessons", "exercises"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def _empty_venv(tmp_path):
    """A venv that sees this environment's third-party packages through a .pth file (so nothing
    is downloaded) but not mechinterp_edu (an editable install's finder is not active on a .pth
    path). --without-pip: pip and a current setuptools come through the .pth too (a venv's own
    bundled setuptools may be too old to build wheels offline)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "course_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"

    def run(*args, cwd, extra_env=None):
        return subprocess.run([str(a) for a in args], cwd=cwd, env={**env, **(extra_env or {})},
                              capture_output=True, text=True)

    return py, site, run


@pytest.mark.slow
def test_the_notebooks_install_cell_installs_the_course(tmp_path):
    """The first cell of every notebook, run where mechinterp_edu is missing, finds the checkout
    around the notebook, pip-installs it (offline here) and the import works without a restart."""
    from mechinterp_edu.notebook_exercises import INSTALL_CELL

    py, site, run = _empty_venv(tmp_path)
    project = _copy_project(tmp_path / "project")
    (project / "notebooks").mkdir()
    cell = INSTALL_CELL + "\nimport mechinterp_edu\nprint('@@', mechinterp_edu.__file__)\n"
    result = run(py, "-c", cell, cwd=project / "notebooks",
                 extra_env={"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"@@ {site}" in result.stdout
    again = run(py, "-c", cell, cwd=tmp_path)          # installed now: the cell only imports
    assert again.returncode == 0 and f"@@ {site}" in again.stdout, again.stderr[-2000:]


@pytest.mark.slow
def test_pip_install_into_an_empty_venv(tmp_path):
    """``pip install --no-deps --no-index`` builds and installs the package into an empty venv."""
    py, site, run_in = _empty_venv(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args, cwd=elsewhere):
        return run_in(*args, cwd=cwd)

    before = run(py, "-c", "import mechinterp_edu")
    assert before.returncode != 0, "the empty venv must not see mechinterp_edu before the install"
    project = _copy_project(tmp_path / "project")
    installed = run(py, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
                    "--quiet", project)
    assert installed.returncode == 0, installed.stderr[-3000:]

    helped = run(py, "-m", "mechinterp_edu", "--help")
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "usage" in helped.stdout.lower()
    probe = run(py, "-c", "\n".join([
        "import mechinterp_edu, mechinterp_edu.course as c",
        "from mechinterp_edu.lesson_source import load_lesson",
        "from mechinterp_edu.models.zoo import load_model",
        "from importlib.metadata import requires",
        "out = {'file': mechinterp_edu.__file__, 'root': str(c.ROOT)}",
        "out['found'] = all(l.source_path.is_file() and l.exercise_path.is_file() for l in c.LESSONS)",
        "text = [b.text for s in load_lesson(3).steps for b in s.blocks if b.kind == 'markdown']",
        "out['filled'] = bool(text) and not any('{{' in t for t in text)",
        "out['model'] = type(load_model('skip_trigrams', device='cpu')).__name__",
        "out['requires'] = len([r for r in requires('mechinterp-edu') if 'extra' not in r])",
        "print('@@', repr(out))",
    ]))
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = ast.literal_eval(next(l for l in probe.stdout.splitlines() if l.startswith("@@ "))[3:])
    assert out["file"].startswith(str(site)), out
    assert out["root"] == str(site / "mechinterp_edu" / "_course"), out
    assert out["found"] and out["filled"], out
    assert out["model"], out
    assert out["requires"] == len(_declared()), out
    check = run(py, "-m", "pip", "check")
    problems = [line for line in check.stdout.splitlines() if line.lower().startswith("mechinterp-edu")]
    assert not problems, problems
