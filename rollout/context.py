"""What a phase can use while it runs: wrangler, the target, HTTP, the journal, the clock, the view."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx

from .bus import Diagnosis, EngineEvent, Message, WorkerChanged
from .diagnosis import explain_result
from .errors import PhaseFailed
from .journal import Change
from .signals import WorkerSignals
from .target import Target
from .wrangler import DeploymentState, Wrangler, WranglerResult, wrangler_env

if TYPE_CHECKING:
    from .engine import Engine
    from .plan import Plan, Worker


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float


class PhaseContext:
    """Handed to every phase's ``run``.  Phases never print: they publish events."""

    def __init__(self, engine: Engine, phase: str) -> None:
        self._engine = engine
        self.phase = phase

    # -- what the phase can read -------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        return self._engine.plan

    @property
    def target(self) -> Target:
        return self._engine.target

    @property
    def wrangler(self) -> Wrangler:
        return self._engine.wrangler

    @property
    def http(self) -> httpx.AsyncClient:
        return self._engine.http

    @property
    def rollout_id(self) -> str:
        return self._engine.rollout_id

    def now(self) -> float:
        return self._engine.clock.now()

    def worker(self, name: str) -> Worker:
        return self.plan.worker(name)

    def signals(self, worker: str) -> WorkerSignals:
        """The live signals of a watched worker (per-version windows for canary analysis)."""
        monitor = self._engine.monitors.get(worker)
        if monitor is None:
            raise PhaseFailed(self.phase, f"{worker} is not watched (Worker(watch=False)): no signals to judge")
        return monitor.signals

    def url(self, worker: str, path: str) -> str:
        return self.target.url(worker, path)

    def scaled(self, seconds: float) -> float:
        """Plan durations are multiplied by the engine's time scale (``rollout demo`` shrinks them)."""
        return seconds * self._engine.time_scale

    # -- what the phase can do ---------------------------------------------------------------------
    def publish(self, event: EngineEvent) -> None:
        self._engine.bus.publish(event)

    def say(self, text: str, level: str = "info") -> None:
        self.publish(Message(level=level, text=text, phase=self.phase))  # type: ignore[arg-type]

    async def bake(self, seconds: float, *, evidence_wait: float | None = None) -> None:
        """Wait under the guards (a breach cancels this), then until every rollback guard on every changed
        worker is judged ok on enough samples (no blind tail, no ``no_data``, no ``inconclusive``), at most
        ``evidence_wait`` plan seconds more (default: the plan's ``evidence_wait``); else the phase fails."""
        wait = self.scaled(evidence_wait) if evidence_wait is not None else None
        await self._engine.bake(self.scaled(seconds), self.phase, evidence_wait_s=wait)

    async def require_evidence(self, evidence_wait: float | None = None) -> None:
        """Wait (up to ``evidence_wait`` plan seconds, default the plan's) until every rollback guard on every
        changed worker is judged ok; raise PhaseFailed naming what is missing otherwise."""
        plan_s = self.plan.evidence_wait_s if evidence_wait is None else evidence_wait
        await self._engine.require_evidence(self.phase, self.scaled(plan_s))

    async def ask(self, question: str, *, timeout_s: float | None = None) -> bool | None:
        """A person's answer: True, False, or None when nobody answered within ``timeout_s`` (real
        seconds, not scaled) or nobody can answer.  A breach or a signal cancels the question."""
        return await self._engine.ask(question, timeout_s=timeout_s, phase=self.phase)

    @property
    def can_ask(self) -> bool:
        """True when a person (or ``--yes``) can answer questions."""
        return self._engine.can_ask

    def diagnose(self, result: WranglerResult, command: str) -> list[Diagnosis]:
        """Publish a diagnosis for each Cloudflare error code in a failed command."""
        found = []
        for item in explain_result(result):
            event = Diagnosis(phase=self.phase, command=command, code=item.code, message=item.message,
                              cause=item.cause, fix=item.fix)
            self.publish(event)
            found.append(event)
        return found

    async def active(self, worker: str) -> DeploymentState | None:
        """The active deployment of a worker, or None if it does not exist yet."""
        result = await self.wrangler.run("deployments", "status", "--name", worker, "--json")
        if not result.ok:
            if 10007 in result.codes or 10090 in result.codes:
                return None
            self.diagnose(result, "wrangler deployments status")
            raise PhaseFailed(self.phase, f"cannot read the active deployment of {worker}: "
                                          f"{result.error_text.splitlines()[0] if result.error_text else ''}")
        from .wrangler import parse_deployment_status

        return parse_deployment_status(worker, result.stdout)

    async def note_change_intent(self, worker: str, before: str | None) -> None:
        """Journal "about to change W, currently at BEFORE" before running the deploy (crash safety)."""
        await self._engine.journal.record_change(
            Change(self.rollout_id, worker, before, None, self.phase, self.now(), "intent"))
        self._engine.note_change(worker, before, None)

    def note_traffic_shift(self, worker: str, fraction: float) -> int:
        """``fraction`` of the worker's traffic is about to move to a new version (the Durable Objects of
        that share restart: churn guards with a ``wave`` expect the burst).  Call it *before* the command
        that moves the traffic: the objects restart as soon as the edge switches, while the command is
        still running.  Returns the shift's time, for :meth:`withdraw_traffic_shift`."""
        at_ms = int(self.now() * 1000)
        self._engine.board.note_shift(worker, at_ms, fraction)
        return at_ms

    def withdraw_traffic_shift(self, worker: str, at_ms: int) -> None:
        """The command did not move the traffic after all: no wave to expect."""
        self._engine.board.withdraw_shift(worker, at_ms)

    async def note_changed(self, worker: str, before: str | None, after: str | None,
                           command: Sequence[str] = ()) -> None:
        """Journal and announce a change; arms the guards for the worker from now on."""
        await self._engine.journal.record_change(
            Change(self.rollout_id, worker, before, after, self.phase, self.now(), "done"))
        self._engine.note_change(worker, before, after)
        self.publish(WorkerChanged(worker=worker, before=before, after=after, phase=self.phase,
                                   command=tuple(command)))

    async def run_command(self, argv: Sequence[str], *, cwd: Path | None = None,
                          env: Mapping[str, str] | None = None, timeout_s: float = 1800) -> CommandResult:
        """Run a command (never through a shell); its output goes to the journal, not the terminal."""
        if isinstance(argv, str):
            raise PhaseFailed(self.phase, f"command must be an argument list, not a string: {argv!r}")
        started = anyio.current_time()
        full_env = wrangler_env({**self.target.env, **(env or {})})
        try:
            with anyio.fail_after(timeout_s):
                proc = await anyio.run_process(list(argv), cwd=cwd, env=full_env, check=False,
                                               stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise PhaseFailed(self.phase, f"command not found: {argv[0]} ({exc})") from None
        except TimeoutError:
            raise PhaseFailed(self.phase, f"{' '.join(argv)} did not finish within {timeout_s:.0f}s") from None
        output = proc.stdout.decode("utf-8", "replace")
        return CommandResult(tuple(argv), proc.returncode, output, anyio.current_time() - started)


#: Asks a person: True (yes), False (no), None (nobody can answer).
AskFunction = Callable[[str], Awaitable[bool | None]]
