"""Durations written the way people write them: ``"90s"``, ``"3m"``, ``"1h30m"``, ``"24h"``, or seconds."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HINT = "write e.g. '90s', '3m', '1h30m', '24h'"


def parse_duration(value: str | float | int, *, positive: bool = False) -> float:
    """Seconds in ``value``; raises ValueError naming the value when it cannot be read.

    A duration is finite and never negative (``nan``, ``inf`` and ``-5`` are refused); with
    ``positive=True`` it must also be more than 0 (a bake or a timeout of 0 makes no sense).
    """
    seconds = _parse(value)
    if positive and seconds <= 0:
        raise ValueError(f"a duration here must be more than 0: {value!r}")
    return seconds


def parse_positive_duration(value: str | float | int) -> float:
    """``parse_duration(value, positive=True)``."""
    return parse_duration(value, positive=True)


def _parse(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a duration: {value!r} ({_HINT}, or a number of seconds)")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"a duration must be a finite number of seconds: {value!r}")
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"not a duration: {value!r} (a duration must be finite; {_HINT})")
        return _parse(number)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {value!r} ({_HINT})")
    if not math.isfinite(total):
        raise ValueError(f"not a duration: {value!r} (too long to be finite)")
    return total


def format_duration(seconds: float) -> str:
    """``3725`` → ``"1h02m05s"``; short values keep one decimal."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"
