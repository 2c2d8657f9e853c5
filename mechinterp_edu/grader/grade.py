"""Grading a learner's file: the API used by the CLI, the app, the gradebook and the tests.

    grade_file(path, lesson=None) -> FileReport
    grade_source(source, lesson, exercises=None, sandbox=True) -> FileReport

``FileReport(file, lesson, score, max_score, results)`` holds one
``ExerciseResult(exercise, passed, score, max_score, feedback)`` per exercise; ``exercise``
is the function's name. ``exercises`` may be None (the lesson's registered exercises),
a list of names (a subset), or a list of :class:`~mechinterp_edu.grader.spec.Exercise`
objects (e.g. defined in a test).

How one file is graded:

1. The file is read (:mod:`.sources`): a syntax error or an invalid notebook is a verdict.
2. A sandbox child starts at once (:mod:`.sandbox`), so its ``import torch`` overlaps with
   the parent building every case and computing the reference answers *here*, on the
   grading device (:func:`mechinterp_edu.device.get_device`). Cases and references are
   cached per exercise for the life of the process (the gradebook grades many students).
3. The child gets only the inputs, runs the learner's functions and sends back plain
   arrays; a crash, ``os._exit`` or timeout costs only the exercise it happened in.
4. :func:`mechinterp_edu.grader.compare.assess` decides pass/fail and explains failures.

``sandbox=False`` runs trusted code (the solutions, in fast tests) in this process.
A spec's ``Exercise.compare(got, expected, case)`` receives CPU torch tensors (float64
for floating outputs), Python numbers, tuples of these, or for "set"/"list" outputs a
set / list of tuples of ints.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mechinterp_edu.grader.protocol import (ArrayOut, NumberOut, OtherOut, Raised, RowsOut,
                                            Trusted, TupleOut, encode_args, exception_text,
                                            normalize_output)
from mechinterp_edu.grader.sandbox import Limits, RunResult, SandboxRunner, run_in_process
from mechinterp_edu.grader.sources import (Submission, lesson_from_name, load_submission,
                                           submission_from_text)

ExerciseSelection = Optional[Sequence[Union[str, Any]]]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0, 9), *range(11, 32), 127, *range(128, 160)]}


def clean_text(text) -> str:
    """Control characters (all but newline and tab) escaped: feedback can draw nothing on a terminal."""
    return str(text).translate(_CONTROL)


@dataclass
class ExerciseResult:
    exercise: str
    passed: bool
    score: float
    max_score: float
    feedback: str = ""

    def __post_init__(self):
        self.exercise, self.feedback = clean_text(self.exercise), clean_text(self.feedback)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FileReport:
    file: str
    lesson: Optional[int]
    score: float
    max_score: float
    results: list[ExerciseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # not part of the JSON contract
    seconds: float = 0.0

    def __post_init__(self):
        self.file, self.notes = clean_text(self.file), [clean_text(n) for n in self.notes]

    @property
    def passed(self) -> bool:
        """True when every graded exercise passed (and there was at least one)."""
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"file": self.file, "lesson": self.lesson, "score": self.score,
                "max_score": self.max_score, "results": [r.to_dict() for r in self.results]}


# --------------------------------------------------------------------------- exercises
def resolve_lesson(lesson) -> Optional[int]:
    if lesson is None:
        return None
    from mechinterp_edu.course import get_lesson

    return get_lesson(lesson).number


def resolve_exercises(lesson: Optional[int], exercises: ExerciseSelection) -> list:
    """The Exercise objects to grade (see the module docstring)."""
    from mechinterp_edu.grader.spec import Exercise

    if exercises is not None and all(isinstance(e, Exercise) for e in exercises):
        return list(exercises)
    if lesson is None:
        raise ValueError("which lesson? Name the file NN_name.py (e.g. 01_tensor_products.py) "
                         "or pass --lesson NN")
    registered = lesson_exercises(lesson)
    if exercises is None:
        return registered
    by_name = {e.name: e for e in registered}
    chosen = []
    for item in exercises:
        if isinstance(item, Exercise):
            chosen.append(item)
        elif item in by_name:
            chosen.append(by_name[item])
        else:
            known = ", ".join(by_name) or "none"
            raise LookupError(f"lesson {lesson} has no exercise called {item!r} (its exercises: {known})")
    return chosen


def lesson_exercises(lesson: int) -> list:
    from mechinterp_edu.course import get_lesson
    from mechinterp_edu.grader.spec import exercises_for

    info = get_lesson(lesson)
    try:
        return exercises_for(info.number)
    except ModuleNotFoundError as exc:
        if exc.name and info.grading.startswith(exc.name):
            raise LookupError(f"lesson {info.number:02d} ({info.slug}) has no graded exercises yet "
                              f"({info.grading} does not exist)") from None
        raise


# --------------------------------------------------------------------------- cases & references
@dataclass
class _Prepared:
    exercise: Any
    device: str
    specs: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    data: list = field(default_factory=list)       # compare.CaseData per case
    error: str = ""
    from_disk: bool = False
    _cases: Optional[list] = None                  # the spec's Case objects (lazy after a disk hit)
    _mistakes: Optional[list] = None
    _terms: dict = field(default_factory=dict)

    def real_cases(self) -> Optional[list]:
        """The Case objects, for terms, mistakes and a spec's compare. After a disk-cache hit
        they are rebuilt from the cached inputs (same label, args and info), so the spec's
        slow case building (e.g. loading a trained model) is not repeated."""
        if self._cases is None:
            import numpy as np
            import torch

            from mechinterp_edu.grader import _child
            from mechinterp_edu.grader.spec import Case

            try:
                cases = []
                for spec, data in zip(self.specs, self.data, strict=True):
                    args = [_child.decode_arg(s, self.arrays, torch.device("cpu"), torch, np, [])
                            for s in spec]
                    cases.append(Case(data.label, tuple(args), dict(data.info)))
            except Exception:  # noqa: BLE001
                return None
            self._cases = cases
            for data, case in zip(self.data, cases):
                data.case = case
        return self._cases


_CACHE: "OrderedDict[tuple, _Prepared]" = OrderedDict()
_CACHE_SIZE = 64
_EXPECTED = "__expected_"


def _to_device(value, device):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone().to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _float_dtypes(value, out: list) -> list:
    import torch

    if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
        out.append(str(value.dtype).replace("torch.", ""))
    elif isinstance(value, (list, tuple)):
        for v in value:
            _float_dtypes(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _float_dtypes(v, out)
    return out


def _encode_trusted(value, kind: str, key: str = "r") -> tuple[dict, dict]:
    """Encode a trusted (reference / mistake) output exactly as a learner's is encoded."""
    import numpy as np
    import torch

    from mechinterp_edu.grader import _child

    arrays: dict = {}
    meta = _child.encode_output(value, kind, key, arrays, torch, np)
    return meta, arrays


