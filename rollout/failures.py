"""What an exception that escaped a phase means: a mistake in the plan's own code, or a bug of ours.

Either way the phase has failed and what changed is rolled back; the two differ in what the person is
told.  A plan's mistake is shown as ``plan.py:12: AttributeError: …`` (the plan's frames only, never our
internals); a bug of ours says so, points at the log with the full traceback, and has its own exit code.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("rollout.failures")

_OURS = tuple(str(Path(__file__).resolve().parent.parent / name) + "/" for name in ("rollout", "phases", "probes"))


@dataclass(frozen=True, slots=True)
class Failure:
    """An exception turned into words.

    Attributes:
        internal: True when no frame of the traceback is the plan's: a bug in rollout itself.
        where: ``file:line`` of the plan's deepest frame (or ours, for an internal error).
        text: one line for the person: where, the exception's type, its message.
    """

    internal: bool
    where: str
    text: str


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _is_ours(filename: str) -> bool:
    return filename.startswith(_OURS) or "/site-packages/" in filename or filename.startswith("<")


def explain(exc: BaseException) -> Failure:
    """Classify ``exc`` (raised while a phase ran) by the frames of its traceback; log the traceback."""
    leaf = _leaf(exc)
    frames = traceback.extract_tb(leaf.__traceback__)
    theirs = [f for f in frames if not _is_ours(f.filename)]
    message = f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
    if theirs:
        frame = theirs[-1]
        where = f"{frame.filename}:{frame.lineno}"
        logger.info("the plan's code raised %s", message, exc_info=leaf)
        code = f"\n    {frame.line}" if frame.line else ""
        return Failure(False, where, f"{where}: {message}{code}")
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    logger.error("internal error: %s", message, exc_info=leaf)
    return Failure(True, where, f"internal error in rollout (a bug, please report it): {message} at {where}; "
                                "the full traceback is in the run's rollout.log")
