"""``rollout watch``: the guards of a rollout over live workers, for hours, with metrics and alerts.

The same pieces as a rollout: a :class:`~rollout.monitor.Monitor` per worker (tail source, framing,
signals), the guards judged by a :class:`GuardBoard` (shared logic the engine can reuse), events on an
:class:`~rollout.bus.EventBus` for the view, the journal and the metrics.  What watch adds:

* a deadline instead of phases (``--for 24h``), on an injectable clock, so simulated days run in seconds;
* hourly summaries (:mod:`rollout.hourly`) into the journal and the view;
* webhook alerts (:mod:`rollout.alerts`) on breach, recovery, long blind spells and rollback;
* with ``rollback_on_breach``, a rollback of the breached worker to its previous 100% version (read from
  ``wrangler deployments list --json``), verified with ``deployments status``; at most once per worker.
  Such a watch holds the rollout lock of the workers it may roll back (:func:`rollout.lock.hold_locks`), so
  a ``rollout run`` or ``rollout rollback`` of them is refused while it runs, and it is refused while one
  of them runs.  Without it a watch changes nothing and takes no lock; a rollback guard's breach then
  alerts "alert — not rolled back" with the exact ``wrangler rollback`` command.

No blindness is read as health.  A worker that does not exist (``deployments status`` answers 10007 or
10090) is refused at once (exit 2, :func:`check_workers_exist`).  A worker whose tail was blind (no stream,
or a stream that went silent while the worker had traffic, see :mod:`rollout.sources`) for more than
``max_blind`` of the watch, or that carried no tail event at all, makes the watch end "blind" (exit 5)
instead of "ok", and the summary gives each worker's blind share.

Exit codes (:mod:`rollout.exits`): 0 no rollback-guard breach and the tails could see, 1 rolled back and
verified, 2 usage (a worker that does not exist), 3 a rollback failed or is unverified, 5 blind (more than
``max_blind`` of the time, or no event at all), 6 a rollback guard breached and the watch alerted without
rolling back.  When several apply, the first of 3, 1, 6, 5 wins (the others are named in the detail).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream
from rich.console import Console

from .alerts import Alert, AlertSink, AlertStats, AlertTracker
from .board import GuardBoard
from .bus import (
    BaselineMeasured,
    Breach,
    EngineEvent,
    EventBus,
    Message,
    MonitorState,
    PhaseFinished,
    PhaseStarted,
    RollbackDone,
    RolloutFinished,
    RolloutStarted,
    WorkerStats,
)
from .clock import Clock, SystemClock
from .errors import LockHeld, UsageError, WranglerError
from .events import TailEvent
from .exits import EXIT_ALERTED, EXIT_BLIND, EXIT_OK, EXIT_ROLLBACK_FAILED, EXIT_ROLLED_BACK
from .guards import Guard, default_guards
from .hourly import HourlyRecorder, HourSummary
from .journal import DEFAULT_JOURNAL, Journal
from .lock import hold_locks
from .metrics import Metrics, MetricsServer, Totals
from .monitor import Monitor, Source
from .rollback import rollback_and_verify
from .signals import DEFAULT_PATTERNS, WorkerSignals
from .sources import SourceStatus, WranglerTailSource
from .target import Target
from .wrangler import Wrangler

__all__ = ["EXIT_ALERTED", "EXIT_BLIND", "EXIT_OK", "EXIT_ROLLBACK_FAILED", "EXIT_ROLLED_BACK", "GuardBoard",
           "WatchOptions", "WatchResult", "Watcher", "check_workers_exist", "load_guards", "manual_rollback_hint",
           "previous_version", "run_watch"]

logger = logging.getLogger("rollout.watch")


# -- the guard board: shared by watch (and, when wired, by the engine) ---------------------------------
# -- options and result ----------------------------------------------------------------------------------
@dataclass
class WatchOptions:
    """Everything ``rollout watch`` takes; :func:`run_watch` accepts the same for programmatic use."""

    workers: list[str]
    duration_s: float = 24 * 3600.0
    guards: list[Guard] | None = None
    guards_path: Path | None = None
    plan_path: Path | None = None
    rollback_on_breach: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    webhook: str | None = None
    source: str = "wrangler"
    sim: bool = False
    scenario: str = "healthy"
    api_base: str | None = None
    tty: bool = True
    journal_path: Path = DEFAULT_JOURNAL
    console: Console | None = None
    #: the baseline is the first window of this length (0: no baseline; error guards then take 0%)
    baseline_s: float = 60.0
    #: a blind spell longer than this alerts
    blind_alert_s: float = 60.0
    #: a worker blind for more than this share of the watch (0..1) makes it end "blind" (exit 5)
    max_blind: float = 0.2
    #: real seconds between ticks (guards, stats, hours, blind spells)
    tick_s: float = 0.1
    stats_interval_s: float = 1.0
    hour_grace_s: float = 30.0
    rollback_attempts: int = 4
    rollback_backoff_s: float = 1.0
    alert_attempts: int = 4
    alert_backoff_s: float = 0.5
    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    worker: str
    requests: int
    errors: int
    churn: int
    breaches: int
    reconnects: int
    blind_s: float
    parse_errors: int
    #: event time (seconds) during which Cloudflare sampled the tail: its counts are lower bounds
    sampled_s: float = 0.0
    #: tail events seen (of any kind: requests, crons, notices)
    events: int = 0
    #: the share of the watch the tail was blind (0..1)
    blind_share: float = 0.0


@dataclass(frozen=True, slots=True)
class WatchResult:
    watch_id: str
    outcome: str
    exit_code: int
    detail: str
    started: float
    ended: float
    workers: tuple[WorkerSummary, ...]
    breaches: tuple[Breach, ...]
    rollbacks: tuple[RollbackDone, ...]
    alerts: AlertStats
    hours: tuple[HourSummary, ...]

    def lines(self) -> list[str]:
        """The summary for people, one line each."""
        out = [f"watch {self.watch_id}: {self.outcome} (exit {self.exit_code}) — {self.detail}"]
        for w in self.workers:
            rate = f"{w.errors / w.requests * 100:.2f}%" if w.requests else "–"
            out.append(f"  {w.worker}: {w.requests} requests, {w.errors} errors ({rate}), churn {w.churn}, "
                       f"breaches {w.breaches}, reconnects {w.reconnects}, blind {w.blind_s:.0f}s "
                       f"({w.blind_share:.0%} of the watch), parse errors {w.parse_errors}"
                       + (f", tail sampled for {w.sampled_s:.0f}s (counts are lower bounds)" if w.sampled_s else ""))
        a = self.alerts
        out.append(f"  alerts: {a.sent} sent, {a.failed} failed, {a.dropped} dropped; {len(self.hours)} hourly "
                   "summaries")
        return out


# -- rollback target -----------------------------------------------------------------------------------
async def previous_version(wrangler: Wrangler, worker: str) -> tuple[str | None, str | None]:
    """``(current, previous)``: the sole 100% version now, and the newest earlier single version at 100%
    (read with ``wrangler deployments list --json``)."""
    result = (await wrangler.run("deployments", "list", "--name", worker, "--json")).raise_for_status()
    try:
        deployments = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise WranglerError(f"deployments list of {worker}: not JSON ({exc})") from exc
    return pick_previous(deployments)


def pick_previous(deployments: Sequence[Mapping[str, object]]) -> tuple[str | None, str | None]:
    """The current sole version and the one to roll back to, from a deployments list (any order)."""
    def created(d: Mapping[str, object]) -> float:
        text = str(d.get("created_on") or "")
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0

    def sole(d: Mapping[str, object]) -> str | None:
        versions = d.get("versions")
        if isinstance(versions, list) and len(versions) == 1 and isinstance(versions[0], Mapping):
            if abs(float(versions[0].get("percentage", 0)) - 100.0) < 1e-6:
                return str(versions[0].get("version_id"))
        return None

    ordered = sorted(deployments, key=created, reverse=True)
    if not ordered:
        return None, None
    current = sole(ordered[0])
    for deployment in ordered[1:] if current else ordered:
        version = sole(deployment)
        if version is not None and version != current:
            return current, version
    return current, None


def manual_rollback_hint(worker: str, previous: str | None, why_unknown: str = "") -> str:
    """What a person runs to roll ``worker`` back by hand: the exact command when the previous version is
    known, else how to find it."""
    if previous:
        return f"to roll back: `wrangler rollback {previous} --name {worker} -y`"
    because = f" ({why_unknown})" if why_unknown else ""
    return (f"no previous version found{because}: pick one with `wrangler deployments list --name {worker}`, "
            f"then `wrangler rollback <version> --name {worker} -y`")


# -- the watcher ---------------------------------------------------------------------------------------
SourceFactory = Callable[[str], Source]


class Watcher:
    """Watches workers until the deadline; ``await watcher.run()`` returns a :class:`WatchResult`."""

    def __init__(
        self, options: WatchOptions, target: Target, *, guards: Sequence[Guard], journal: Journal,
        bus: EventBus | None = None, clock: Clock | None = None, wrangler: Wrangler | None = None,
        source_factory: SourceFactory | None = None, metrics: Metrics | None = None,
        alerts: AlertSink | None = None, watch_id: str | None = None,
    ) -> None:
        self.options = options
        self.target = target
        self.journal = journal
        self.bus = bus or EventBus()
        self.clock = clock or SystemClock()
        self.wrangler = wrangler
        self.metrics = metrics
        self.alerts = alerts or AlertSink(None)
        self.watch_id = watch_id or "watch-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._source_factory = source_factory or self._default_source
        self.board = GuardBoard(guards, self.bus, on_breach=self._on_breach)
        self.board.will_roll_back = lambda g, w: self.options.rollback_on_breach and w not in self._rolled_back
        self.monitors: dict[str, Monitor] = {}
        self.totals: dict[str, Totals] = {}
        self.hourly = HourlyRecorder(options.workers, grace_s=options.hour_grace_s)
        self.hours: list[HourSummary] = []
        self.rollbacks: list[RollbackDone] = []
        self._rolled_back: set[str] = set()
        self._pending_rollbacks: list[tuple[str, Breach]] = []
        #: rollback-guard breaches this watch does not roll back: alerted once the previous version is known
        self._alert_only: dict[int, Breach] = {}
        self._pending_alerts: list[Breach] = []
        self._alerts_running = 0
        #: per worker, the rollback hint of its last alert-only breach (for the summary)
        self._hints: dict[str, str] = {}
        self._tracker = AlertTracker(self.clock.now, defer=lambda breach: id(breach) in self._alert_only)
        self._seen_at_tick: dict[str, int] = {}
        self._monitor_states: dict[str, tuple[bool, int]] = {}
        self._blind_alerted: dict[str, float] = {}
        self._observer: MemoryObjectReceiveStream[EngineEvent] | None = None

    # -- sources -------------------------------------------------------------------------------------
    def _default_source(self, worker: str) -> Source:
        if self.options.source == "ws":
            from .wstail import WebSocketTailSource

            return WebSocketTailSource(worker=worker, env=dict(self.target.env), clock=self.clock.now,
                                       state_dir=self.options.journal_path.parent)
        if self.wrangler is None:
            raise UsageError("watch needs wrangler for --source wrangler")
        return WranglerTailSource(argv=self.wrangler.tail_argv(worker), env=self.wrangler.process_env(),
                                  clock=self.clock.now)

    def _statuses(self) -> dict[str, SourceStatus]:
        return {w: m.source.status for w, m in self.monitors.items()}

    def _signals(self) -> dict[str, WorkerSignals]:
        return {w: m.signals for w, m in self.monitors.items()}

    # -- guards --------------------------------------------------------------------------------------
    def _on_events(self, worker: str, events: list[TailEvent]) -> None:
        self.totals[worker].observe(worker, events)

    def _judge_idle(self, worker: str, now: float) -> None:
        """Events drive the judging (per event, in event time); a worker that received none since the last
        tick is judged on the clock instead, so its windows empty out into ``no_data``."""
        monitor = self.monitors[worker]
        seen = monitor.decoder.events
        if self._seen_at_tick.get(worker) == seen:
            self.board.evaluate(worker, monitor.signals, int(now * 1000))
        self._seen_at_tick[worker] = seen

    def _on_breach(self, guard: Guard, breach: Breach) -> None:
        self.hourly.note_breach(breach.worker, breach.event_time or self.clock.now())
        if guard.action != "rollback":
            return
        if self.options.rollback_on_breach and breach.worker not in self._rolled_back:
            self._rolled_back.add(breach.worker)
            self._pending_rollbacks.append((breach.worker, breach))
        else:  # the board published the breach just now; the observer sees it later and leaves it to us
            self._alert_only[id(breach)] = breach
            self._pending_alerts.append(breach)

    def may_change(self) -> list[str]:
        """The workers this watch may roll back: none without ``rollback_on_breach``."""
        if not self.options.rollback_on_breach:
            return []
        return [w for w in self.options.workers
                if any(g.action == "rollback" and self.board.applies(g, w) for g in self.board.guards)]

    # -- alert without rolling back --------------------------------------------------------------------
    async def _alert_not_rolled_back(self, breach: Breach) -> None:
        """A rollback guard breached and this watch does not roll back: alert, with the exact command."""
        worker = breach.worker
        try:
            why = ("one rollback per worker per watch, done already" if self.options.rollback_on_breach
                   else "watch runs without --rollback-on-breach")
            _, previous, unknown = await self._versions(worker)
            hint = manual_rollback_hint(worker, previous, unknown)
            self._hints[worker] = hint
            self.bus.publish(Message(level="warn", text=f"{breach.guard} on {worker}: alert — not rolled back "
                                                        f"({why}); {hint}"))
            self.alerts.send_nowait(self._tracker.breach_alert(breach, note=f"alert — not rolled back ({why})",
                                                               hint=hint))
        finally:
            self._alerts_running -= 1

    async def _versions(self, worker: str) -> tuple[str | None, str | None, str]:
        """The worker's current and previous 100% versions, and why they are unknown ("" when known)."""
        if self.wrangler is None:
            return None, None, "no wrangler to read deployments with"
        try:
            current, previous = await previous_version(self.wrangler, worker)
        except WranglerError as exc:
            return None, None, f"cannot read deployments of {worker}: {str(exc)[:160]}"
        return current, previous, ""

    # -- rollback ------------------------------------------------------------------------------------
    async def _rollback(self, worker: str, breach: Breach) -> None:
        self.bus.publish(Message(level="warn", text=f"rolling back {worker}: {breach.guard} {breach.detail}"))
        current: str | None = None
        previous: str | None = None
        detail = ""
        verified = False
        attempts = 0
        if self.wrangler is None:
            detail = "no wrangler to roll back with"
        else:
            current, previous, detail = await self._versions(worker)
            if previous is None and not detail:
                detail = f"{worker} has no earlier deployment of a single version at 100%: nothing to roll back to"
            if previous is not None:
                attempts, verified, detail = await self._rollback_to(worker, current, previous, breach)
        if verified:
            # judge recovery on what the restored version serves from now on
            self.board.arm(worker, int(self.clock.now() * 1000))
        done = RollbackDone(worker=worker, from_version=current, to_version=previous or "", attempts=attempts,
                            verified=verified, detail=detail)
        self.rollbacks.append(done)
        self.bus.publish(done)

    async def _rollback_to(self, worker: str, current: str | None, previous: str,
                           breach: Breach) -> tuple[int, bool, str]:
        assert self.wrangler is not None
        outcome = await rollback_and_verify(
            self.wrangler, self.bus, worker, current, previous, f"rollout watch: {breach.guard} breached",
            attempts=self.options.rollback_attempts, backoff_s=self.options.rollback_backoff_s)
        return outcome.attempts, outcome.verified, outcome.detail

    # -- the ticker ----------------------------------------------------------------------------------
    async def _ticker(self, tg: anyio.abc.TaskGroup, end: float) -> None:
        last_stats = -1e9
        while True:
            await anyio.sleep(self.options.tick_s)
            now = self.clock.now()
            while self._pending_rollbacks:
                worker, breach = self._pending_rollbacks.pop(0)
                tg.start_soon(self._rollback, worker, breach)
            while self._pending_alerts:
                self._alerts_running += 1
                tg.start_soon(self._alert_not_rolled_back, self._pending_alerts.pop(0))
            if anyio.current_time() - last_stats >= self.options.stats_interval_s:
                last_stats = anyio.current_time()
                for worker in self.monitors:
                    self._judge_idle(worker, now)
                    self._publish_stats(worker, now)
                if self.metrics is not None:
                    self.metrics.remaining.set(max(0.0, end - now))
            self._check_blind(now)
            await self._close_hours(self.hourly.due(now, self._signals(), self._statuses()))

    def _check_blind(self, now: float) -> None:
        for worker, monitor in self.monitors.items():
            status = monitor.source.status
            state = (status.connected, status.reconnects)
            if self._monitor_states.get(worker) != state:
                self._monitor_states[worker] = state
                self.bus.publish(MonitorState(worker=worker, connected=status.connected, reconnects=status.reconnects,
                                              blind_s=status.blind_s(now), detail=status.last_exit[:200]))
            since = status.blind_since
            if since is None:
                self._blind_alerted.pop(worker, None)
                continue
            if now - since > self.options.blind_alert_s and self._blind_alerted.get(worker) != since:
                self._blind_alerted[worker] = since
                text = (f":see_no_evil: tail of {worker} blind for {now - since:.0f}s (> "
                        f"{self.options.blind_alert_s:.0f}s): guards cannot see; last exit: {status.last_exit[:120]}")
                self.bus.publish(Message(level="warn", text=text))
                self.alerts.send_nowait(Alert("blind", worker, text, now, fields={"blind_s": now - since}))

    def _publish_stats(self, worker: str, now: float) -> None:
        monitor = self.monitors[worker]
        now_ms = int(now * 1000)
        minute = monitor.signals.window(now_ms - 60_000, now_ms + 1)
        baseline = self.board.baselines.get(worker)
        versions = {}
        for version in monitor.signals.versions():
            count = monitor.signals.window(now_ms - 60_000, now_ms + 1, version=version).requests
            if count:
                versions[version] = count
        self.bus.publish(WorkerStats(
            worker=worker, rps=minute.requests / 60.0, error_rate=minute.error_rate,
            baseline_error_rate=baseline.error_rate if baseline is not None else None,
            requests=self.totals[worker].requests, errors=minute.errors,
            pattern_per_hour={name: minute.rate_per_hour(name) for name in minute.pattern_counts},
            versions=versions, parse_errors=monitor.decoder.parse_errors, sampled=monitor.signals.sampling))

    async def _close_hours(self, hours: list[HourSummary]) -> None:
        for hour in hours:
            self.hours.append(hour)
            self.bus.publish(Message(text=hour.line()))
            with anyio.CancelScope(shield=True):
                await self.journal.record_hour(self.watch_id, hour.worker, hour.hour_start, hour.requests,
                                               hour.errors, hour.data())

    async def _baseline(self, start: float) -> None:
        seconds = self.options.baseline_s
        if seconds <= 0:
            return
        while True:  # polled: the clock may be simulated
            if self.clock.now() >= start + seconds:
                break
            await anyio.sleep(self.options.tick_s)
        start_ms, end_ms = int(start * 1000), int((start + seconds) * 1000)
        for worker, monitor in self.monitors.items():
            stats = monitor.signals.window(start_ms, end_ms)
            self.board.baselines[worker] = stats if stats.requests else None
            self.bus.publish(BaselineMeasured(
                worker=worker, requests=stats.requests, errors=stats.errors, seconds=seconds,
                pattern_rates={k: stats.rate_per_hour(k) for k in stats.pattern_counts}))

    async def _observe(self, stream: MemoryObjectReceiveStream[EngineEvent]) -> None:
        """Metrics and alerts from bus events (one consumer, so neither can slow the monitors)."""
        async with stream:
            async for event in stream:
                if self.metrics is not None:
                    self.metrics.observe(event)
                alert = self._tracker.from_event(event)
                if alert is not None:
                    self.alerts.send_nowait(alert)

    # -- the run -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _locks(self) -> AsyncIterator[None]:
        """The rollout lock of every worker this watch may roll back (LockHeld names the holder)."""
        workers = self.may_change()
        if not workers:
            yield
            return
        plan = "watch --rollback-on-breach: " + ", ".join(self.options.workers)
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(hold_locks(workers, env=self.target.env, plan=plan))
            except LockHeld as exc:
                raise LockHeld(f"not watching with --rollback-on-breach: {exc} (a watch without "
                               "--rollback-on-breach only alerts and takes no lock)") from None
            yield

    async def run(self) -> WatchResult:
        """Watch until the deadline; with ``rollback_on_breach``, under the lock of the workers it may roll back.

        Raises:
            LockHeld: a worker this watch may roll back is locked by a rollout (or by another such watch).
        """
        async with self._locks():
            return await self._run()

    async def _run(self) -> WatchResult:
        options = self.options
        started = self.clock.now()
        end = started + options.duration_s
        await self.journal.start_rollout(self.watch_id, "watch: " + ", ".join(options.workers), None,
                                         self.target.name, self.target.api_base, self.target.edge_url, started,
                                         os.getpid(), mode="watch")
        observer = self._observer = self.bus.subscribe("watch-observer", buffer=10_000)
        self.bus.publish(RolloutStarted(rollout_id=self.watch_id, plan="watch", target=self.target.name,
                                        workers=tuple(options.workers), phases=("watch",)))
        self.bus.publish(PhaseStarted(index=0, phase="watch"))
        for worker in options.workers:
            monitor = Monitor(worker, self._source_factory(worker), patterns=options.patterns,
                              on_events=self._on_events, board=self.board, clock=self.clock.now)
            self.monitors[worker] = monitor
            totals = Totals.for_monitor(monitor)
            self.totals[worker] = totals
            if self.metrics is not None:
                self.metrics.track(totals)
            self.board.arm(worker, int(started * 1000))
        self.hourly.start(started, self._statuses())
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._observe, observer)
            outer.start_soon(self.alerts.run)
            async with anyio.create_task_group() as tg:
                for monitor in self.monitors.values():
                    tg.start_soon(monitor.run)
                tg.start_soon(self._ticker, tg, end)
                tg.start_soon(self._baseline, started)
                while True:  # polled: the clock may be simulated; rollbacks in flight finish first
                    if (self.clock.now() >= end and not self._pending_rollbacks and not self._rollbacks_running()
                            and not self._pending_alerts and not self._alerts_running):
                        break
                    await anyio.sleep(self.options.tick_s)
                tg.cancel_scope.cancel()
            result = await self._finish(started)
            self.alerts.close()
            with anyio.move_on_after(10):
                await self._drain_alerts()
            outer.cancel_scope.cancel()
        return self._with_alert_stats(result)

    def _rollbacks_running(self) -> bool:
        return len(self.rollbacks) < len(self._rolled_back)

    async def _drain_alerts(self) -> None:
        # the observer must see the last events before the sink's queue closes; give it a moment
        stats = self.alerts.stats
        while True:
            if stats.sent + stats.failed >= stats.queued:
                break
            await anyio.sleep(0.05)

    async def _finish(self, started: float) -> WatchResult:
        now = self.clock.now()
        for worker, monitor in self.monitors.items():
            if monitor.signals.latest_ms:  # the last events, if they came within a judging interval
                self.board.evaluate(worker, monitor.signals, monitor.signals.latest_ms)
            self._publish_stats(worker, now)
        with anyio.CancelScope(shield=True):
            await self._close_hours(self.hourly.flush(now, self._signals(), self._statuses()))
        result = self._result(started, now)
        self.bus.publish(PhaseFinished(index=0, phase="watch", status="succeeded" if result.exit_code == 0
                                       else "failed", seconds=now - started, detail=result.detail))
        self.bus.publish(RolloutFinished(outcome=_finished_outcome(result.outcome), exit_code=result.exit_code,
                                         detail=result.detail))
        while True:  # let the observer turn the last events into alerts and metrics
            if self._observer is None or not self._observer.statistics().current_buffer_used:
                break
            await anyio.sleep(0.01)
        with anyio.CancelScope(shield=True):
            await self.journal.finish(self.watch_id, now, result.outcome, result.exit_code)
        return result

    def _result(self, started: float, ended: float) -> WatchResult:
        breaches = tuple(self.board.breaches)
        rollback_breaches = [b for b in breaches if b.action == "rollback"]
        failed = [r for r in self.rollbacks if not r.verified]
        if failed:
            outcome, code = "rollback_failed", EXIT_ROLLBACK_FAILED
            detail = "; ".join(f"{r.worker}: {r.detail}" for r in failed)
        elif self.rollbacks:
            outcome, code = "rolled_back", EXIT_ROLLED_BACK
            first = rollback_breaches[0] if rollback_breaches else None
            detail = (f"{first.guard} on {first.worker}: {first.detail}; rolled back "
                      + ", ".join(f"{r.worker} → {r.to_version}" for r in self.rollbacks)) if first else "rolled back"
        elif rollback_breaches:
            first = rollback_breaches[0]
            outcome, code = "breached", EXIT_ALERTED
            hint = self._hints.get(first.worker) or manual_rollback_hint(first.worker, None)
            detail = f"{first.guard} on {first.worker}: {first.detail} (alert — not rolled back; {hint})"
        else:
            outcome, code = "ok", EXIT_OK
            detail = f"no rollback-guard breach in {ended - started:.0f}s" + (
                f" ({len(breaches)} alert/warn breaches)" if breaches else "")
        blind = self._blindness(started, ended)
        if blind and code == EXIT_OK:
            outcome, code = "blind", EXIT_BLIND
            detail = "the guards could not see: " + "; ".join(blind)
        elif blind:
            detail += "; also blind: " + "; ".join(blind)
        workers = tuple(self._worker_summary(w, ended, started) for w in self.monitors)
        return WatchResult(self.watch_id, outcome, code, detail, started, ended, workers, breaches,
                           tuple(self.rollbacks), self.alerts.stats, tuple(self.hours))

    def _blindness(self, started: float, ended: float) -> list[str]:
        """Per worker that could not see, why: blind for more than ``max_blind`` of the watch, or no event."""
        seconds = max(ended - started, 1e-9)
        found = []
        for worker, monitor in self.monitors.items():
            blind_s = min(seconds, monitor.source.status.blind_s(ended))
            share = blind_s / seconds
            if not monitor.decoder.events:
                found.append(f"{worker}: no tail event in {seconds:.0f}s (blind {blind_s:.0f}s; no stream, a "
                             "silent one, or no traffic: nothing was judged)")
            elif share > self.options.max_blind:
                found.append(f"{worker}: blind {blind_s:.0f}s of {seconds:.0f}s ({share:.0%} > "
                             f"{self.options.max_blind:.0%} allowed, --max-blind)")
        return found

    def _worker_summary(self, worker: str, now: float, started: float | None = None) -> WorkerSummary:
        totals = self.totals[worker]
        monitor = self.monitors[worker]
        status = monitor.source.status
        blind_s = status.blind_s(now)
        seconds = now - started if started is not None else 0.0
        return WorkerSummary(worker, totals.requests, totals.errors, totals.patterns_total().get("do_churn", 0),
                             sum(1 for b in self.board.breaches if b.worker == worker), status.reconnects,
                             blind_s, monitor.decoder.parse_errors, monitor.signals.sampled_ms / 1000,
                             events=monitor.decoder.events,
                             blind_share=min(1.0, blind_s / seconds) if seconds > 0 else 0.0)

    def _with_alert_stats(self, result: WatchResult) -> WatchResult:
        stats = self.alerts.stats
        return WatchResult(result.watch_id, result.outcome, result.exit_code, result.detail, result.started,
                           result.ended, result.workers, result.breaches, result.rollbacks,
                           AlertStats(stats.queued, stats.sent, stats.failed, stats.dropped, stats.attempts,
                                      stats.last_error), result.hours)


