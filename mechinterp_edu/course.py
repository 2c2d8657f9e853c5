"""The course map: the five lessons and where each lesson's parts live.

Everything that needs "all lessons" (app, notebooks, grader, tests) reads this
table, so adding a lesson means adding one row here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS_DIR = ROOT / "lessons"
EXERCISES_DIR = ROOT / "exercises"
SOLUTIONS_DIR = ROOT / "solutions"


@dataclass(frozen=True)
class LessonInfo:
    number: int
    slug: str           # file stem without the number: lessons/01_<slug>.md
    title: str
    models: tuple[str, ...]   # model-zoo names the lesson uses
    reference: str      # module with the fast reference implementation
    derivations: str    # module registering the sympy derivation(s)
    grading: str        # module registering the graded exercises
    live: str           # module registering the live charts / steps

    @property
    def stem(self) -> str:
        return f"{self.number:02d}_{self.slug}"

    @property
    def source_path(self) -> Path:
        return LESSONS_DIR / f"{self.stem}.md"

    @property
    def exercise_path(self) -> Path:
        return EXERCISES_DIR / f"{self.stem}.py"

    @property
    def solution_path(self) -> Path:
        return SOLUTIONS_DIR / f"{self.stem}.py"


LESSONS: tuple[LessonInfo, ...] = (
    LessonInfo(1, "tensor_products", "A one-layer transformer as tensor products",
               ("skip_trigrams",),
               "mechinterp_edu.reference.tensor_products",
               "mechinterp_edu.derivations.tensor_products",
               "mechinterp_edu.grader.specs.tensor_products",
               "mechinterp_edu.live.tensor_products"),
    LessonInfo(2, "qk_ov_circuits", "QK and OV circuits",
               ("skip_trigrams",),
               "mechinterp_edu.reference.circuits",
               "mechinterp_edu.derivations.circuits",
               "mechinterp_edu.grader.specs.circuits",
               "mechinterp_edu.live.circuits"),
    LessonInfo(3, "skip_trigrams", "Skip-trigrams, planted and recovered",
               ("skip_trigrams",),
               "mechinterp_edu.reference.skip_trigrams",
               "mechinterp_edu.derivations.skip_trigrams",
               "mechinterp_edu.grader.specs.skip_trigrams",
               "mechinterp_edu.live.skip_trigrams"),
    LessonInfo(4, "max_of_k", "Circuits of a max-of-K model (compact proofs)",
               ("max_of_4",),
               "mechinterp_edu.reference.max_of_k",
               "mechinterp_edu.derivations.max_of_k",
               "mechinterp_edu.grader.specs.max_of_k",
               "mechinterp_edu.live.max_of_k"),
    LessonInfo(5, "ioi_scores", "IO/S1 decomposition of attention scores",
               ("ioi_small",),
               "mechinterp_edu.reference.ioi_scores",
               "mechinterp_edu.derivations.ioi_scores",
               "mechinterp_edu.grader.specs.ioi_scores",
               "mechinterp_edu.live.ioi_scores"),
)


class UnknownLessonError(LookupError):
    pass


def get_lesson(key: int | str) -> LessonInfo:
    """Find a lesson by number (1, "1", "01"), slug or stem ("01_tensor_products")."""
    text = str(key).strip()
    for lesson in LESSONS:
        if text in {str(lesson.number), f"{lesson.number:02d}", lesson.slug, lesson.stem}:
            return lesson
    known = ", ".join(f"{l.number:02d} ({l.slug})" for l in LESSONS)
    raise UnknownLessonError(f"No lesson called {key!r}. Known lessons: {known}.")
