"""Typed reads from a parsed TOML table, with errors that name the file and the dotted field."""

from __future__ import annotations

from typing import Any, TypeVar

from rollout.errors import ScenarioError

T = TypeVar("T")

_MISSING: Any = object()


class Table:
    """A view of one TOML table; every key read is remembered so leftovers can be reported."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.prefix = prefix
        self._seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: field {self.where(key)}: {problem}")

    def _get(self, key: str, kinds: tuple[type, ...], what: str, default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {what}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {what}, got {value!r}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, (str,), "a string", default)

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, (bool,), "true or false", default)

    def integer(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, (int,), "an integer", default)

    def number(self, key: str, default: Any = _MISSING, *, low: float | None = None,
               high: float | None = None) -> Any:
        value = self._get(key, (int, float), "a number", default)
        if isinstance(value, int | float):
            if low is not None and value < low:
                raise self.fail(key, f"must be at least {low}, got {value}")
            if high is not None and value > high:
                raise self.fail(key, f"must be at most {high}, got {value}")
            return float(value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if isinstance(value, str) and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def table(self, key: str) -> Table:
        value = self._get(key, (dict,), "a table", {})
        return Table(value, self.source, self.where(key))

    def tables(self, key: str) -> list[Table]:
        """An array of tables (``[[key]]``)."""
        value = self._get(key, (list,), "an array of tables", [])
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", f"expected a table, got {item!r}")
            out.append(Table(item, self.source, f"{self.where(key)}[{i}]"))
        return out

    def text_map(self, key: str) -> dict[str, str]:
        table = self.table(key)
        return {k: table.text(k) for k in table.data}

    def finish(self) -> None:
        """Reject keys nobody read: they are typos or unsupported options."""
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise self.fail(unknown[0], "unknown field")
