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
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx

from .board import DEFAULT_JUDGE_INTERVAL_MS, GuardBoard
from .bus import (
    BaselineMeasured,
    Breach,
    EventBus,
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
from .errors import PhaseFailed, RolloutError, WranglerError
from .guards import Guard
from .journal import Journal
from .metrics import Metrics, Totals
from .monitor import Monitor, Source
from .plan import Plan
from .rollback import rollback_and_verify
from .signals import WindowStats
from .sources import WranglerTailSource
from .tailfile import TAIL_SUFFIX, LiveBreach, ReplayContext, TailWriter, context_path_for
from .target import Target
from .wrangler import Wrangler

logger = logging.getLogger("rollout.engine")

EXIT_OK, EXIT_ROLLED_BACK, EXIT_USAGE, EXIT_ROLLBACK_FAILED = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class RunResult:
    rollout_id: str
    outcome: str
    exit_code: int
    detail: str
    started: float
    ended: float
    rollback_verified_at: float | None = None


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


@dataclass
class EngineOptions:
    time_scale: float = 1.0
    stats_interval_s: float = 1.0
    rollback_attempts: int = 5
    rollback_backoff_s: float = 1.0
    blind_grace_s: float = 15.0
    source: str = "wrangler"
    record_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


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
        self._phase_scope: anyio.CancelScope | None = None
        self._rolling_back = False
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
            if self._phase_scope is not None:
                self._phase_scope.cancel()

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
    async def bake(self, seconds: float, phase: str) -> None:
        await anyio.sleep(seconds)
        deadline = self.clock.now() + max(self.options.blind_grace_s, seconds)
        while True:
            blind = [w for w in self.monitors if self.armed_ms(w) is not None
                     and not self.monitors[w].source.status.connected]
            if not blind:
                return
            if self.clock.now() >= deadline:
                raise PhaseFailed(phase, f"tail of {', '.join(blind)} is blind (no stream): not promoting while "
                                         "the guards cannot see")
            await anyio.sleep(0.2)

    async def ask(self, question: str) -> bool:
        if self._ask is None:
            raise PhaseFailed("gate", f"{question!r} needs an answer: run interactively, or pass --yes")
        return await self._ask(question)

    async def _measure_baseline(self) -> None:
        seconds = self.plan.baseline_s * self.time_scale
        workers = list(self.monitors)
        if seconds <= 0 or not workers:
            return
        self.bus.publish(Message(text=f"measuring baseline of {', '.join(workers)} for {seconds:.1f}s"))
        start_ms = int(self.clock.now() * 1000)
        await anyio.sleep(seconds)
        end_ms = int(self.clock.now() * 1000)
        for worker in workers:
            stats = self.monitors[worker].signals.window(start_ms, end_ms)
            self.baselines[worker] = stats
            self.bus.publish(BaselineMeasured(
                worker=worker, requests=stats.requests, errors=stats.errors, seconds=seconds,
                pattern_rates={k: stats.rate_per_hour(k) for k in stats.pattern_counts}))

    async def _run_phases(self) -> PhaseFailed | None:
        await self._measure_baseline()
        for index, phase in enumerate(self.plan.steps):
            if self.breach is not None:
                self.bus.publish(PhaseFinished(index=index, phase=phase.name, status="skipped", seconds=0.0))
                continue
            ctx = PhaseContext(self, phase.name)
            self.bus.publish(PhaseStarted(index=index, phase=phase.name))
            started = anyio.current_time()
            failure: PhaseFailed | None = None
            with anyio.CancelScope() as scope:
                self._phase_scope = scope
                try:
                    await phase.run(ctx)
                except PhaseFailed as exc:
                    failure = exc
                except WranglerError as exc:
                    failure = PhaseFailed(phase.name, str(exc))
                except RolloutError as exc:
                    failure = PhaseFailed(phase.name, str(exc))
            self._phase_scope = None
            seconds = anyio.current_time() - started
            if scope.cancelled_caught:
                detail = f"cancelled by breach of {self.breach.guard} on {self.breach.worker}" if self.breach else ""
                self.bus.publish(PhaseFinished(index=index, phase=phase.name, status="cancelled", seconds=seconds,
                                               detail=detail))
            elif failure is not None:
                self.bus.publish(PhaseFinished(index=index, phase=phase.name, status="failed", seconds=seconds,
                                               detail=failure.reason))
                for later_index, later in enumerate(self.plan.steps[index + 1:], start=index + 1):
                    self.bus.publish(PhaseFinished(index=later_index, phase=later.name, status="skipped",
                                                   seconds=0.0))
                return failure
            else:
                self.bus.publish(PhaseFinished(index=index, phase=phase.name, status="succeeded", seconds=seconds))
        return None

    # -- rollback ------------------------------------------------------------------------------------
    async def rollback_worker(self, worker: str, before: str | None, after: str | None, reason: str) -> _Rollback:
        record = _Rollback(worker=worker, from_version=after, to_version=before)
        if before is None:
            record.detail = (f"{worker} did not exist before this rollout: nothing to roll back to "
                             f"(remove it by hand with `wrangler delete --name {worker}` if needed)")
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
    async def run(self) -> RunResult:
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
                for worker in self._watched():
                    monitor = Monitor(worker, self._source_factory(worker), board=self.board,
                                      recorder=await self._start_recording(worker, tg), clock=self.clock.now)
                    self.monitors[worker] = monitor
                    if self.metrics is not None:
                        self._count_totals(monitor, self.metrics)
                    tg.start_soon(monitor.run)
                tg.start_soon(self._ticker)
                failure = await self._run_phases()
                if self.breach is not None or (failure is not None and self.changes):
                    reason = (f"{self.breach.guard} {self.breach.detail}" if self.breach is not None
                              else f"phase {failure.phase if failure else '?'} failed")
                    with anyio.CancelScope(shield=True):
                        await self._rollback_all(reason)
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
        if self.rollbacks:
            if all(r.verified for r in self.rollbacks):
                cause = (f"{self.breach.guard} on {self.breach.worker}: {self.breach.detail}" if self.breach
                         else (failure.reason if failure else "rolled back"))
                return RunResult(self.rollout_id, "rolled_back", EXIT_ROLLED_BACK, cause, started, ended, verified_at)
            bad = [r for r in self.rollbacks if not r.verified]
            detail = "; ".join(f"{r.worker}: {r.detail}" for r in bad)
            return RunResult(self.rollout_id, "rollback_failed", EXIT_ROLLBACK_FAILED, detail, started, ended)
        if failure is not None:
            return RunResult(self.rollout_id, "failed", EXIT_USAGE, str(failure), started, ended)
        return RunResult(self.rollout_id, "succeeded", EXIT_OK, "every phase succeeded", started, ended)