def _finished_outcome(outcome: str) -> Literal["succeeded", "rolled_back", "rollback_failed", "failed"]:
    if outcome == "ok":
        return "succeeded"
    if outcome == "rolled_back":
        return "rolled_back"
    if outcome == "rollback_failed":
        return "rollback_failed"
    return "failed"


# -- workers that exist ------------------------------------------------------------------------------------
async def check_workers_exist(wrangler: Wrangler, workers: Sequence[str]) -> None:
    """Refuse to watch a worker the target does not have (a typo watches nothing, blind, all night).

    ``wrangler deployments status --name W --json`` for each worker, concurrently; Cloudflare's codes 10007
    and 10090 mean there is no such worker.  Any other failure (API down, a timeout) is logged and the
    watch goes on: its blind rules tell what it could not see.

    Raises:
        UsageError: naming every worker that does not exist.
    """
    from .prechange import _NO_SUCH_WORKER

    missing: list[str] = []

    async def check(worker: str) -> None:
        try:
            result = await wrangler.run("deployments", "status", "--name", worker, "--json")
        except WranglerError as exc:
            logger.warning("cannot tell whether worker %s exists: %s", worker, exc)
            return
        if result.ok:
            return
        if any(code in result.codes for code in _NO_SUCH_WORKER):
            missing.append(worker)
        else:
            first = result.error_text.splitlines()[0] if result.error_text else f"exit {result.returncode}"
            logger.warning("cannot tell whether worker %s exists: %s", worker, first)

    async with anyio.create_task_group() as tg:
        for worker in dict.fromkeys(workers):
            tg.start_soon(check, worker)
    if missing:
        names = ", ".join(sorted(missing))
        raise UsageError(f"not watching: no worker named {names} on this target (`wrangler deployments status "
                         f"--name {sorted(missing)[0]}` says it does not exist); check the name")


