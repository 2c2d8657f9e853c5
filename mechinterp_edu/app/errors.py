"""Turn exceptions into one-line messages: what went wrong, and what to do.

The app never puts a traceback on screen. Each page catches errors around the
part that can fail (a live chart, a derivation, grading) and shows
``st.error(explain(exc, what))``; the full traceback goes to the server log.
"""
from __future__ import annotations

import logging

log = logging.getLogger("mechinterp_edu.app")

_RESET_HINT = "Change the controls in the sidebar, or press **Reset controls** to go back to the defaults."


def first_line(exc: BaseException) -> str:
    """The exception's message, first line only (KeyError's quotes removed)."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc)
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    return text or type(exc).__name__


def explain(exc: BaseException, what: str = "This part of the page") -> str:
    """One message for a learner: ``what`` failed, why, and what to do."""
    from mechinterp_edu.device import DeviceError
    from mechinterp_edu.lesson_source import LessonFormatError
    from mechinterp_edu.models.zoo import CheckpointError, UnknownModelError

    msg = first_line(exc)
    if isinstance(exc, CheckpointError):
        # The zoo's message already names the file and the train command.
        return f"{what} needs a model checkpoint that cannot be loaded. {msg}"
    if isinstance(exc, DeviceError):
        return f"{what} cannot run on the requested device. {msg}"
    if isinstance(exc, UnknownModelError):
        return f"{what}: {msg} Pick one of the known models in the sidebar."
    if isinstance(exc, LessonFormatError):
        return (f"The lesson source has a format error: {msg} "
                "Fix the file (the format is described in mechinterp_edu/lesson_source.py).")
    if isinstance(exc, ModuleNotFoundError):
        missing = exc.name or msg
        if missing.startswith("mechinterp_edu"):
            return (f"{what} is not available yet: it needs the module `{missing}`, "
                    "which has not been written yet.")
        return (f"{what} needs the Python package `{missing}`, which is not installed. "
                "Run `make setup` (or `pip install -r requirements.txt`) and restart the app.")
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"{what} ran out of memory. Use a shorter prompt or a smaller model."
    if isinstance(exc, (ValueError, IndexError, LookupError)):
        return f"{what} could not be computed with these settings: {msg} {_RESET_HINT}"
    return (f"{what} failed ({type(exc).__name__}: {msg}). {_RESET_HINT} "
            "If it still fails with the defaults, please report this message.")


def log_exception(exc: BaseException, what: str) -> None:
    """Full traceback to the server log (the screen gets :func:`explain`); a part of the
    course that is simply not written yet is logged in one line."""
    from mechinterp_edu.device import DeviceError
    from mechinterp_edu.lesson_source import LessonFormatError
    from mechinterp_edu.models.zoo import CheckpointError, UnknownModelError

    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("mechinterp_edu"):
        log.info("%s: %s is not written yet", what, exc.name)
        return
    if isinstance(exc, (CheckpointError, DeviceError, UnknownModelError, LessonFormatError)):
        log.warning("%s: %s", what, first_line(exc))   # their message is the whole story
        return
    log.warning("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
