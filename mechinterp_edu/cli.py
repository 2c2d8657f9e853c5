"""Command line: ``python -m mechinterp_edu <command>``.

Every command prints a clear one-line message on bad input (no bare traceback)
and exits non-zero.
"""
from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mechinterp_edu",
        description="mechinterp-edu: course, autograder and teaching app for transformer circuits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("grade", help="grade exercise files or notebooks (default: every file in exercises/)")
    p.add_argument("paths", nargs="*", metavar="FILE_OR_LESSON",
                   help="a .py or .ipynb file, or a lesson number/name (e.g. 1, 01, tensor_products)")
    p.add_argument("--lesson", help="which lesson a file belongs to, when its name does not say (NN_name.py)")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.add_argument("--no-progress", action="store_true", help="do not record this run in the progress store")

    p = sub.add_parser("gradebook", help="grade a class: one folder per student")
    p.add_argument("submissions", metavar="SUBMISSIONS_DIR")
    p.add_argument("--csv", required=True, help="where to write the grades CSV")
    p.add_argument("--gradescope", help="also write a Gradescope results.json")
    p.add_argument("--workers", type=int, default=None, help="parallel worker processes (default: CPU count)")
    p.add_argument("--student-budget", type=float, default=600.0,
                   help="seconds of grading allowed per student, all files together (default 600)")
    p.add_argument("--no-isolation", action="store_true",
                   help="grade even where bubblewrap cannot isolate the code (only for trusted code)")

    p = sub.add_parser("progress", help="show the learner's recorded progress")

    p = sub.add_parser("train", help="retrain a toy model from its exact recipe and write its checkpoint")
    p.add_argument("name", nargs="?", help="model name (omit to list models)")
    p.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    p.add_argument("--out", default=None, help="checkpoint path (default: the shipped checkpoint)")
    p.add_argument("--no-save", action="store_true", help="train and report the metric, write nothing")

    p = sub.add_parser("models", help="list the model zoo with each checkpoint's metrics")

    p = sub.add_parser("notebooks", help="write a lesson notebook and an exercise notebook per lesson")
    p.add_argument("--out", default="notebooks", help="output folder (default: notebooks/)")
    p.add_argument("--lesson", default=None, help="only this lesson")

    p = sub.add_parser("derivations", help="check every sympy derivation step and print its verdict")
    p.add_argument("--lesson", default=None, help="only this lesson")

    p = sub.add_parser("proofs", help="lesson 4: prove lower bounds on a max-of-K model's accuracy")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="a zoo model or `untrained` (default: max_of_4)")
    group.add_argument("--weights", default=None, metavar="FILE",
                       help="a torch.save'd dict of W_E, W_pos, W_Q, W_K, W_V, W_O, W_U")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("bench", help="speed measurements, each printed as a side-by-side ratio")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smallest sizes (for smoke tests)")
    size.add_argument("--full", action="store_true",
                      help="also the long comparisons (the default run stays within about 2 minutes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "grade":
            from mechinterp_edu.grader.cli import grade_command
            return grade_command(args)
        if args.command == "gradebook":
            from mechinterp_edu.grader.gradebook import gradebook_command
            return gradebook_command(args)
        if args.command == "progress":
            from mechinterp_edu.grader.progress import progress_command
            return progress_command(args)
        if args.command in ("train", "models"):
            from mechinterp_edu.models.cli import models_command, train_command
            return train_command(args) if args.command == "train" else models_command(args)
        if args.command == "notebooks":
            from mechinterp_edu.notebooks import notebooks_command
            return notebooks_command(args)
        if args.command == "derivations":
            return _derivations_command(args)
        if args.command == "proofs":
            from mechinterp_edu.lessons.max_of_k.proofs_cli import proofs_command
            return proofs_command(args)
        if args.command == "bench":
            from mechinterp_edu.bench import bench_command
            return bench_command(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except (LookupError, ValueError, RuntimeError, OSError) as exc:
        # Known, explained failures: one clear line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def _derivations_command(args) -> int:
    from mechinterp_edu.course import get_lesson, parts
    from mechinterp_edu.derivations import all_derivations, check

    derivations = parts(get_lesson(args.lesson), "derivations") if args.lesson else all_derivations()
    failed = 0
    total = 0
    for derivation in derivations:
        print(f"{derivation.name}: {derivation.title}")
        for result in check(derivation):
            total += 1
            mark = "PROVEN" if result.passed else "FAILED"
            failed += not result.passed
            print(f"  [{mark}] {result.step}: {result.detail} ({result.seconds:.2f}s)")
    print(f"{total - failed} of {total} steps proven.")
    return 1 if failed else 0
