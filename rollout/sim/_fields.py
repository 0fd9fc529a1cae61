"""Typed reads from a parsed TOML table, with errors that name the file and the dotted field.

Every number read is finite (TOML's ``nan`` and ``inf`` are refused) and, when the caller gives bounds,
inside them; an integer is a TOML integer (not a bool, not a float).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from rollout.errors import ScenarioError

T = TypeVar("T")

_MISSING: Any = object()
_PARENT = re.compile(r"(?:\.[^.\[]*|\[\d+\])$")


def _bound(value: float) -> str:
    """A bound for a message: ``10,000``, ``0.1``."""
    return f"{int(value):,}" if float(value).is_integer() else repr(float(value))


class Table:
    """A view of one TOML table; every key read is remembered so leftovers can be reported.

    ``origins`` maps dotted fields to the file that set them, when a scenario's ``base`` files were merged
    into it: an error then names the file the bad value came from.
    """

    def __init__(self, data: dict[str, Any], source: str, prefix: str = "",
                 origins: Mapping[str, str] | None = None) -> None:
        self.data = data
        self.source = source
        self.prefix = prefix
        self.origins: Mapping[str, str] = origins or {}
        self._seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def origin(self, field: str) -> str:
        """The file that set ``field`` (or its nearest enclosing table or array)."""
        while field:
            found = self.origins.get(field)
            if found is not None:
                return found
            shorter = _PARENT.sub("", field)
            field = shorter if shorter != field else ""
        return self.source

    def fail(self, key: str, problem: str) -> ScenarioError:
        field = self.where(key)
        origin = self.origin(field)
        name = origin if origin == self.source else f"{origin} (via {self.source})"
        return ScenarioError(f"scenario {name}: field {field}: {problem}")

    def child(self, data: dict[str, Any], prefix: str) -> Table:
        return Table(data, self.source, prefix, self.origins)

    def _get(self, key: str, kinds: tuple[type, ...], what: str, default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {what}, got {_toml(value)}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {what}, got {_toml(value)}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, (str,), "a string", default)

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, (bool,), "true or false", default)

    def integer(self, key: str, default: Any = _MISSING, *, low: int | None = None, high: int | None = None,
                unit: str = "") -> Any:
        value = self._get(key, (int,), "an integer", default)
        if key in self.data:
            self._check_range(key, value, low, high, None, unit)
        return value

    def number(self, key: str, default: Any = _MISSING, *, low: float | None = None,
               high: float | None = None, above: float | None = None, unit: str = "") -> Any:
        """A finite number (int or float in the file, float here) with ``low <= x <= high`` and ``x > above``."""
        value = self._get(key, (int, float), "a number", default)
        if key not in self.data:
            return value
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {_toml(value)}")
        self._check_range(key, value, low, high, above, unit)
        return float(value)

    def _check_range(self, key: str, value: float, low: float | None, high: float | None,
                     above: float | None, unit: str) -> None:
        too_low = (low is not None and value < low) or (above is not None and value <= above)
        if not too_low and (high is None or value <= high):
            return
        if above is not None:
            problem = f"more than {_bound(above)}" + (f" and at most {_bound(high)}" if high is not None else "")
        elif low is not None:
            problem = f"from {_bound(low)} to {_bound(high)}" if high is not None else f"at least {_bound(low)}"
        else:
            problem = f"at most {_bound(high)}" if high is not None else ""
        problem = f"must be {problem}{unit}"
        raise self.fail(key, f"{problem}, got {_toml(value)}")

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if isinstance(value, str) and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def table(self, key: str) -> Table:
        value = self._get(key, (dict,), "a table", {})
        return self.child(value, self.where(key))

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        value = self._get(key, (list,), "an array of tables", [])
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", f"expected a table, got {_toml(item)}")
            out.append(self.child(item, f"{self.where(key)}[{i}]"))
        return out

    def strings(self, key: str) -> tuple[str, ...]:
        """An array of strings."""
        value = self._get(key, (list,), "an array of strings", [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{key}[{i}]", f"expected a string, got {_toml(item)}")
        return tuple(value)

    def text_map(self, key: str) -> dict[str, str]:
        table = self.table(key)
        return {k: table.text(k) for k in table.data}

    def finish(self) -> None:
        """Reject keys nobody read: they are typos or unsupported options."""
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            key, known = unknown[0], sorted(self._seen)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            listed = f" (known here: {', '.join(known)})" if known else ""
            raise self.fail(key, f"unknown field{hint}{listed}")


def _toml(value: Any) -> str:
    """A value as the file spells it: ``nan``, ``inf``, ``true``, ``"text"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        return f"{value:g}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return repr(value)
