"""What a lesson tells the grader about each exercise.

A lesson's grading module (``mechinterp_edu.lessons.<slug>.grading``) lists its
exercises as ``EXERCISES``. The grader then, for every
:class:`Case`, sends only the case's inputs to a sandboxed child process that
runs the learner's function, gets plain arrays back, and compares them in the
parent with ``reference(*case.args)`` computed here. Diagnostics use ``terms``
(named additive parts of the reference answer, e.g. the direct path) and the
``mistakes`` catalogue (wrong variants with a message).

What an exercise returns (the protocol the parent enforces): ``output`` gives the kind;
the reference's output on each case gives the shape, item count and dtype (``dtype``
overrides the dtype). A case whose result does not fit fails with a message, and nothing
larger than a small multiple of the reference's size is ever read back from the sandbox.

Output kinds (``Exercise.output``):
    "tensor"  one array (any shape); float compared with data-scaled tolerance
    "tuple"   a tuple whose items are arrays or numbers, compared item by item
    "set"     a set of tuples of ints (order-free)
    "list"    a list of tuples of ints, order matters (use ``compare`` for ties)
    "float"   one number
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

OutputKind = Literal["tensor", "tuple", "set", "list", "float"]


@dataclass
class Case:
    """One input to grade on.

    ``args`` are the positional arguments: torch tensors (sent to the child with
    their dtype; moved to the grading device there) or plain JSON-able values
    (ints, floats, lists of ints). ``info`` holds facts the diagnostics may use
    to name a cause, e.g. ``{"d_head": 32}``.
    """

    label: str
    args: tuple
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mistake:
    """A known wrong variant. ``fn`` has the exercise's signature and computes the
    wrong answer; if a submission matches it on every case, ``message`` is the feedback."""

    name: str
    message: str
    fn: Callable[..., Any]


@dataclass
class Exercise:
    lesson: int
    name: str                     # the function name learners implement
    points: int
    reference: Callable[..., Any] # the fast reference implementation (same signature)
    cases: Callable[[], list[Case]]
    output: OutputKind = "tensor"
    summary: str = ""             # one line: what to implement
    difficulty: int = 1           # 1 easy, 2 medium, 3 hard
    minutes: int = 10             # expected time
    terms: Optional[Callable[[Case], dict[str, Any]]] = None
    # compare(got, expected, case) -> None if acceptable, else a message (overrides the default
    # comparison for this exercise, e.g. rankings with ties or sign-fixed singular vectors).
    compare: Optional[Callable[[Any, Any, Case], Optional[str]]] = None
    rtol: float = 1e-4
    atol_frac: float = 1e-5       # absolute tolerance as a fraction of max |expected|
    mistakes: list[Mistake] = field(default_factory=list)
    timeout_s: float = 20.0
    optional: bool = False        # outside the lesson's main path (shown as optional)
    # The return protocol. By default each case must return what the reference returns on it:
    # the same kind, shape (or item count) and dtype; the parent reads at most a few times the
    # reference's size back from the sandbox. ``dtype`` overrides the required dtype of a tensor
    # result (e.g. "float64"); "any" accepts any dtype of the reference's kind (float / int / bool).
    dtype: Optional[str] = None


def exercises_for(lesson: int | str) -> list[Exercise]:
    """A lesson's EXERCISES (from its ``grading.py``, found through the course map), in order."""
    from mechinterp_edu.course import get_lesson, parts

    info = get_lesson(lesson)
    if info.part("grading") is None:
        raise ModuleNotFoundError(f"No module named {info.grading!r}", name=info.grading)
    return parts(info, "grading")
