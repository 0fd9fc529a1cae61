"""Small phases: ``Watch`` (bake under guards), ``Gate`` (manual approval), ``Shell`` (a command)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    """Ask a person to approve before going on (``--yes`` approves without asking)."""

    question: str

    def __init__(self, question: str = "Continue the rollout?", *, name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        object.__setattr__(self, "question", question)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", defined_at)
        self.__post_init__()

    def default_name(self) -> str:
        return "gate"

    def describe(self) -> list[str]:
        return [f"ask: {self.question}"]

    async def run(self, ctx: PhaseContext) -> None:
        if not await ctx.ask(self.question):
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
