"""``python -m mechinterp_edu``: the command list, and one clear error line on bad input."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mechinterp_edu.course import LESSONS, ROOT

COMMANDS = ("grade", "gradebook", "progress", "train", "models", "notebooks", "derivations", "bench")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "mechinterp_edu", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got: {proc.stderr!r}"
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_lists_the_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout, f"--help does not list {command}"


def test_no_command_prints_help():
    proc = run_cli()
    assert proc.returncode == 0
    assert "usage:" in proc.stdout.lower() and "notebooks" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert command in proc.stdout


def run_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (its sympy proofs are shared with the other tests: see conftest)."""
    from mechinterp_edu.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_derivations_all_proven(capsys):
    proc = run_in_process(capsys, "derivations")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    proven, _, total = last.partition(" of ")
    total = total.split()[0]
    assert proven == total and int(total) >= len(LESSONS), last
    assert "[FAILED]" not in proc.stdout


def test_derivations_of_one_lesson(capsys):
    info = LESSONS[0]
    proc = run_in_process(capsys, "derivations", "--lesson", str(info.number))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[PROVEN]" in proc.stdout
    prefix = info.slug + "."
    headers = [l for l in proc.stdout.splitlines() if l and not l.startswith(" ") and ": " in l]
    assert headers and all(h.startswith(prefix) for h in headers), headers


@pytest.mark.parametrize("argv", [
    ("derivations", "--lesson", "no_such_lesson"),
    ("notebooks", "--lesson", "no_such_lesson"),
    ("grade", "no_such_lesson"),
])
def test_bad_lesson_is_one_clear_line(argv, tmp_path):
    proc = run_cli(*argv, *(("--out", str(tmp_path)) if argv[0] == "notebooks" else ()))
    _assert_clean_error(proc, "no_such_lesson")


def test_bad_model_is_one_clear_line():
    proc = run_cli("train", "no_such_model", "--no-save")
    _assert_clean_error(proc, "no_such_model")
    assert "skip_trigrams" in proc.stderr  # lists what exists


def test_bad_device_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_DEVICE", "banana")  # inherited by the child process
    proc = run_cli("bench", "--quick")  # reports the device first
    _assert_clean_error(proc, "MECHINTERP_EDU_DEVICE")


def test_train_without_a_name_lists_models():
    proc = run_cli("train")
    assert proc.returncode == 0, proc.stderr
    for name in ("skip_trigrams", "max_of_4", "ioi_small"):
        assert name in proc.stdout


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'mechinterp-edu = "mechinterp_edu.cli:main"' in text


def test_wrong_python_gets_a_clear_message(tmp_path):
    """Run with a Python that lacks the course's packages (here: torch hidden), the CLI says
    which package is missing and how to use the .venv, without a traceback."""
    import subprocess
    import sys

    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
        "sys.meta_path.insert(0, _Hide())\n")
    import os
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "mechinterp_edu", "models"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "lacks 'torch'" in proc.stderr and "make setup" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_row_says_whether_its_target_is_met():
    from mechinterp_edu.bench import BenchRow

    met = BenchRow("fast way", 0.010, "loop", 0.250, target_ratio=20).render()
    missed = BenchRow("fast way", 0.010, "loop", 0.150, target_ratio=20).render()
    plain = BenchRow("fast way", 0.010, "loop", 0.150).render()
    assert "25.0x faster" in met and "target >= 20x: met" in met
    assert "15.0x faster" in missed and "NOT met" in missed
    assert "target" not in plain


def test_bench_times_keep_three_significant_figures():
    from mechinterp_edu.bench import BenchRow

    text = BenchRow("fast way", 0.00118, "loop", 0.0213).render()
    assert "0.00118 s" in text and "0.0213 s" in text and "18.1x faster" in text
