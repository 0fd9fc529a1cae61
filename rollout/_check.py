"""Type and range checks for the values a plan builds, with errors that name the plan file and line.

Every built-in phase, probe and guard checks its arguments when it is constructed, so a wrong value is a
:class:`PlanError` at load (``rollout plan`` exits 2 with one line) instead of a crash, or a wrong
verdict, in the middle of a rollout.  The messages say what was expected and what was given::

    plan.py:14: Status(status=...) must be an int HTTP status such as 200 (or a collection of them),
    got the str '200'

``where`` is the plan file and line: given explicitly (a ``defined_at``), or found by walking the stack
out of rollout's own packages (:func:`rollout.phase.caller_location`).  :func:`element_location` narrows
a location to the line of one element of a list literal in that call (``guards=[...]`` over many lines).
"""

from __future__ import annotations

import ast
import inspect
import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from .durations import parse_duration
from .errors import PlanError
from .phase import caller_location

__all__ = [
    "BadPlanValue",
    "Where",
    "describe",
    "element_location",
    "expect",
    "expect_argv",
    "expect_async_function",
    "expect_bool",
    "expect_choice",
    "expect_duration",
    "expect_http_status",
    "expect_int",
    "expect_json",
    "expect_number",
    "expect_path",
    "expect_str",
    "expect_str_mapping",
    "expect_strings",
    "expect_worker",
    "fail",
    "format_where",
    "here",
    "is_async_callable",
]

#: a plan file and line, as in ``Phase.defined_at``
Where = tuple[str, int] | None

T = TypeVar("T")


class BadPlanValue(PlanError, ValueError):
    """A value in a plan has the wrong type or is out of range.

    A :class:`PlanError` (``rollout plan`` and ``rollout run`` exit 2 with one line), and a ``ValueError``
    as well, which is what the guards raised for bad arguments before they were checked here.
    """


def here() -> Where:
    """The plan file and line being executed: the first frame outside rollout, phases and probes."""
    return caller_location(2)


def format_where(where: Where) -> str:
    return f"{where[0]}:{where[1]}" if where is not None else ""


def fail(message: str, where: Where = None) -> NoReturn:
    """Raise :class:`BadPlanValue` with ``file:line: message`` (the caller's plan line unless ``where``)."""
    location = where if where is not None else here()
    raise BadPlanValue(f"{format_where(location)}: {message}" if location is not None else message)


def describe(value: object) -> str:
    """``the str '200'``, ``the int 42``, ``None``, ``the function warm (a plain def)``: for messages."""
    if value is None:
        return "None"
    if inspect.isclass(value):
        return f"the class {value.__name__} (not an instance; call it: {value.__name__}(...))"
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
        name = getattr(value, "__name__", "?")
        kind = "async function" if is_async_callable(value) else "plain function (def)"
        return f"the {kind} {name}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"the {type(value).__name__} {text}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def expect(value: object, types: type[T] | tuple[type[T], ...], what: str, expected: str,
           where: Where = None) -> T:
    """``value`` if it is an instance of ``types`` (a bool is never taken for an int), else a plan error
    ``{what} must be {expected}, got {describe(value)}``."""
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in wanted:
        fail(f"{what} must be {expected}, got {describe(value)}", where)
    if not isinstance(value, wanted):
        fail(f"{what} must be {expected}, got {describe(value)}", where)
    return value


def expect_str(value: object, what: str, *, nonempty: bool = False, optional: bool = False,
               expected: str | None = None, where: Where = None) -> str:
    """A str (non-empty when ``nonempty``; None is returned as ``""`` when ``optional``)."""
    if value is None and optional:
        return ""
    text = "a non-empty str" if nonempty else "a str"
    if optional:
        text += " or None"
    wanted = expected or text
    result = expect(value, str, what, wanted, where)
    if nonempty and not result.strip():
        fail(f"{what} must be {wanted}, got the empty str {result!r}", where)
    return result


def expect_bool(value: object, what: str, where: Where = None) -> bool:
    return expect(value, bool, what, "True or False", where)


