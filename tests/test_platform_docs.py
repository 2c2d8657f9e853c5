"""README, requirements and the set-up files say what a newcomer needs, and agree with the code."""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata

import pytest

from mechinterp_edu.cli import _build_parser
from mechinterp_edu.course import LESSONS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else ""
REQUIREMENTS = (ROOT / "requirements.txt").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_pin_torch_and_everything():
    pins = _pins()
    assert pins["torch"] == "2.13.0"
    assert "torch==2.13.0" in REQUIREMENTS.splitlines()
    for needed in ("transformer-lens", "streamlit", "sympy", "nbformat", "nbclient", "ipykernel",
                   "pytest", "pytest-xdist", "altair", "pyyaml"):
        assert needed in pins, f"requirements.txt does not pin {needed}"


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in the shipped code -> files importing them."""
    files = [ROOT / "app.py", *(ROOT / "mechinterp_edu").rglob("*.py"), *(ROOT / "tests").glob("*.py"),
             *(ROOT / "exercises").glob("*.py"), *(ROOT / "solutions").glob("*.py")]
    local = {"mechinterp_edu", "solutions", "exercises", "app", "conftest"}
    local |= {p.stem for p in (ROOT / "tests").rglob("*.py")}  # test helper modules
    found: dict[str, set[str]] = {}
    for path in files:
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                if root not in local and root not in sys.stdlib_module_names:
                    found.setdefault(root, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_imported_package_is_pinned():
    """A fresh clone installs only requirements.txt: every package the code imports must be there."""
    pins = _pins()
    owners = metadata.packages_distributions()
    missing = {}
    for module, files in _third_party_imports().items():
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(module, [])}
        if not dists or not dists & set(pins):
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported but not pinned in requirements.txt: {missing}"


def test_readme_has_the_two_commands():
    assert "make run" in README and "make test" in README
    # they come early: a newcomer sees them before the details
    assert README.index("make run") < len(README) // 3


def test_readme_lesson_map_matches_the_course():
    for info in LESSONS:
        assert info.title in README, f"README's lesson map lacks lesson {info.number}: {info.title}"
        assert f"lessons/{info.stem}.md" in README


def test_readme_commands_exist():
    parser = _build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    mentioned = set(re.findall(r"python -m mechinterp_edu ([a-z_]+)", README))
    assert {"grade", "notebooks", "train"} <= mentioned
    unknown = mentioned - set(sub.choices)
    assert not unknown, f"README mentions commands that do not exist: {unknown}"


@pytest.mark.parametrize("topic", [
    "MECHINTERP_EDU_DEVICE", "MECHINTERP_EDU_PROGRESS", "PORT=8502 make run", "chromium",
    "GPT-2", "GPU", ".ipynb", "Troubleshooting", "python -m mechinterp_edu --help",
])
def test_readme_covers(topic):
    assert topic in README


def test_makefile_targets_and_headless_serving():
    for target in ("run:", "test:", "setup:"):
        assert re.search(rf"^{target}", MAKEFILE, re.M), f"Makefile lacks {target}"
    run_recipe = MAKEFILE.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "streamlit run app.py" in run_recipe
    assert "--server.headless true" in run_recipe


def test_ci_script_installs_chromium_then_runs_make_test():
    ci = ROOT / ".ci" / "run"
    text = ci.read_text(encoding="utf-8")
    assert ci.stat().st_mode & 0o111, ".ci/run must be executable"
    assert "apt-get install" in text and "chromium" in text
    assert text.rstrip().splitlines()[-1].strip() == "make test"