def _normalize_trusted(value, kind: str):
    meta, arrays = _encode_trusted(value, kind)
    return normalize_output(meta, Trusted(arrays))


def _output_dtypes(value) -> list:
    if isinstance(value, ArrayOut):
        return [value.dtype]
    if isinstance(value, TupleOut):
        return [d for item in value.items for d in _output_dtypes(item)]
    return []


def _from_disk(exercise, device: str, entry: dict) -> Optional[_Prepared]:
    from mechinterp_edu.grader.compare import CaseData, tolerance_for

    try:
        arrays = entry["arrays"]
        prepared = _Prepared(exercise, device, from_disk=True)
        prepared.specs = entry["specs"]
        prepared.arrays = {k: v for k, v in arrays.items() if not k.startswith(_EXPECTED)}
        for label, info, meta, dtypes in zip(entry["labels"], entry["infos"], entry["expected"],
                                             entry["dtypes"], strict=True):
            expected = normalize_output(meta, Trusted(arrays))
            tol = tolerance_for(exercise.rtol, exercise.atol_frac, dtypes)
            prepared.data.append(CaseData(str(label), dict(info), expected, tol, None))
        if len(prepared.specs) != len(prepared.data):
            return None
        return prepared
    except Exception:  # noqa: BLE001 - a damaged entry is a cache miss
        return None


