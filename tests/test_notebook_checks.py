"""In-notebook checks: the exercise notebook's install cell, hints behind <details>, one
``check("name", fn)`` per exercise that grades with the grader's sandbox and diagnoses and
records progress; run under nbclient with the worked solutions and with a known mistake."""
from __future__ import annotations

import ast
import json
import linecache
import sys

import nbformat
import pytest

from mechinterp_edu import notebooks
from mechinterp_edu.course import LESSONS, get_lesson
from mechinterp_edu.notebook_exercises import check, split_exercise_file, split_hints, submission_source

by_lesson = pytest.mark.parametrize("info", LESSONS, ids=[f"lesson{i.number:02d}" for i in LESSONS])

STUB = '''def f(x):
    """Do the thing.

    Returns [n] floats.

    Hints:
      * First hint,
        continued.
      * Second hint.
    """
    raise NotImplementedError
'''


def test_split_hints_moves_the_hints_out_of_the_docstring():
    stub, hints = split_hints(STUB)
    assert "Hint" not in stub and "First hint" not in stub
    assert 'Returns [n] floats.\n    """\n    raise NotImplementedError' in stub
    ast.parse(stub)
    assert hints.splitlines() == ["* First hint,", "  continued.", "* Second hint."]
    md = notebooks.hints_markdown(hints)
    assert md.startswith("<details>") and md.endswith("</details>")
    assert "- First hint,\ncontinued." in md.replace("\n  ", "\n") and "- Second hint." in md
    assert split_hints("def g():\n    return 1\n") == ("def g():\n    return 1\n", "")


@by_lesson
def test_exercise_notebook_layout(info):
    nb = notebooks.build_exercise_notebook(info)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert 'find_spec("mechinterp_edu") is None' in code[0].source and "pip\", \"install\"" in code[0].source
    assert f"exercise_checker(lesson={info.number})" in code[0].source
    intro = "\n".join(c.source for c in nb.cells[:3] if c.cell_type == "markdown")
    assert ".py" not in intro, "the exercise notebook's intro must not name the .py file"
    graded = [c for c in nb.cells if "graded" in c.metadata.get("tags", [])]
    for cell in graded[1:]:
        name = ast.parse(cell.source).body[0].name          # still valid Python without the hints
        assert "Hints:" not in cell.source
        after = nb.cells[nb.cells.index(cell) + 1]
        assert after.cell_type == "code" and after.source == f"check({name!r}, {name})"
    assert any(c.cell_type == "markdown" and c.source.startswith("<details>") for c in nb.cells)


def test_submission_source_brings_what_the_function_uses():
    code = ("import numpy as np\nSCALE = 2\n\ndef helper(x):\n    return x * SCALE\n\n"
            "def f(x):\n    return helper(np.asarray(x)).tolist()\n")
    filename = "<ipython-input-test>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(code, filename, "exec"), namespace)
    source = submission_source("f", namespace["f"], "import torch", namespace)
    assert source.index("import torch") < source.index("def helper") < source.index("def f")
    assert "import numpy as np" in source and "SCALE = 2" in source
    fresh: dict = {}
    exec(source, fresh)
    assert fresh["f"]([1, 2]) == [2, 4]


def _solution(info, name: str) -> tuple[str, str]:
    _, setup, functions = split_exercise_file(info.solution_path, [name])
    return setup, functions[name]


def _module_from(tmp_path, source: str, name: str):
    import importlib.util
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRONG_SCALE = ("/ math.sqrt(d_head)", "/ d_head")


def test_check_diagnoses_a_mistake_and_records_progress(tmp_path, monkeypatch, capsys):
    store = tmp_path / "progress.json"
    monkeypatch.setenv("MECHINTERP_EDU_PROGRESS", str(store))
    info = get_lesson(1)
    setup, body = _solution(info, "attention_patterns")
    assert WRONG_SCALE[0] in body
    wrong = _module_from(tmp_path, setup + "\n\n" + body.replace(*WRONG_SCALE), "wrong_attention")
    result = check("attention_patterns", wrong.attention_patterns, lesson=1)
    out = capsys.readouterr().out
    assert not result.passed and "1/d_head instead of 1/sqrt(d_head)" in out
    right = _module_from(tmp_path, setup + "\n\n" + body, "right_attention")
    assert check("attention_patterns", right.attention_patterns, lesson=1).passed
    entry = json.loads(store.read_text())["exercises"]["1/attention_patterns"]
    assert entry["attempts"] == 2 and entry["passed"] and entry["last_passed"]


def test_check_explains_a_bad_call(capsys):
    assert check("no_such_exercise", lambda x: x, lesson=1) is None
    assert "check('no_such_exercise')" in capsys.readouterr().out


# --------------------------------------------------------------------------- under nbclient
def _fill_with_solutions(nb, info, wrong: dict[str, tuple[str, str]] | None = None):
    graded = [c for c in nb.cells if "graded" in c.metadata.get("tags", [])]
    names = [ast.parse(c.source).body[0].name for c in graded[1:]]
    _, setup, functions = split_exercise_file(info.solution_path, names)
    graded[0].source = setup
    for cell, name in zip(graded[1:], names):
        cell.source = functions[name]
        if wrong and name in wrong:
            cell.source = cell.source.replace(*wrong[name])
    return names


def _check_outputs(nb) -> dict[str, str]:
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("check("):
            name = ast.literal_eval(ast.parse(cell.source).body[0].value.args[0])
            out[name] = "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                                  for o in cell.outputs)
    return out


@pytest.mark.slow
@by_lesson
def test_solutions_pass_every_in_notebook_check(info, tmp_path, monkeypatch):
    store = tmp_path / "progress.json"
    monkeypatch.setenv("MECHINTERP_EDU_PROGRESS", str(store))
    nb = notebooks.build_exercise_notebook(info)
    names = _fill_with_solutions(nb, info)
    _execute(nb, _kernel(tmp_path), tmp_path, monkeypatch)
    outputs = _check_outputs(nb)
    assert sorted(outputs) == sorted(names)
    for name, text in outputs.items():
        assert "passed" in text and "not passed" not in text and "0 of 1" not in text, (name, text)
    recorded = json.loads(store.read_text())["exercises"]
    assert all(recorded[f"{info.number}/{n}"]["passed"] for n in names)


@pytest.mark.slow
def test_a_wrong_answer_shows_the_diagnosis_in_the_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHINTERP_EDU_PROGRESS", str(tmp_path / "progress.json"))
    info = get_lesson(1)
    nb = notebooks.build_exercise_notebook(info)
    _fill_with_solutions(nb, info, wrong={"attention_patterns": WRONG_SCALE})
    _execute(nb, _kernel(tmp_path), tmp_path, monkeypatch)
    outputs = _check_outputs(nb)
    assert "1/d_head instead of 1/sqrt(d_head)" in outputs["attention_patterns"]
    assert "not passed yet" in outputs["attention_patterns"]
    assert "not passed" not in outputs["kron_apply"]


def _execute(nb, kernel_dir, cwd, monkeypatch) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(cwd / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(cwd / "ipython"))
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    NotebookClient(nb, km=km, timeout=300, startup_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()


def _kernel(tmp_path):
    """A kernelspec for this interpreter (the notebooks run in the venv under test)."""
    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (mechinterp-edu tests)", "language": "python"}))
    return tmp_path / "kernels"
