"""Small phases: ``Watch`` (bake under guards), ``Gate`` (manual approval), ``Shell`` (a command)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rollout.context import PhaseContext
from rollout.durations import format_duration, parse_duration
from rollout.errors import PhaseFailed, PlanError
from rollout.phase import Phase


@dataclass(frozen=True, kw_only=True, init=False)
class Watch(Phase):
    """Bake for a while under the guards; a rollback breach cancels it at once."""

    seconds: float

    def __init__(self, duration: str | float, *, name: str = "", defined_at: tuple[str, int] | None = None) -> None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise PlanError(f"Watch: {exc}") from None
        object.__setattr__(self, "seconds", seconds)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", defined_at)
        self.__post_init__()

    def default_name(self) -> str:
        return f"watch {format_duration(self.seconds)}"

    def describe(self) -> list[str]:
        return [f"watch every deployed worker's tail for {format_duration(self.seconds)} under the guards"]

    async def run(self, ctx: PhaseContext) -> None:
        ctx.say(f"baking for {format_duration(ctx.scaled(self.seconds))}")
        await ctx.bake(self.seconds)


@dataclass(frozen=True, kw_only=True, init=False)
class Gate(Phase):
    """Ask a person to approve before going on (``--yes`` approves without asking).

    While the question waits, the guards keep judging: a breach cancels the question and rolls back at
    once.  "no" fails the phase, which rolls back what the rollout changed; an answer that is neither yes
    nor no asks again.  Nobody answering within ``timeout`` does what ``on_timeout`` says: ``"rollback"``
    (the default: an unattended rollout never promotes) or ``"promote"``.  A run with a Gate and nobody to
    ask (no terminal, no ``--yes``) is refused before anything changes.

    Args:
        question: what to ask.
        timeout: how long to wait for an answer (real time: ``--time-scale`` does not shorten it).
        on_timeout: ``"rollback"`` or ``"promote"``.
    """

    question: str
    timeout_s: float
    on_timeout: str
    asks_person: ClassVar[bool] = True

    def __init__(self, question: str = "Continue the rollout?", *, timeout: str | float = "30m",
                 on_timeout: str = "rollback", name: str = "", defined_at: tuple[str, int] | None = None) -> None:
        if not isinstance(question, str) or not question.strip():
            raise PlanError(f"Gate(question=...) must be a non-empty str, got {question!r}")
        try:
            timeout_s = parse_duration(timeout)
        except ValueError as exc:
            raise PlanError(f"Gate(timeout=...): {exc}") from None
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise PlanError(f"Gate(timeout=...) must be a finite duration > 0, got {timeout!r}")
        if on_timeout not in ("rollback", "promote"):
            raise PlanError(f"Gate(on_timeout=...) must be 'rollback' or 'promote', got {on_timeout!r}")
        object.__setattr__(self, "question", question)
        object.__setattr__(self, "timeout_s", timeout_s)
        object.__setattr__(self, "on_timeout", on_timeout)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", defined_at)
        self.__post_init__()

    def default_name(self) -> str:
        return "gate"

    def describe(self) -> list[str]:
        return [f"ask: {self.question}",
                f"no answer within {format_duration(self.timeout_s)}: {self.on_timeout}; "
                "a breach while it waits rolls back at once"]

    async def run(self, ctx: PhaseContext) -> None:
        question = f"{self.question} (no: roll back what this rollout changed)"
        answer = await ctx.ask(question, timeout_s=self.timeout_s)
        if answer is None:
            if self.on_timeout == "promote":
                ctx.say(f"no answer within {format_duration(self.timeout_s)}: promoting, as the plan says "
                        "(on_timeout='promote')", level="warn")
                return
            raise PhaseFailed(ctx.phase, f"no answer within {format_duration(self.timeout_s)} to "
                                         f"{self.question!r}: not promoting (on_timeout='rollback')")
        if not answer:
            raise PhaseFailed(ctx.phase, f"not approved: {self.question}")
        ctx.say("approved")


@dataclass(frozen=True, kw_only=True, init=False)
class Shell(Phase):
    """Run a command such as ``npm test`` (an argument list, never a shell string)."""

    argv: tuple[str, ...]
    cwd: str | None

    def __init__(self, argv: Sequence[str], *, cwd: str | None = None, name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        if isinstance(argv, str):
            raise PlanError(f"Shell({argv!r}): give the command as a list of arguments, e.g. ['npm', 'test']; "
                            "commands never run through a shell")
        object.__setattr__(self, "argv", tuple(argv))
        object.__setattr__(self, "cwd", cwd)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", defined_at)
        self.__post_init__()

    def default_name(self) -> str:
        return " ".join(self.argv)

    def describe(self) -> list[str]:
        return [" ".join(self.argv) + (f"   (in {self.cwd})" if self.cwd else "")]

    async def run(self, ctx: PhaseContext) -> None:
        cwd = ctx.plan.resolve_path(self.cwd) if self.cwd else (ctx.plan.source.parent if ctx.plan.source else None)
        result = await ctx.run_command(self.argv, cwd=cwd)
        tail = result.output.strip().splitlines()[-3:]
        if result.returncode != 0:
            raise PhaseFailed(ctx.phase, f"{' '.join(self.argv)} exited {result.returncode}: " + " | ".join(tail))
        ctx.say(f"{' '.join(self.argv)} ok in {result.seconds:.1f}s")