def _prepare(exercise, device: str) -> _Prepared:
    key = (id(exercise), device)
    cached = _CACHE.get(key)
    if cached is not None and cached.exercise is exercise:
        _CACHE.move_to_end(key)
        return cached
    from mechinterp_edu.grader import cache
    from mechinterp_edu.grader.compare import CaseData, tolerance_for

    disk = cache.entry_key(exercise, device)
    prepared = None
    if disk is not None:
        entry = cache.load(*disk)
        if entry is not None:
            prepared = _from_disk(exercise, device, entry)
    if prepared is None:
        prepared = _Prepared(exercise, device)
        try:
            cases = list(exercise.cases())
        except Exception as exc:  # noqa: BLE001 - a broken spec must not stop the other exercises
            prepared.error = (f"grader error: the cases of `{exercise.name}` could not be built "
                              f"({type(exc).__name__}: {exc})")
            return prepared
        metas, dtype_lists, expected_arrays = [], [], {}
        try:
            for j, case in enumerate(cases):
                prepared.specs.append(encode_args(case.args, f"{exercise.name}_{j}", prepared.arrays))
                meta, arrays = _encode_trusted(exercise.reference(*_to_device(case.args, device)),
                                               exercise.output, f"{_EXPECTED}{j}")
                expected = normalize_output(meta, Trusted(arrays))
                if isinstance(expected, OtherOut):
                    raise TypeError(f"the reference returned {expected.type} for a "
                                    f"{exercise.output!r} exercise")
                dtypes = _float_dtypes(case.args, []) + _output_dtypes(expected)
                tol = tolerance_for(exercise.rtol, exercise.atol_frac, dtypes)
                prepared.data.append(CaseData(case.label, dict(case.info), expected, tol, case))
                metas.append(meta)
                dtype_lists.append(dtypes)
                expected_arrays.update(arrays)
            prepared._cases = cases
        except Exception as exc:  # noqa: BLE001
            prepared.error = (f"grader error: the reference answer of `{exercise.name}` could not be "
                              f"computed ({type(exc).__name__}: {exc})")
            return prepared
        if disk is not None:
            cache.store(*disk, prepared.specs, [d.label for d in prepared.data],
                        [d.info for d in prepared.data], metas, dtype_lists,
                        {**prepared.arrays, **expected_arrays})
    _CACHE[key] = prepared
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prepared


def _mistake_outputs(prepared: _Prepared) -> list:
    if prepared._mistakes is None:
        out = []
        cases = prepared.real_cases() or []
        for mistake in prepared.exercise.mistakes if cases else []:
            outputs = []
            for case in cases:
                try:
                    value = _normalize_trusted(mistake.fn(*_to_device(case.args, prepared.device)),
                                               prepared.exercise.output)
                    outputs.append(None if isinstance(value, OtherOut) else value)
                except Exception as exc:  # noqa: BLE001 - matched against a learner's exception
                    outputs.append(Raised(type(exc).__name__, exception_text(exc)))
            out.append((mistake, outputs))
        prepared._mistakes = out
    return prepared._mistakes


