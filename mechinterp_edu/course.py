"""The course map: the lessons, in order, and where each lesson's parts live.

A lesson is one row ``Lesson(number, slug, title)``. Its text, exercise file and worked
solution are ``lessons/NN_<slug>.md``, ``exercises/NN_<slug>.py`` and
``solutions/NN_<slug>.py``; its code is the package ``mechinterp_edu.lessons.<slug>``,
whose parts are found by convention:

    reference.py    fast batched reference implementation
    derivations.py  DERIVATIONS  (sympy derivations, ``Derivation``)
    grading.py      EXERCISES    (graded exercises, ``Exercise``)
    charts.py       CHARTS       (live charts, ``LiveChart``)
    model.py        MODELS       (model-zoo recipes, ``ModelSpec``; only lessons that build a model)
    facts.py        facts()      (the numbers the lesson text states as ``{{name}}``; see lesson_source)

Engines (app, notebooks, grader, model zoo, CLI) read these lists through :func:`parts`
and never import a lesson package any other way. :func:`override` swaps the lesson list
(tests use it to add a fixture lesson).
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

_PACKAGE = Path(__file__).resolve().parent
# The checkout (lessons/, exercises/ beside the package), or an installed package's copy of
# them (setup.py puts them in mechinterp_edu/_course when it builds a wheel).
ROOT = _PACKAGE / "_course" if (_PACKAGE / "_course" / "lessons").is_dir() else _PACKAGE.parent
LESSONS_DIR = ROOT / "lessons"
EXERCISES_DIR = ROOT / "exercises"
SOLUTIONS_DIR = ROOT / "solutions"

# part module -> the module-level list it defines
PART_LISTS = {"derivations": "DERIVATIONS", "grading": "EXERCISES", "charts": "CHARTS", "model": "MODELS"}

T = TypeVar("T")


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str           # file stem without the number (lessons/01_<slug>.md) and the package name
    title: str
    models: tuple[str, ...] = ()   # model-zoo names the lesson loads (the app loads them up front)
    package: str = ""   # default: mechinterp_edu.lessons.<slug>
    root: Path | None = None   # folder holding lessons/, exercises/, solutions/ (default: the repository)

    @property
    def stem(self) -> str:
        return f"{self.number:02d}_{self.slug}"

    @property
    def module(self) -> str:
        return self.package or f"mechinterp_edu.lessons.{self.slug}"

    @property
    def reference(self) -> str:
        return f"{self.module}.reference"

    @property
    def grading(self) -> str:
        return f"{self.module}.grading"

    @property
    def source_path(self) -> Path:
        return (self.root / "lessons" if self.root else LESSONS_DIR) / f"{self.stem}.md"

    @property
    def exercise_path(self) -> Path:
        return (self.root / "exercises" if self.root else EXERCISES_DIR) / f"{self.stem}.py"

    @property
    def solution_path(self) -> Path:
        return (self.root / "solutions" if self.root else SOLUTIONS_DIR) / f"{self.stem}.py"

    def part(self, name: str):
        """The lesson's ``name`` module, or None when the lesson has none."""
        full = f"{self.module}.{name}"
        try:
            return importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name in (full, self.module):
                return None
            raise


LessonInfo = Lesson  # older name

LESSONS: tuple[Lesson, ...] = (
    Lesson(1, "tensor_products", "A one-layer transformer as tensor products", ("skip_trigrams",)),
    Lesson(2, "qk_ov_circuits", "QK and OV circuits", ("skip_trigrams",)),
    Lesson(3, "skip_trigrams", "Skip-trigrams, planted and recovered", ("skip_trigrams",)),
    Lesson(4, "max_of_k", "Circuits of a max-of-K model (compact proofs)", ("max_of_4",)),
    Lesson(5, "ioi_scores", "IO/S1 decomposition of attention scores", ("ioi_small",)),
)


def parts(lesson: Lesson, name: str) -> list[Any]:
    """The items a lesson's ``name`` module lists (``name`` is a key of PART_LISTS)."""
    module = lesson.part(name)
    return list(getattr(module, PART_LISTS[name], ())) if module is not None else []


def all_parts(name: str) -> list[Any]:
    """Every lesson's items of one kind, in course order."""
    return [item for lesson in LESSONS for item in parts(lesson, name)]


def collector(items: list[T]) -> Callable[[T], T]:
    """``register = collector(EXERCISES)``: append an item to a lesson's list and return it."""
    def add(item: T) -> T:
        items.append(item)
        return item
    return add


@contextmanager
def override(lessons: tuple[Lesson, ...]) -> Iterator[None]:
    """Use another lesson list for the duration (e.g. the real course plus a fixture lesson)."""
    global LESSONS
    saved, LESSONS = LESSONS, tuple(lessons)
    try:
        yield
    finally:
        LESSONS = saved


class UnknownLessonError(LookupError):
    pass


def get_lesson(key: int | str) -> Lesson:
    """Find a lesson by number (1, "1", "01"), slug or stem ("01_tensor_products")."""
    text = str(key).strip()
    for lesson in LESSONS:
        if text in {str(lesson.number), f"{lesson.number:02d}", lesson.slug, lesson.stem}:
            return lesson
    known = ", ".join(f"{l.number:02d} ({l.slug})" for l in LESSONS)
    raise UnknownLessonError(f"No lesson called {key!r}. Known lessons: {known}.")