def expect_choice(value: object, choices: Collection[str], what: str, where: Where = None) -> str:
    """One of ``choices`` (strs)."""
    listed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str) or value not in choices:
        fail(f"{what} must be one of {listed}, got {describe(value)}", where)
    return value


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def expect_number(value: object, what: str, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False, expected: str | None = None,
                  where: Where = None) -> float:
    """A finite int or float (not a bool, not a str such as ``"0.05"``) within the bounds, as a float."""
    bounds = _range_text(low, high, low_open, high_open)
    wanted = expected or ("a number" + (f" {bounds}" if bounds else ""))
    if not _is_number(value):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        fail(f"{what} must be a finite number{' ' + bounds if bounds else ''}, got {describe(value)}", where)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    return number


def expect_int(value: object, what: str, *, low: int | None = None, high: int | None = None,
               expected: str | None = None, where: Where = None) -> int:
    """An int (not a bool, not a float such as ``3.0``) within ``[low, high]``."""
    bounds = _range_text(low, high, False, False)
    wanted = expected or ("an int" + (f" {bounds}" if bounds else ""))
    if not isinstance(value, int) or isinstance(value, bool):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    if (low is not None and value < low) or (high is not None and value > high):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    return value


def expect_duration(value: object, what: str, *, positive: bool = False, where: Where = None) -> float:
    """Seconds in a duration (``"90s"``, ``"3m"``, ``"1h30m"`` or a number of seconds); finite, never
    negative, and more than 0 when ``positive``."""
    wanted = ("a duration such as '90s', '3m', '1h30m' or a number of seconds"
              + (", more than 0" if positive else ""))
    if not isinstance(value, str) and not _is_number(value):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except ValueError:
        try:
            number = float(value)  # type: ignore[arg-type]
        except ValueError:
            why = ", which is not a duration"
        else:
            why = "; durations are finite" if not math.isfinite(number) else "; durations cannot be negative"
        fail(f"{what} must be {wanted}, got {describe(value)}{why}", where)
    if positive and seconds <= 0:
        fail(f"{what} must be {wanted}, got {describe(value)}; 0 makes no sense here", where)
    return seconds


def expect_strings(value: object, what: str, *, nonempty_items: bool = True, at_least: int = 0,
                   expected: str | None = None, where: Where = None) -> tuple[str, ...]:
    """A list or tuple of strs (a bare str is refused: it would be read letter by letter)."""
    wanted = expected or "a list of strs"
    if isinstance(value, str | bytes) or not isinstance(value, Iterable) or isinstance(value, Mapping):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    items = tuple(value)
    for index, item in enumerate(items):
        if not isinstance(item, str) or (nonempty_items and not item):
            fail(f"{what} item #{index + 1} must be a {'non-empty ' if nonempty_items else ''}str, "
                 f"got {describe(item)}", where)
    if len(items) < at_least:
        fail(f"{what} must have at least {at_least} item(s), got {describe(value)}", where)
    return items


def expect_argv(value: object, what: str, where: Where = None) -> tuple[str, ...]:
    """A command as an argument list such as ``["npm", "test"]``; a shell string is refused with the fix."""
    if isinstance(value, str):
        fail(f"{what} must be a list of arguments such as ['npm', 'test'], got the str {value!r}; "
             "commands never run through a shell", where)
    return expect_strings(value, what, at_least=1, expected="a list of arguments such as ['npm', 'test']",
                          where=where)


def expect_path(value: object, what: str, *, optional: bool = False, where: Where = None) -> str | Path | None:
    """A file or folder path: a non-empty str or a ``pathlib.Path`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    wanted = "a path (a str or pathlib.Path)" + (" or None" if optional else "")
    if isinstance(value, str) and not value:
        fail(f"{what} must be {wanted}, got the empty str ''", where)
    if not isinstance(value, str | Path):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    return value


def expect_str_mapping(value: object, what: str, *, optional: bool = True, where: Where = None) -> dict[str, str]:
    """A mapping of str to str (e.g. headers), as a new dict; None is ``{}`` when ``optional``."""
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        fail(f"{what} must be a dict of str to str, got {describe(value)}", where)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            fail(f"{what} must be a dict of str to str, got the entry {key!r}: {describe(item)}", where)
    return dict(value)


def expect_json(value: object, what: str, where: Where = None) -> object:
    """A value ``json.dumps`` can write (dicts, lists, strs, numbers, booleans, None)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    else:
        return value
    fail(f"{what} must be JSON (dicts, lists, strs, finite numbers, True/False/None), got "
         f"{describe(value)} ({problem})", where)