# -- guards from a file or a plan ------------------------------------------------------------------------
def load_guards(guards_path: Path | None, plan_path: Path | None) -> list[Guard]:
    """``guards = [...]`` from a Python file, the guards of a plan, or the runbook's defaults."""
    if guards_path is not None and plan_path is not None:
        raise UsageError("give --guards or --plan, not both")
    if plan_path is not None:
        from .plan import load_plan

        return list(load_plan(plan_path).guards)
    if guards_path is None:
        return default_guards()
    if not guards_path.is_file():
        raise UsageError(f"--guards {guards_path}: no such file")
    namespace: dict[str, object] = {"__file__": str(guards_path), "__name__": "rollout_guards"}
    try:
        code = compile(guards_path.read_text(encoding="utf-8"), str(guards_path), "exec")
        exec(code, namespace)
    except Exception as exc:  # user code: say where, never a traceback from our internals
        raise UsageError(f"--guards {guards_path}: {type(exc).__name__}: {exc}") from exc
    guards = namespace.get("guards")
    if not isinstance(guards, list | tuple) or not all(isinstance(g, Guard) for g in guards):
        raise UsageError(f"--guards {guards_path}: define `guards = [...]` (a list of rollout.guards guards)")
    return list(guards)


# -- end to end: target, journal, view, metrics server, alerts ---------------------------------------------
async def run_watch(options: WatchOptions, *, clock: Clock | None = None,
                    source_factory: SourceFactory | None = None) -> WatchResult:
    """Open the target, journal, view and metrics server, watch, and return the result."""
    from .runner import journal_writer, make_view, open_target

    if not options.workers:
        raise UsageError("name at least one worker to watch")
    guards = options.guards if options.guards is not None else load_guards(options.guards_path, options.plan_path)
    console = options.console or Console()
    run_dir = options.journal_path.parent
    await anyio.Path(run_dir).mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    server = None
    if options.metrics_port is not None:
        server = MetricsServer(metrics, host=options.metrics_host, port=options.metrics_port)
        server.start()
    try:
        async with open_target(options.sim, options.scenario, options.api_base, run_dir) as (target, _sim):
            wrangler = Wrangler.for_project(None, target.env, run_dir / "wrangler")
            await check_workers_exist(wrangler, options.workers)
            bus = EventBus()
            view = make_view(console, options.tty)
            alerts = AlertSink(options.webhook, attempts=options.alert_attempts, backoff_s=options.alert_backoff_s,
                               on_result=metrics.count_alert)
            async with Journal(options.journal_path) as journal:
                watcher = Watcher(options, target, guards=guards, journal=journal, bus=bus, clock=clock,
                                  wrangler=wrangler, source_factory=source_factory, metrics=metrics, alerts=alerts)
                journal_stream = bus.subscribe("journal", buffer=100_000)
                view_stream = bus.subscribe("view", buffer=10_000)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(journal_writer, journal, watcher.watch_id, journal_stream)
                    tg.start_soon(view.run, view_stream)
                    try:
                        result = await watcher.run()
                    finally:
                        bus.close()
    finally:
        if server is not None:
            server.stop()
    return result