def _terms(prepared: _Prepared, index: int):
    if prepared.exercise.terms is None:
        return None
    if index not in prepared._terms:
        import numpy as np
        import torch

        try:
            cases = prepared.real_cases()
            raw = prepared.exercise.terms(cases[index])
            terms = {}
            for name, value in dict(raw).items():
                if isinstance(value, torch.Tensor):
                    value = value.detach().to("cpu")
                    value = value.to(torch.complex128 if value.is_complex() else torch.float64).numpy()
                terms[str(name)] = np.asarray(value, dtype=np.float64)
        except Exception:  # noqa: BLE001
            terms = None
        prepared._terms[index] = terms
    return prepared._terms[index]


def _to_torch(value, kind: str = "tensor"):
    import torch

    if isinstance(value, ArrayOut):
        return torch.from_numpy(value.values.copy()) if value.values is not None else None
    if isinstance(value, NumberOut):
        return value.value
    if isinstance(value, TupleOut):
        return tuple(_to_torch(v) for v in value.items)
    if isinstance(value, RowsOut):
        return set(value.rows) if kind == "set" else list(value.rows)
    return None


# --------------------------------------------------------------------------- grading
ALLOWED_NOTE = "the grader runs your file on its own, without the course's code or other packages"


def _load_error_feedback(error: dict) -> str:
    message = error.get("message", "")
    if error.get("etype") in ("ModuleNotFoundError", "ImportError"):
        return (f"your file could not be loaded: {message}. Graded files may import only torch, "
                f"numpy, einops, math, transformer_lens and Python's standard library ({ALLOWED_NOTE})")
    if error.get("exit"):
        return ("your file called sys.exit() (or raised SystemExit) while loading: remove it; the "
                "grader imports your file and calls your functions")
    if error.get("etype") == "SyntaxError":
        return f"syntax error: {message}"
    text = (f"your file raised {error.get('etype', 'an exception')} while loading, before any "
            "exercise could run")
    tb = error.get("traceback", "")
    return text + (":\n" + tb.rstrip() + "\n" + message if tb else f": {message}")


def _device_name() -> str:
    from mechinterp_edu.device import get_device

    return str(get_device())


def _grade_submission(sub: Submission, lesson, exercises: ExerciseSelection, sandbox: bool,
                      limits: Optional[Limits], file_label: str) -> FileReport:
    from mechinterp_edu.grader.compare import assess

    start = time.perf_counter()
    limits = limits or Limits()
    lesson_number = resolve_lesson(lesson)
    runner = None
    if sandbox and not sub.problem and sub.sources:
        runner = SandboxRunner(sub.sources, sub.continue_on_error, limits)   # starts importing torch now
    try:
        chosen = resolve_exercises(lesson_number, exercises)
        if lesson_number is None and chosen:
            lesson_number = chosen[0].lesson
        report = FileReport(file_label, lesson_number, 0, sum(e.points for e in chosen),
                            notes=list(sub.notes))
        if not chosen:
            return report
        results: dict[int, ExerciseResult] = {}
        if sub.problem or not sub.sources:
            problem = sub.problem or "the notebook has no code cells to grade"
            for i, ex in enumerate(chosen):
                results[i] = ExerciseResult(ex.name, False, 0, ex.points, problem)
        else:
            device = _device_name()
            prepared = [_prepare(ex, device) for ex in chosen]
            runnable = [i for i, p in enumerate(prepared) if not p.error]
            for i, p in enumerate(prepared):
                if p.error:
                    results[i] = ExerciseResult(p.exercise.name, False, 0, p.exercise.points, p.error)
            job, inputs = [], {}
            for i in runnable:
                p = prepared[i]
                job.append({"name": p.exercise.name, "output": p.exercise.output, "cases": p.specs})
                inputs.update(p.arrays)
            timeouts = [limits.exercise_timeout(prepared[i].exercise.timeout_s) for i in runnable]
            if runnable:
                expected = [[d.expected for d in prepared[i].data] for i in runnable]
                if runner is not None:
                    run: RunResult = runner.run(job, inputs, timeouts, device, expected)
                else:
                    run = run_in_process(sub.sources, sub.continue_on_error, job, inputs, device,
                                         expected)
            else:
                run = RunResult([], [])
            fatal = ""
            if run.load_errors and not sub.continue_on_error:
                fatal = _load_error_feedback(run.load_errors[0])
            cell_notes = [f"note: {e.get('source', 'a cell')} raised {e.get('message', e.get('etype', ''))}"
                          for e in run.load_errors] if sub.continue_on_error else []
            for slot, i in enumerate(runnable):
                p = prepared[i]
                ex_run = run.exercises[slot]
                if fatal:
                    passed, feedback = False, fatal
                elif ex_run.status == "load_failed" and ex_run.message:
                    passed, feedback = False, ex_run.message
                else:
                    if p.exercise.compare is not None and p.real_cases() is None:
                        results[i] = ExerciseResult(p.exercise.name, False, 0, p.exercise.points,
                                                    "grader error: the cases could not be rebuilt")
                        continue
                    try:
                        passed, feedback = assess(
                            p.exercise, p.data, ex_run,
                            mistake_outputs=lambda p=p: _mistake_outputs(p),
                            terms_for=lambda j, p=p: _terms(p, j),
                            to_torch=lambda v, p=p: _to_torch(v, p.exercise.output),
                            memory_mb=limits.memory_mb)
                    except Exception as exc:  # noqa: BLE001 - one exercise's grader error, not the file's
                        passed, feedback = False, (f"grader error while checking `{p.exercise.name}`: "
                                                   f"{type(exc).__name__}: {exc}")
                    if not passed and (cell_notes or sub.notes):
                        feedback = "\n".join([feedback, *sub.notes, *cell_notes])
                results[i] = ExerciseResult(p.exercise.name, passed, p.exercise.points if passed else 0,
                                            p.exercise.points, feedback)
        report.results = [results[i] for i in range(len(chosen))]
        report.score = sum(r.score for r in report.results)
        report.seconds = time.perf_counter() - start
        return report
    finally:
        if runner is not None:
            runner.close()


