"""The base of every probe: ``async check(ctx) -> ProbeResult``; every result records what it saw."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .phase import caller_location

if TYPE_CHECKING:
    from .context import PhaseContext


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe: ``saw`` is what was observed, in words (status, body excerpt, value)."""

    ok: bool
    saw: str
    seconds: float = 0.0
    url: str = ""


@dataclass(frozen=True, kw_only=True)
class Probe:
    """A check a ``Smoke`` phase runs against a worker."""

    name: str = ""
    defined_at: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.defined_at is None:
            object.__setattr__(self, "defined_at", caller_location(3))
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def default_name(self) -> str:
        return type(self).__name__

    async def check(self, ctx: PhaseContext, worker: str) -> ProbeResult:
        raise NotImplementedError


ProbeFunction = Callable[["PhaseContext", str], Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class FunctionProbe(Probe):
    """A plan's own probe: ``async def probe(ctx, worker) -> bool | ProbeResult``."""

    function: ProbeFunction

    def default_name(self) -> str:
        return getattr(self.function, "__name__", "probe")

    async def check(self, ctx: PhaseContext, worker: str) -> ProbeResult:
        value = await self.function(ctx, worker)
        if isinstance(value, ProbeResult):
            return value
        return ProbeResult(ok=bool(value), saw=repr(value))
