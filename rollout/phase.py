"""The base of every phase: a value that knows where the plan defined it, and ``async run(ctx)``."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import PhaseContext


def caller_location(depth: int = 2) -> tuple[str, int] | None:
    """The first frame outside rollout/phases/probes: where the plan wrote this phase or probe."""
    frame = sys._getframe(depth)
    ours = (str(Path(__file__).resolve().parent.parent),)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not any(filename.startswith(root + "/rollout/") or filename.startswith(root + "/phases/")
                   or filename.startswith(root + "/probes/") for root in ours) and "dataclasses" not in filename \
                and not filename.startswith("<string>"):
            return (filename, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None


@dataclass(frozen=True, kw_only=True)
class Phase:
    """A step of a plan.  Subclasses set ``name`` and implement :meth:`run`.

    ``defined_at`` is filled in automatically with the plan file and line that created the phase,
    so errors about it can point there.
    """

    name: str = ""
    defined_at: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.defined_at is None:
            object.__setattr__(self, "defined_at", caller_location(3))
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def default_name(self) -> str:
        return type(self).__name__.lower()

    def worker_names(self) -> tuple[str, ...]:
        """The workers this phase refers to by name (checked against the plan when it loads)."""
        return ()

    def describe(self) -> list[str]:
        """Lines for ``rollout plan``: what this phase would do, with exact commands."""
        return []

    @property
    def location(self) -> str:
        if self.defined_at is None:
            return "<plan>"
        return f"{self.defined_at[0]}:{self.defined_at[1]}"

    async def run(self, ctx: PhaseContext) -> None:
        raise NotImplementedError(f"{type(self).__name__}.run")


PhaseFunction = Callable[["PhaseContext"], Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class FunctionPhase(Phase):
    """A plan's own phase written as ``async def my_phase(ctx): ...``."""

    function: PhaseFunction

    def default_name(self) -> str:
        return getattr(self.function, "__name__", "function")

    def describe(self) -> list[str]:
        return [f"call {self.default_name()}() from the plan"]

    async def run(self, ctx: PhaseContext) -> None:
        await self.function(ctx)
