"""Small phases: ``Watch`` (bake under guards), ``Gate`` (manual approval), ``Shell`` (a command)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rollout import _check
from rollout.context import PhaseContext
from rollout.durations import format_duration
from rollout.errors import PhaseFailed
from rollout.phase import Phase


@dataclass(frozen=True, kw_only=True, init=False)
class Watch(Phase):
    """Bake for a while under the guards; a rollback breach cancels it at once.

    The time is a minimum: the Watch then goes on until every rollback guard on every changed worker is
    judged ok (``no_data``, ``inconclusive`` or a blind tail is not evidence), at most ``evidence_wait``
    more (default: the plan's ``evidence_wait``), and otherwise fails, which rolls back.
    """

    seconds: float
    evidence_wait_s: float | None

    def __init__(self, duration: str | float, *, evidence_wait: str | float | None = None, name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        where = defined_at or _check.here()
        seconds = _check.expect_duration(duration, "Watch(duration=...)", positive=True, where=where)
        wait = None if evidence_wait is None else _check.expect_duration(
            evidence_wait, "Watch(evidence_wait=...)", where=where)
        object.__setattr__(self, "seconds", seconds)
        object.__setattr__(self, "evidence_wait_s", wait)
        object.__setattr__(self, "name", _check.expect_str(name, "Watch(name=...)", where=where))
        object.__setattr__(self, "defined_at", where)
        self.__post_init__()

    def default_name(self) -> str:
        return f"watch {format_duration(self.seconds)}"

    def describe(self) -> list[str]:
        return [f"watch every deployed worker's tail for {format_duration(self.seconds)} under the guards"]

    async def run(self, ctx: PhaseContext) -> None:
        ctx.say(f"baking for {format_duration(ctx.scaled(self.seconds))}")
        await ctx.bake(self.seconds, evidence_wait=self.evidence_wait_s)


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
        where = defined_at or _check.here()
        object.__setattr__(self, "question", _check.expect_str(question, "Gate(question=...)", nonempty=True,
                                                               where=where))
        object.__setattr__(self, "timeout_s", _check.expect_duration(timeout, "Gate(timeout=...)", positive=True,
                                                                     where=where))
        object.__setattr__(self, "on_timeout", _check.expect_choice(on_timeout, ("rollback", "promote"),
                                                                    "Gate(on_timeout=...)", where))
        object.__setattr__(self, "name", _check.expect_str(name, "Gate(name=...)", where=where))
        object.__setattr__(self, "defined_at", where)
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
        where = defined_at or _check.here()
        object.__setattr__(self, "argv", _check.expect_argv(argv, "Shell(argv=...)", where))
        path = _check.expect_path(cwd, "Shell(cwd=...)", optional=True, where=where)
        object.__setattr__(self, "cwd", None if path is None else str(path))
        object.__setattr__(self, "name", _check.expect_str(name, "Shell(name=...)", where=where))
        object.__setattr__(self, "defined_at", where)
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