def expect_http_status(value: object, what: str, *, optional: bool = False,
                       where: Where = None) -> int | tuple[int, ...] | None:
    """An HTTP status (an int in 100..599, such as 200), or a collection of them (``(200, 204)``);
    None only when ``optional`` (any status)."""
    wanted = "an int HTTP status such as 200 (or a collection of them, such as (200, 204))" + (
        " or None for any status" if optional else "")
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 100 <= value <= 599:
            fail(f"{what} must be {wanted}, got the int {value} (HTTP statuses are 100 to 599)", where)
        return value
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        fail(f"{what} must be {wanted}, got {describe(value)}", where)
    codes = tuple(value)
    if not codes:
        fail(f"{what} must be {wanted}, got an empty {type(value).__name__}", where)
    for code in codes:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
            fail(f"{what} must be {wanted}, got {describe(code)} in {describe(value)}", where)
    return codes


def expect_worker(value: object, what: str, where: Where = None) -> str:
    """A worker given as a ``rollout.Worker`` or its name; returns the name."""
    from .plan import Worker

    if isinstance(value, Worker):
        return value.name
    return expect_str(value, what, nonempty=True, expected="a rollout.Worker or a worker's name (a non-empty str)",
                      where=where)


def is_async_callable(value: object) -> bool:
    """``async def f``, a ``functools.partial`` of one, or an object whose ``__call__`` is ``async def``."""
    if inspect.iscoroutinefunction(value):
        return True
    call = getattr(value, "__call__", None)  # noqa: B004 (an async __call__, not "is it callable")
    return call is not None and not inspect.isfunction(value) and inspect.iscoroutinefunction(call)


def expect_async_function(value: Callable[..., Any], what: str, signature: str, fallback: Where = None) -> None:
    """``value`` (a callable) must be async; a plain ``def`` is refused at the line of its definition
    (``fallback``, e.g. the line of the list it is in, when that is unknown: a builtin, a lambda's
    file gone)."""
    if is_async_callable(value):
        return
    name = getattr(value, "__name__", None) or type(value).__name__
    code = getattr(value, "__code__", None)
    where = fallback
    if code is not None and Path(code.co_filename).is_file():
        where = (code.co_filename, code.co_firstlineno)
    if inspect.isclass(value):
        fail(f"{what} must be {signature.format(name='NAME')}, got {describe(value)}", where)
    fail(f"{what} must be an async function ({signature.format(name=name)}), got {describe(value)}; "
         "write `async def`, not `def`", where)


def element_location(where: Where, function: str, keyword: str | None, position: int | None = None,
                     index: int | None = None) -> Where:
    """The line of the argument given to ``function(...)`` at ``where`` as ``keyword=...`` (or as positional
    argument ``position``), or of its element ``index`` when it is a list literal; ``where`` itself when
    it cannot tell (the list was built elsewhere, the file is gone)."""
    if where is None:
        return None
    try:
        tree = ast.parse(Path(where[0]).read_text(encoding="utf-8"), where[0])
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return where
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or node.lineno != where[1] or _call_name(node) != function:
            continue
        argument: ast.expr | None = None
        if keyword is not None:
            argument = next((k.value for k in node.keywords if k.arg == keyword), None)
        if argument is None and position is not None and position < len(node.args) and not any(
                isinstance(a, ast.Starred) for a in node.args[:position + 1]):
            argument = node.args[position]
        if (index is not None and isinstance(argument, ast.List | ast.Tuple) and index < len(argument.elts)
                and not any(isinstance(e, ast.Starred) for e in argument.elts[:index + 1])):
            return (where[0], argument.elts[index].lineno)
        if argument is not None:
            return (where[0], argument.lineno)
    return where


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None