def grade_source(source: str, lesson=None, exercises: ExerciseSelection = None,
                 sandbox: bool = True, *, kind: str = "py", filename: Optional[str] = None,
                 limits: Optional[Limits] = None) -> FileReport:
    """Grade source text (a .py file's text, or a notebook's JSON with ``kind="ipynb"``)."""
    display = filename or ("submission.ipynb" if kind == "ipynb" else "submission.py")
    sub = submission_from_text(source, kind, Path(display).name)
    return _grade_submission(sub, lesson, exercises, sandbox, limits, display)


def grade_file(path, lesson=None, exercises: ExerciseSelection = None, *,
               limits: Optional[Limits] = None, sandbox: bool = True) -> FileReport:
    """Grade a .py file or an .ipynb notebook. The lesson comes from ``lesson`` or the file's
    name (``NN_name.py``); a missing file or an unknown lesson raises with a clear message."""
    from mechinterp_edu.grader.spec import Exercise

    path = Path(path)
    if path.suffix.lower() not in (".py", ".ipynb"):
        raise ValueError(f"cannot grade {path.name}: only .py files and .ipynb notebooks can be "
                         "graded (save your work as one of those)")
    explicit = bool(exercises) and all(isinstance(e, Exercise) for e in exercises)
    named = lesson_from_name(path)
    if lesson is None and not explicit:
        lesson = named
        if lesson is None:
            raise ValueError(f"cannot tell which lesson {path.name} belongs to: name it NN_name.py "
                             "(e.g. 01_tensor_products.py) or pass --lesson NN")
    sub = load_submission(path)
    if named is not None and lesson is not None and not explicit and resolve_lesson(lesson) != named:
        sub.notes.insert(0, f"warning: {path.name} is named as a lesson {named:02d} file but was "
                            f"graded as lesson {resolve_lesson(lesson):02d}: is --lesson right?")
    return _grade_submission(sub, lesson, exercises, sandbox, limits, str(path))
