"""The engine: runs a plan's phases in order under live guards, and rolls back on a breach.

One anyio task group holds everything: a monitor per watched worker (started before the first
deploy, so a baseline can be measured), a ticker that publishes snapshots, and the phase runner.
Each monitor judges its worker's guards per event, in event time (:class:`~rollout.board.EventTimeJudge`),
from the worker's first change on.  A rollback breach cancels the running phase at once; the rollback
itself then runs outside that scope, newest change first, and is verified against ``deployments status``.
With ``record_dir``, each worker's tail is saved with a replay context, so ``rollout replay`` reproduces
the run's decisions event for event.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from .abort import LeftLive, can_handle_signals, exit_code_for, watch_signals
from .board import DEFAULT_JUDGE_INTERVAL_MS, GuardBoard
from .bus import (
    BaselineMeasured,
    Breach,
    EventBus,
    GateAnswered,
    Message,
    MonitorState,
    PhaseFinished,
    PhaseStarted,
    RollbackAttempt,
    RollbackDone,
    RolloutFinished,
    RolloutStarted,
    WorkerStats,
)
from .clock import Clock, SystemClock
from .context import AskFunction, PhaseContext
from .control import Reply
from .durations import format_duration
from .errors import PhaseFailed, RolloutError, UsageError
from .evidence import Missing, missing_evidence
from .exits import EXIT_INTERNAL, EXIT_OK, EXIT_ROLLBACK_FAILED, EXIT_ROLLED_BACK, EXIT_USAGE
from .failures import explain
from .guards import Guard
from .journal import Journal
from .metrics import Metrics, Totals
from .monitor import Monitor, Source
from .phase import Phase
from .plan import Plan
from .prechange import check_before_change, refuse
from .rollback import read_state, rollback_and_verify
from .signals import WindowStats
from .sources import WranglerTailSource
from .tailfile import TAIL_SUFFIX, LiveBreach, ReplayContext, TailWriter, context_path_for
from .target import Target
from .wrangler import Wrangler

logger = logging.getLogger("rollout.engine")

__all__ = ["EXIT_OK", "EXIT_ROLLBACK_FAILED", "EXIT_ROLLED_BACK", "EXIT_USAGE", "Engine", "EngineOptions",
           "RunResult"]


@dataclass(frozen=True, slots=True)
class RunResult:
    rollout_id: str
    outcome: str
    exit_code: int
    detail: str
    started: float
    ended: float
    rollback_verified_at: float | None = None
    #: what this run changed and did not roll back and verify (with the command that undoes each)
    left_live: tuple[LeftLive, ...] = ()


@dataclass(slots=True)
class _ChangeRecord:
    worker: str
    before: str | None
    after: str | None
    armed_ms: int


@dataclass(slots=True)
class _Rollback:
    worker: str
    from_version: str | None
    to_version: str | None
    attempts: int = 0
    verified: bool = False
    detail: str = ""
    recovered: bool | None = None
    #: the deploy never changed the worker (it failed before moving traffic): nothing was rolled back
    unchanged: bool = False


@dataclass
class EngineOptions:
    """How the engine runs a plan (the plan itself says what to run).

    Attributes:
        time_scale: multiplies every plan duration (``rollout demo`` shrinks them); finite and > 0.
        blind_grace_s: how long a bake waits for a blind tail to come back before it fails.
        tail_connect_s: how long the baseline waits for every watched tail to connect.
        handle_signals: SIGINT/SIGTERM abort the run with a rollback (main thread only).
        check_before_change: configs, token and workers are checked before anything changes.
        auto_approve: gates are answered by ``--yes`` (the reports say so).
    """

    time_scale: float = 1.0
    stats_interval_s: float = 1.0
    rollback_attempts: int = 5
    rollback_backoff_s: float = 1.0
    blind_grace_s: float = 15.0
    tail_connect_s: float = 60.0
    source: str = "wrangler"
    record_dir: Path | None = None
    handle_signals: bool = True
    check_before_change: bool = True
    auto_approve: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.time_scale, int | float) or not math.isfinite(self.time_scale) \
                or self.time_scale <= 0:
            raise UsageError(f"time scale must be a finite number > 0 (got {self.time_scale!r}); e.g. 0.05 runs "
                             "plan durations twenty times faster")


SourceFactory = Callable[[str], Source]


class Engine:
    """Runs one plan against one target.  Create, then ``await engine.run()``."""

    def __init__(
        self,
        plan: Plan,
        target: Target,
        *,
        wrangler: Wrangler,
        journal: Journal,
        bus: EventBus | None = None,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        ask: AskFunction | None = None,
        source_factory: SourceFactory | None = None,
        options: EngineOptions | None = None,
        rollout_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.plan = plan
        self.target = target
        self.wrangler = wrangler
        self.journal = journal
        self.bus = bus or EventBus()
        self.clock = clock or SystemClock()
        self.http = http or httpx.AsyncClient(timeout=10.0, trust_env=False)
        self._own_http = http is None
        self._ask = ask
        self.options = options or EngineOptions()
        self.time_scale = self.options.time_scale
        self.rollout_id = rollout_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._source_factory = source_factory or self._wrangler_source
        self.monitors: dict[str, Monitor] = {}
        self.baselines: dict[str, WindowStats | None] = {}
        self.changes: list[_ChangeRecord] = []
        self.board = GuardBoard(plan.guards, self.bus, on_breach=self._on_breach)
        self.board.baselines = self.baselines
        self.metrics = metrics
        self.breach: Breach | None = None
        self.breaches: list[Breach] = []
        self.rollbacks: list[_Rollback] = []
        self._stop_scope: anyio.CancelScope | None = None
        #: why the phases stopped early (a breach, a signal, a crashed task), None while they run
        self.stop_reason: str | None = None
        self.signal: int | None = None
        self.internal_error: str | None = None
        self.aborted_by: str | None = None
        self._rolling_back = False
        # control (rollout pause/resume/promote/abort): see rollout/control.py
        self._resumed = anyio.Event()
        self._resumed.set()
        self._bake_scope: anyio.CancelScope | None = None
        self._gate_promoted: anyio.Event | None = None
        self._phase_label = "starting"
        self._writers: dict[str, TailWriter] = {}
        self._monitor_states: dict[str, tuple[bool, int]] = {}

    # -- sources and monitors ----------------------------------------------------------------------
    def _wrangler_source(self, worker: str) -> Source:
        env = self.wrangler.process_env()
        return WranglerTailSource(argv=self.wrangler.tail_argv(worker), env=env, clock=self.clock.now)

    def _watched(self) -> list[str]:
        return [w.name for w in self.plan.workers if w.watch]

    def armed_ms(self, worker: str) -> int | None:
        """Event time from which the guards judge a worker (its first change by this rollout)."""
        for change in self.changes:
            if change.worker == worker:
                return change.armed_ms
        return None

    def note_change(self, worker: str, before: str | None, after: str | None) -> None:
        """A worker changed (or is about to): from its first change on, its guards judge its events."""
        for change in self.changes:
            if change.worker == worker:
                change.after = after or change.after
                return
        armed_ms = int(self.clock.now() * 1000)
        self.changes.append(_ChangeRecord(worker, before, after, armed_ms))
        self.board.arm(worker, armed_ms)

    def _count_totals(self, monitor: Monitor, metrics: Metrics) -> None:
        """Exact counters for Prometheus, updated from every batch of events."""
        totals = Totals.for_monitor(monitor)
        metrics.track(totals)
        monitor.on_events = totals.observe

    # -- guards ------------------------------------------------------------------------------------
    def _on_breach(self, guard: Guard, breach: Breach) -> None:
        self.breaches.append(breach)
        if guard.action == "rollback" and self.breach is None and not self._rolling_back:
            self.breach = breach
            self.board.halt()  # one breach starts one rollback; the recovery watch judges from here
            self.stop(f"breach of {breach.guard} on {breach.worker}")

    def stop(self, reason: str) -> None:
        """Stop the phases now (a breach, a signal, a crashed task): the run then rolls back what changed."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    def _on_signal(self, signum: int) -> None:
        self.signal = signum
        name = signal.Signals(signum).name
        what = "rolling back what this run changed, then writing the reports" if self.changes else \
            "nothing was changed yet: stopping"
        self.bus.publish(Message(level="warn", text=f"{name} received: {what} (a second {name} exits at once)"))
        self.stop(f"{name} received")

    # -- control from another terminal ----------------------------------------------------------------
    def control(self, command: str) -> Reply:
        """Handle ``rollout pause|resume|promote|abort`` (called in the event loop by the control server)."""
        if command == "state":
            return Reply(True, self._state(), self._phase_label)
        if self._rolling_back or self.stop_reason is not None:
            return Reply(False, self._state(), f"already stopping: {self.stop_reason or 'rolling back'}")
        if command == "pause":
            if self._resumed.is_set():
                self._resumed = anyio.Event()
                self.bus.publish(Message(level="warn", text="paused by `rollout pause`: the next phase does not "
                                                            "start and a bake does not end until `rollout resume`"))
            return Reply(True, "paused", self._phase_label)
        if command == "resume":
            self._resumed.set()
            self.bus.publish(Message(text="resumed by `rollout resume`"))
            return Reply(True, "running", self._phase_label)
        if command == "promote":
            if self._gate_promoted is not None:
                self._gate_promoted.set()
                return Reply(True, "running", f"{self._phase_label}: the gate is answered yes by `rollout promote`")
            if self._bake_scope is not None:
                self._bake_scope.cancel()
                self.bus.publish(Message(text="promoted by `rollout promote`: the bake's minimum time ends now; "
                                              "it still waits for every guard to be judged ok"))
                return Reply(True, "running", f"{self._phase_label}: bake time skipped; evidence still required")
            return Reply(False, self._state(), f"{self._phase_label}: nothing to promote (no gate or bake waits)")
        if command == "abort":
            self.aborted_by = "`rollout abort`"
            what = "rolling back what this run changed" if self.changes else "nothing was changed yet: stopping"
            self.bus.publish(Message(level="warn", text=f"aborted by `rollout abort`: {what}"))
            self._resumed.set()
            self.stop("aborted by `rollout abort`")
            return Reply(True, "aborting", what)
        return Reply(False, self._state(), f"unknown command {command!r}")

    def _state(self) -> str:
        if self._rolling_back:
            return "rolling back"
        if self.stop_reason is not None:
            return "stopping"
        if not self._resumed.is_set():
            return "paused"
        if self._gate_promoted is not None:
            return "waiting for approval"
        return "progressing"

    async def _wait_while_paused(self) -> None:
        if not self._resumed.is_set():
            await self._resumed.wait()

    def left_live(self) -> list[LeftLive]:
        """The changes not (yet) rolled back and verified: what a second signal leaves behind."""
        done = {r.worker for r in self.rollbacks if r.verified}
        return [LeftLive(c.worker, c.after, c.before) for c in reversed(self.changes) if c.worker not in done]

    async def _supervised(self, what: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run a background task; if it crashes (a bug of ours), stop the phases so the run rolls back."""
        try:
            await task()
        except Exception as exc:
            failure = explain(exc)
            self.internal_error = self.internal_error or f"{what}: {failure.text}"
            self.bus.publish(Message(level="error", text=f"{what} crashed: {failure.text}"))
            self.stop(f"{what} crashed")

    async def _ticker(self) -> None:
        while True:
            await anyio.sleep(self.options.stats_interval_s)
            now = self.clock.now()
            for worker in self.monitors:
                self._publish_stats(worker, now)

    def _publish_stats(self, worker: str, now: float) -> None:
        monitor = self.monitors[worker]
        snap = monitor.snapshot()
        state = (snap.connected, snap.reconnects)
        if self._monitor_states.get(worker) != state:
            self._monitor_states[worker] = state
            self.bus.publish(MonitorState(worker=worker, connected=snap.connected, reconnects=snap.reconnects,
                                          blind_s=snap.blind_s, detail=monitor.source.status.last_exit))
        now_ms = int(now * 1000)
        recent = monitor.signals.window(now_ms - 10_000, now_ms)
        minute = monitor.signals.window(now_ms - 60_000, now_ms)
        baseline = self.baselines.get(worker)
        versions: dict[str, int] = {}
        for version in monitor.signals.versions():
            count = monitor.signals.window(now_ms - 10_000, now_ms, version=version).requests
            if count:
                versions[version] = count
        self.bus.publish(WorkerStats(
            worker=worker, rps=recent.requests / 10.0, error_rate=recent.error_rate,
            baseline_error_rate=baseline.error_rate if baseline is not None else None,
            requests=snap.events, errors=minute.errors,
            pattern_per_hour={name: minute.rate_per_hour(name) for name in minute.pattern_counts},
            versions=versions, parse_errors=snap.parse_errors, sampled=recent.sampled,
        ))

    # -- phases --------------------------------------------------------------------------------------
    async def bake(self, seconds: float, phase: str, *, evidence_wait_s: float | None = None) -> None:
        """Wait ``seconds`` under the guards, then until every rollback guard on every changed worker is
        judged ok (at most ``evidence_wait_s`` more, default the plan's): otherwise the phase fails."""
        with anyio.move_on_after(seconds) as scope:  # `rollout promote` ends the minimum time early
            self._bake_scope = scope
            await anyio.sleep_forever()
        self._bake_scope = None
        wait = self.plan.evidence_wait_s * self.time_scale if evidence_wait_s is None else evidence_wait_s
        await self.require_evidence(phase, max(wait, 0.0))
        await self._wait_while_paused()  # a paused bake does not end

    async def require_evidence(self, phase: str, wait_s: float) -> None:
        """Return once nothing is missing; raise PhaseFailed naming what is still missing after ``wait_s``
        (a blind tail gets at least ``blind_grace_s`` to come back)."""
        armed = {c.worker: c.armed_ms for c in self.changes}
        started = self.clock.now()
        said: tuple[str, ...] = ()
        while True:
            missing = missing_evidence(self.board, self.monitors, armed, int(self.clock.now() * 1000))
            if not missing:
                if said:
                    self.bus.publish(Message(text="evidence complete: every guard judged ok", phase=phase))
                return
            waited = self.clock.now() - started
            bound = max(wait_s, self.options.blind_grace_s) if any(m.guard == "tail" for m in missing) else wait_s
            if waited >= bound:
                raise PhaseFailed(phase, "not promoting without evidence: " + _missing_text(missing)
                                  + f" (waited {format_duration(waited)} past the bake)")
            lines = tuple(f"{m.guard} {m.worker} {m.state}" for m in missing)
            if lines != said:
                said = lines
                self.bus.publish(Message(level="warn", phase=phase, text=(
                    f"waiting for evidence (up to {format_duration(bound - waited)} more): "
                    + _missing_text(missing))))
            await anyio.sleep(0.25)

    async def ask(self, question: str, *, timeout_s: float | None = None, phase: str = "gate") -> bool | None:
        """A person's answer: True (yes), False (no), None (no answer within ``timeout_s``, or no input).
        A breach or a signal cancels the question.  The answer and who gave it are published."""
        if self._ask is None:
            raise PhaseFailed(phase, f"{question!r} needs an answer: run interactively, or pass --yes")
        answer: bool | None = None
        promoted = self._gate_promoted = anyio.Event()
        ask = self._ask
        try:
            with anyio.move_on_after(timeout_s if timeout_s is not None else math.inf):
                async with anyio.create_task_group() as tg:
                    async def person() -> None:
                        nonlocal answer
                        answer = await ask(question)
                        tg.cancel_scope.cancel()

                    async def remote() -> None:
                        nonlocal answer
                        await promoted.wait()
                        answer = True
                        tg.cancel_scope.cancel()

                    tg.start_soon(person)
                    tg.start_soon(remote)
        finally:
            self._gate_promoted = None
        by = ("nobody" if answer is None else "`rollout promote`" if promoted.is_set()
              else "--yes" if self.options.auto_approve else "a person at the terminal")
        self.bus.publish(GateAnswered(phase=phase, question=question, by=by,
                                      answer="none" if answer is None else "yes" if answer else "no"))
        return answer

    @property
    def can_ask(self) -> bool:
        return self._ask is not None

    async def _wait_for_tails(self) -> list[str]:
        """Wait (bounded) until every watched tail is connected; returns those that never connected."""
        deadline = anyio.current_time() + self.options.tail_connect_s
        while anyio.current_time() < deadline:  # the sources' status has no event to wait on: poll it
            if all(m.source.status.connected for m in self.monitors.values()):
                break
            await anyio.sleep(0.1)
        return [w for w, m in self.monitors.items() if not m.source.status.connected]

    async def _measure_baseline(self) -> None:
        """The baseline is a measurement: it starts once every watched tail is connected and ends when each
        worker's window holds enough requests (and the plan's time passed), or at the plan's bound."""
        seconds = self.plan.baseline_s * self.time_scale
        workers = list(self.monitors)
        if seconds <= 0 or not workers:
            return
        self.bus.publish(Message(text=f"connecting the tails of {', '.join(workers)} before the baseline"))
        blind = await self._wait_for_tails()
        if blind:
            self.bus.publish(Message(level="warn", text=(
                f"tail of {', '.join(blind)} did not connect within {self.options.tail_connect_s:.0f}s: "
                "measuring the baseline without it")))
        need = self.plan.baseline_need
        bound = max(seconds, self.plan.baseline_max_s * self.time_scale)
        self.bus.publish(Message(text=f"measuring baseline of {', '.join(workers)}: at least {seconds:.1f}s and "
                                      f"{need} requests each (at most {format_duration(bound)})"))
        start = self.clock.now()
        start_ms = int(start * 1000)
        await anyio.sleep(seconds)
        while self.clock.now() - start < bound:
            now_ms = int(self.clock.now() * 1000)
            if all(self.monitors[w].signals.window(start_ms, now_ms + 1).requests >= need for w in workers):
                break
            await anyio.sleep(0.2)
        end = self.clock.now()
        end_ms = int(end * 1000)
        for worker in workers:
            stats = self.monitors[worker].signals.window(start_ms, end_ms + 1)
            self.baselines[worker] = stats if stats.requests else None
            self.bus.publish(BaselineMeasured(
                worker=worker, requests=stats.requests, errors=stats.errors, seconds=end - start,
                pattern_rates={k: stats.rate_per_hour(k) for k in stats.pattern_counts}))
            if not stats.requests:
                self.bus.publish(Message(level="warn", text=(
                    f"no baseline for {worker}: 0 requests in {end - start:.1f}s; its guards judge against an "
                    "assumed 0% error rate, stated in every verdict")))
            elif stats.requests < need:
                self.bus.publish(Message(level="warn", text=(
                    f"thin baseline for {worker}: {stats.requests} < {need} requests in {end - start:.1f}s; "
                    "its uncertainty is counted in every verdict")))

    async def _run_phases(self) -> PhaseFailed | None:
        current = -1
        failure: PhaseFailed | None = None
        with anyio.CancelScope() as scope:
            self._stop_scope = scope
            if self.stop_reason is not None:  # stopped (a signal) before the phases began
                scope.cancel()
            await self._measure_baseline()
            for index, phase in enumerate(self.plan.steps):
                await self._wait_while_paused()
                current = index
                self._phase_label = f"phase {index + 1}/{len(self.plan.steps)}: {phase.name}"
                ctx = PhaseContext(self, phase.name)
                self.bus.publish(PhaseStarted(index=index, phase=phase.name))
                started = anyio.current_time()
                failure = await self._run_one(phase, ctx)
                seconds = anyio.current_time() - started
                if failure is not None:
                    self.bus.publish(PhaseFinished(index=index, phase=phase.name, status="failed", seconds=seconds,
                                                   detail=failure.reason))
                    break
                self.bus.publish(PhaseFinished(index=index, phase=phase.name, status="succeeded", seconds=seconds))
        self._stop_scope = None
        first_skipped = current + 1
        if scope.cancelled_caught and current >= 0:
            self.bus.publish(PhaseFinished(index=current, phase=self.plan.steps[current].name, status="cancelled",
                                           seconds=0.0, detail=f"cancelled: {self.stop_reason or 'stopped'}"))
        elif scope.cancelled_caught:
            first_skipped = 0
        for later_index, later in enumerate(self.plan.steps[first_skipped:], start=first_skipped):
            self.bus.publish(PhaseFinished(index=later_index, phase=later.name, status="skipped", seconds=0.0))
        return failure

    async def _run_one(self, phase: Phase, ctx: PhaseContext) -> PhaseFailed | None:
        """Run one phase; any exception from it (ours, wrangler's, the plan's own code) is a failed phase."""
        try:
            await phase.run(ctx)
        except PhaseFailed as exc:
            return exc
        except RolloutError as exc:
            return PhaseFailed(phase.name, str(exc))
        except (Exception, SystemExit) as exc:  # SystemExit: a plan's sys.exit() fails its phase too
            failure = explain(exc)
            if failure.internal:
                self.internal_error = failure.text
            return PhaseFailed(phase.name, failure.text)
        return None

    # -- rollback ------------------------------------------------------------------------------------
    async def rollback_worker(self, worker: str, before: str | None, after: str | None, reason: str) -> _Rollback:
        record = _Rollback(worker=worker, from_version=after, to_version=before)
        if before is None:
            record.detail = (f"{worker} did not exist before this rollout: nothing to roll back to "
                             f"(remove it by hand with `wrangler delete --name {worker}` if needed)")
            return record
        if after is None:  # the deploy was about to run, or failed: did it change anything at all?
            state = await read_state(self.wrangler, worker)
            if state is not None and state.sole_version == before:
                record.verified = True
                record.unchanged = True
                record.detail = f"unchanged: {before} still serves 100% (verified with deployments status)"
                return record
        outcome = await rollback_and_verify(
            self.wrangler, self.bus, worker, after, before, f"rollout: {reason}",
            attempts=self.options.rollback_attempts, backoff_s=self.options.rollback_backoff_s)
        record.attempts, record.verified, record.detail = outcome.attempts, outcome.verified, outcome.detail
        return record

    async def _rollback_all(self, reason: str) -> None:
        self._rolling_back = True
        self.bus.publish(Message(level="warn", text=f"rolling back {len(self.changes)} worker(s): {reason}"))
        for change in reversed(self.changes):
            # Moving the traffic back restarts the worker's Durable Objects too: the recovery watch expects it.
            self.board.note_shift(change.worker, int(self.clock.now() * 1000), 1.0)
            record = await self.rollback_worker(change.worker, change.before, change.after, reason)
            self.rollbacks.append(record)
        await self._watch_recovery()
        for record in self.rollbacks:
            if record.unchanged:  # nothing was rolled back: say so, and file no rollback
                self.bus.publish(Message(text=f"{record.worker}: {record.detail}"))
                continue
            self.bus.publish(RollbackDone(worker=record.worker, from_version=record.from_version,
                                          to_version=record.to_version or "", attempts=record.attempts,
                                          verified=record.verified, detail=record.detail,
                                          recovered=record.recovered))

    async def _watch_recovery(self) -> None:
        """After a verified rollback, keep watching the breached guard until it is ok or time is up."""
        breach = self.breach
        if breach is None or not any(r.verified for r in self.rollbacks):
            return
        guard = next((g for g in self.plan.guards if g.name == breach.guard), None)
        monitor = self.monitors.get(breach.worker)
        if guard is None or monitor is None:
            return
        since_ms = int(self.clock.now() * 1000)
        deadline = self.clock.now() + max(5.0, self.plan.recovery_s * self.time_scale)
        recovered = False
        while self.clock.now() < deadline:
            await anyio.sleep(0.25)
            verdict = self.board.judge(guard, breach.worker, monitor.signals, int(self.clock.now() * 1000), since_ms)
            if verdict.state == "ok":
                recovered = True
                break
        for record in self.rollbacks:
            if record.worker == breach.worker:
                record.recovered = recovered
        self.bus.publish(Message(
            level="info" if recovered else "warn",
            text=f"{breach.guard} on {breach.worker}: " + ("recovered after rollback" if recovered else
                                                          "not yet recovered after rollback")))

    # -- the run -------------------------------------------------------------------------------------
    def _refuse_unanswerable(self) -> None:
        """A plan whose gate nobody can answer is refused before anything changes."""
        if self._ask is not None:
            return
        gates = [p for p in self.plan.steps if getattr(p, "asks_person", False)]
        if gates:
            raise UsageError(
                f"{gates[0].location}: phase {gates[0].name!r} asks a person, and there is no terminal to ask "
                "(stdin is not a terminal): pass --yes to approve every gate, or run it interactively; "
                "nothing was changed")

    async def run(self) -> RunResult:
        self._refuse_unanswerable()
        started = self.clock.now()
        await self.journal.start_rollout(
            self.rollout_id, self.plan.name, str(self.plan.source) if self.plan.source else None, self.target.name,
            self.target.api_base, self.target.edge_url, started, os.getpid())
        self.bus.publish(RolloutStarted(
            rollout_id=self.rollout_id, plan=self.plan.name, target=self.target.name,
            workers=tuple(w.name for w in self.plan.workers), phases=tuple(p.name for p in self.plan.steps)))
        failure: PhaseFailed | None = None
        try:
            async with anyio.create_task_group() as tg:
                if self.options.handle_signals and can_handle_signals():
                    tg.start_soon(watch_signals, self._on_signal, self.left_live)
                for worker in self._watched():
                    monitor = Monitor(worker, self._source_factory(worker), board=self.board,
                                      recorder=await self._start_recording(worker, tg), clock=self.clock.now)
                    self.monitors[worker] = monitor
                    if self.metrics is not None:
                        self._count_totals(monitor, self.metrics)
                    tg.start_soon(self._supervised, f"the monitor of {worker}", monitor.run)
                tg.start_soon(self._supervised, "the stats ticker", self._ticker)
                with anyio.CancelScope() as checking:  # a signal now stops the checks, and then the run
                    self._stop_scope = checking
                    refusal = await self._check_before_change()  # while the tails connect
                self._stop_scope = None
                if refusal is not None:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        await self.journal.finish(self.rollout_id, self.clock.now(), "refused", EXIT_USAGE)
                    raise refusal
                failure = await self._run_phases()
                if self.changes and (self.stop_reason is not None or failure is not None):
                    with anyio.CancelScope(shield=True):
                        await self._rollback_all(self._rollback_reason(failure))
                for worker in self.monitors:
                    self._publish_stats(worker, self.clock.now())
                with anyio.CancelScope(shield=True):
                    await self._finish_recordings()
                tg.cancel_scope.cancel()
        finally:
            if self._own_http:
                with anyio.CancelScope(shield=True):
                    await self.http.aclose()
        result = self._result(started, failure)
        self.bus.publish(RolloutFinished(outcome=result.outcome, exit_code=result.exit_code,  # type: ignore[arg-type]
                                         detail=result.detail))
        with anyio.CancelScope(shield=True):
            await self.journal.finish(self.rollout_id, result.ended, result.outcome, result.exit_code)
        return result

    async def _check_before_change(self) -> UsageError | None:
        if not self.options.check_before_change:
            return None
        self.bus.publish(Message(text="checking configs, the token and the workers before any change"))
        problems = await check_before_change(self.plan, self.wrangler)
        return refuse(problems) if problems else None

    def _rollback_reason(self, failure: PhaseFailed | None) -> str:
        if self.breach is not None:
            return f"{self.breach.guard} {self.breach.detail}"
        if failure is not None:
            return f"phase {failure.phase} failed"
        return self.stop_reason or "stopped"

    # -- recording -----------------------------------------------------------------------------------
    async def _start_recording(self, worker: str, tg: anyio.abc.TaskGroup) -> Callable[[bytes], None] | None:
        directory = self.options.record_dir
        if directory is None:
            return None
        await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
        writer = self._writers[worker] = TailWriter(directory / f"{worker}{TAIL_SUFFIX}")
        tg.start_soon(writer.run)
        return writer.write

    async def _finish_recordings(self) -> None:
        """Write each recorded worker's replay context, then let its writer drain and close."""
        for worker, writer in self._writers.items():
            context = ReplayContext(
                worker=worker, armed_ms=self.board.armed.get(worker), baseline=self.baselines.get(worker),
                shifts=tuple(self.board.shifts.get(worker, ())), judge_interval_ms=DEFAULT_JUDGE_INTERVAL_MS,
                dropped_chunks=writer.dropped,
                breaches=tuple(LiveBreach(b.guard, b.action, b.event_index, b.event_timestamp, b.detail)
                               for b in self.breaches if b.worker == worker))
            text = json.dumps(context.to_json(), indent=2) + "\n"
            try:
                await anyio.Path(context_path_for(writer.path)).write_text(text, encoding="utf-8")
            except OSError as exc:  # the rollout's outcome stands; only the exact replay is lost
                self.bus.publish(Message(level="warn", text=f"cannot write the replay context of {worker}: {exc}"))
            await writer.aclose()
            if writer.error is not None:
                self.bus.publish(Message(level="warn", text=f"the recording of {worker} stopped: {writer.error}"))
            else:
                self.bus.publish(Message(text=f"recorded the tail of {worker} to {writer.path} "
                                              f"(replay: rollout replay {writer.path} --plan PLAN)"))

    def _result(self, started: float, failure: PhaseFailed | None) -> RunResult:
        ended = self.clock.now()
        verified_at = max((e.at for e in self.bus.history if isinstance(e, RollbackAttempt)), default=None)
        cause = self._cause(failure)
        if self.rollbacks:
            bad = [r for r in self.rollbacks if not r.verified]
            if bad:
                detail = "; ".join(f"{r.worker}: {r.detail}" for r in bad)
                left = tuple(LeftLive(r.worker, r.from_version, r.to_version) for r in bad)
                return RunResult(self.rollout_id, "rollback_failed", EXIT_ROLLBACK_FAILED, f"{cause}; {detail}",
                                 started, ended, left_live=left)
            if self.internal_error is not None:
                return RunResult(self.rollout_id, "internal_error", EXIT_INTERNAL,
                                 f"{self.internal_error} (rolled back and verified)", started, ended, verified_at)
            if all(r.unchanged for r in self.rollbacks):  # the failed step never moved traffic
                return RunResult(self.rollout_id, "failed", EXIT_ROLLED_BACK,
                                 f"{cause}; nothing was changed (verified: the previous versions still serve)",
                                 started, ended)
            outcome = ("interrupted" if self.signal is not None and self.breach is None else
                       "aborted" if self.aborted_by is not None and self.breach is None else "rolled_back")
            return RunResult(self.rollout_id, outcome, EXIT_ROLLED_BACK, cause, started, ended, verified_at)
        if self.internal_error is not None:
            return RunResult(self.rollout_id, "internal_error", EXIT_INTERNAL,
                             f"{self.internal_error} (nothing was changed)", started, ended)
        if self.signal is not None:
            return RunResult(self.rollout_id, "interrupted", exit_code_for(self.signal),
                             f"{self.stop_reason}: nothing was changed", started, ended)
        if self.aborted_by is not None:
            return RunResult(self.rollout_id, "aborted", EXIT_USAGE,
                             f"aborted by {self.aborted_by} before any change: nothing was changed", started, ended)
        if failure is not None:
            return RunResult(self.rollout_id, "failed", EXIT_USAGE, f"{failure} (nothing was changed)", started,
                             ended)
        if self.stop_reason is not None:
            return RunResult(self.rollout_id, "failed", EXIT_USAGE, f"{self.stop_reason} (nothing was changed)",
                             started, ended)
        return RunResult(self.rollout_id, "succeeded", EXIT_OK, "every phase succeeded", started, ended)

    def _cause(self, failure: PhaseFailed | None) -> str:
        if self.breach is not None:
            return f"{self.breach.guard} on {self.breach.worker}: {self.breach.detail}"
        if failure is not None:
            return str(failure)
        return self.stop_reason or "rolled back"


def _missing_text(missing: list[Missing]) -> str:
    shown = "; ".join(m.describe() for m in missing[:3])
    return shown + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
