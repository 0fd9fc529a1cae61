"""Prometheus metrics on a registry of our own (never the global one).

Two feeds:

* **Exact totals** (requests, errors, log-pattern matches, reconnects, blind seconds, parse errors) are
  read at scrape time from :class:`Totals` objects that the monitors keep up to date event by event
  (``Totals.observe`` is the monitor's ``on_events`` hook), so a counter never misses what a snapshot
  skipped.  :class:`TotalsCollector` turns them into ``*_total`` counters.
* **State** (guard state and thresholds, breaches, rollbacks, phases, baseline, windowed ratios and
  per-hour rates, alert deliveries) comes from engine events on the bus: ``Metrics.observe(event)``.

Names follow Prometheus conventions: ``rollout_`` prefix, base units, ``_total`` for counters.  Labels
are bounded: worker and guard names come from the plan or the command line, patterns are the keys of the
default patterns and of the plan's ``LogRate`` patterns (``[a-z0-9_]``, at most 47 characters, one per
pattern: :func:`rollout.patterns.pattern_key`), states and results from small enums.  Never URLs, version ids
or free text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .bus import (
    BaselineMeasured,
    Breach,
    EngineEvent,
    GuardState,
    PhaseFinished,
    PhaseStarted,
    RollbackDone,
    WorkerStats,
)
from .events import TailEvent
from .monitor import Monitor
from .patterns import DEFAULT_PATTERNS, Matcher, split_matchers
from .sources import SourceStatus

__all__ = [
    "GUARD_STATES",
    "METRIC_NAMES",
    "PHASE_STATES",
    "Metrics",
    "MetricsServer",
    "Totals",
    "TotalsCollector",
]

GUARD_STATES = ("ok", "breach", "no_data", "inconclusive")
PHASE_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")
ALERT_RESULTS = ("sent", "failed", "dropped")

#: Every series name rollout exports (counters with their ``_total`` suffix), for docs and tests.
METRIC_NAMES = (
    "rollout_requests_total", "rollout_errors_total", "rollout_log_pattern_matches_total",
    "rollout_tail_reconnects_total", "rollout_tail_blind_seconds_total", "rollout_tail_parse_errors_total",
    "rollout_tail_connected", "rollout_tail_sampled", "rollout_tail_sampled_ratio",
    "rollout_error_ratio", "rollout_baseline_error_ratio", "rollout_log_pattern_per_hour",
    "rollout_guard_state", "rollout_guard_value", "rollout_guard_threshold", "rollout_breaches_total",
    "rollout_recoveries_total", "rollout_rollbacks_total", "rollout_phase_state", "rollout_alerts_total",
    "rollout_watch_remaining_seconds",
)


class _Matcher:
    """The signals' pattern rules (substring, ``re:`` or compiled regular expression), once per log line."""

    def __init__(self, patterns: Mapping[str, Matcher]) -> None:
        names, substrings, regexes = split_matchers(patterns)
        self.names = names
        rules: dict[int, Callable[[str], bool]] = {i: _substring(needle) for i, needle in substrings}
        rules.update((i, _search(rx)) for i, rx in regexes)
        self._rules = [rules[i] for i in range(len(names))]

    def count(self, logs: tuple[str, ...], into: list[int]) -> None:
        for i, rule in enumerate(self._rules):
            for line in logs:
                if rule(line):
                    into[i] += 1


def _substring(needle: str) -> Callable[[str], bool]:
    return lambda line: needle in line


def _search(rx: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda line: rx.search(line) is not None


@dataclass
class Totals:
    """Exact cumulative counts of one worker's tail, updated on every batch of events.

    ``observe`` has the signature of :class:`rollout.monitor.Monitor`'s ``on_events`` hook.  The
    source status and signals (for the sampling state) are read at scrape time.
    """

    worker: str
    patterns: Mapping[str, Matcher] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))
    status: SourceStatus | None = None
    clock: Callable[[], float] = field(default=lambda: 0.0)
    parse_errors: Callable[[], int] = field(default=lambda: 0)
    sampling: Callable[[], tuple[bool, float]] = field(default=lambda: (False, 0.0))
    requests: int = 0
    errors: int = 0
    notices: int = 0

    def __post_init__(self) -> None:
        self._matcher = _Matcher(self.patterns)
        self.pattern_counts = [0] * len(self._matcher.names)

    def observe(self, worker: str, events: Iterable[TailEvent]) -> None:
        counts = self.pattern_counts
        for event in events:
            if event.worker is not None and event.worker != self.worker:
                continue
            if event.kind in ("overload", "overload-stop"):
                self.notices += 1
                continue
            self.requests += 1
            if event.is_error:
                self.errors += 1
            if event.logs:
                self._matcher.count(event.logs, counts)

    def patterns_total(self) -> dict[str, int]:
        return dict(zip(self._matcher.names, self.pattern_counts, strict=True))

    @classmethod
    def for_monitor(cls, monitor: Monitor) -> Totals:
        """Totals wired to a monitor's source status, decoder and signals (call ``observe`` from its hook)."""
        signals = monitor.signals

        def sampling() -> tuple[bool, float]:
            span = signals.latest_ms - signals.first_ms
            return signals.sampling, (signals.sampled_ms / span if span > 0 else 0.0)

        return cls(monitor.worker, patterns=dict(signals.patterns), status=monitor.source.status, clock=monitor.clock,
                   parse_errors=lambda: monitor.decoder.parse_errors, sampling=sampling)


class TotalsCollector(Collector):
    """Exposes registered :class:`Totals` at scrape time (called from prometheus-client's thread)."""

    def __init__(self) -> None:
        self._totals: dict[str, Totals] = {}

    def add(self, totals: Totals) -> None:
        self._totals[totals.worker] = totals

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "requests": CounterMetricFamily("rollout_requests", "Requests seen in the tail", labels=["worker"]),
            "errors": CounterMetricFamily(
                "rollout_errors", "Failed requests seen in the tail (outcome not ok or status >= 500)",
                labels=["worker"]),
            "patterns": CounterMetricFamily("rollout_log_pattern_matches", "Log lines matching a watched pattern",
                                            labels=["worker", "pattern"]),
            "reconnects": CounterMetricFamily("rollout_tail_reconnects", "Tail restarts", labels=["worker"]),
            "blind": CounterMetricFamily("rollout_tail_blind_seconds", "Seconds without a tail stream",
                                         labels=["worker"]),
            "parse": CounterMetricFamily("rollout_tail_parse_errors", "Tail objects that could not be parsed",
                                         labels=["worker"]),
            "connected": GaugeMetricFamily("rollout_tail_connected", "1 while the tail streams", labels=["worker"]),
            "sampled": GaugeMetricFamily("rollout_tail_sampled", "1 while Cloudflare samples the tail",
                                         labels=["worker"]),
            "sampled_ratio": GaugeMetricFamily(
                "rollout_tail_sampled_ratio", "Share of watched event time during which the tail was sampled",
                labels=["worker"]),
        }
        for worker, t in list(self._totals.items()):
            families["requests"].add_metric([worker], t.requests)
            families["errors"].add_metric([worker], t.errors)
            for pattern, count in t.patterns_total().items():
                families["patterns"].add_metric([worker, pattern], count)
            families["parse"].add_metric([worker], t.parse_errors())
            sampling, ratio = t.sampling()
            families["sampled"].add_metric([worker], 1.0 if sampling else 0.0)
            families["sampled_ratio"].add_metric([worker], ratio)
            if t.status is not None:
                families["reconnects"].add_metric([worker], t.status.reconnects)
                families["blind"].add_metric([worker], t.status.blind_s(t.clock()))
                families["connected"].add_metric([worker], 1.0 if t.status.connected else 0.0)
        yield from families.values()


class Metrics:
    """Every series rollout exports.  ``observe(event)`` updates the state series from engine events;
    ``track(totals)`` adds a worker's exact totals."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.totals = TotalsCollector()
        r.register(self.totals)
        self.error_ratio = Gauge("rollout_error_ratio", "Error ratio over the recent stats window of event time",
                                 ["worker"], registry=r)
        self.baseline_error_ratio = Gauge("rollout_baseline_error_ratio", "Error ratio of the baseline window",
                                          ["worker"], registry=r)
        self.pattern_rate = Gauge("rollout_log_pattern_per_hour", "Matches of a watched pattern per hour (last 60 s)",
                                  ["worker", "pattern"], registry=r)
        self.guard_state = Gauge("rollout_guard_state", "1 for the guard's current state, 0 for the others",
                                 ["worker", "guard", "state"], registry=r)
        self.guard_value = Gauge("rollout_guard_value", "The value a guard last judged", ["worker", "guard"],
                                 registry=r)
        self.guard_threshold = Gauge("rollout_guard_threshold", "The threshold a guard judges against",
                                     ["worker", "guard"], registry=r)
        self.breaches = Counter("rollout_breaches", "Guard breaches", ["worker", "guard", "action"], registry=r)
        self.recoveries = Counter("rollout_recoveries", "Guards back to ok after a breach", ["worker", "guard"],
                                  registry=r)
        self.rollbacks = Counter("rollout_rollbacks", "Rollbacks by result", ["worker", "result"], registry=r)
        self.phase_state = Gauge("rollout_phase_state", "1 for the phase's current state", ["phase", "state"],
                                 registry=r)
        self.alerts = Counter("rollout_alerts", "Webhook alerts by kind and delivery result", ["kind", "result"],
                              registry=r)
        self.remaining = Gauge("rollout_watch_remaining_seconds", "Seconds left in a watch", registry=r)
        self._breached: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def track(self, totals: Totals) -> None:
        self.totals.add(totals)

    def observe(self, event: EngineEvent) -> None:
        with self._lock:
            self._observe(event)

    def count_alert(self, kind: str, result: str) -> None:
        self.alerts.labels(kind, result).inc()

    def _observe(self, event: EngineEvent) -> None:
        if isinstance(event, WorkerStats):
            self._stats(event)
        elif isinstance(event, GuardState):
            self._guard(event)
        elif isinstance(event, Breach):
            self.breaches.labels(event.worker, event.guard, event.action).inc()
        elif isinstance(event, RollbackDone):
            self.rollbacks.labels(event.worker, "verified" if event.verified else "unverified").inc()
        elif isinstance(event, BaselineMeasured):
            if event.requests:
                self.baseline_error_ratio.labels(event.worker).set(event.errors / event.requests)
        elif isinstance(event, PhaseStarted | PhaseFinished):
            status = "running" if isinstance(event, PhaseStarted) else event.status
            for state in PHASE_STATES:
                self.phase_state.labels(event.phase, state).set(1.0 if state == status else 0.0)

    def _guard(self, event: GuardState) -> None:
        for state in GUARD_STATES:
            self.guard_state.labels(event.worker, event.guard, state).set(1.0 if state == event.state else 0.0)
        if event.value is not None:
            self.guard_value.labels(event.worker, event.guard).set(event.value)
        self.guard_threshold.labels(event.worker, event.guard).set(event.threshold)
        # counters exist at 0 from a guard's first judgement, so increase() sees the first breach too
        self.breaches.labels(event.worker, event.guard, event.action)
        self.recoveries.labels(event.worker, event.guard)
        key = (event.worker, event.guard)
        if event.state == "breach":
            self._breached.add(key)
        elif event.state == "ok" and key in self._breached:
            self._breached.discard(key)
            self.recoveries.labels(event.worker, event.guard).inc()

    def _stats(self, event: WorkerStats) -> None:
        worker = event.worker
        if event.error_rate is not None:
            self.error_ratio.labels(worker).set(event.error_rate)
        if event.baseline_error_rate is not None:
            self.baseline_error_ratio.labels(worker).set(event.baseline_error_rate)
        for pattern, rate in event.pattern_per_hour.items():
            self.pattern_rate.labels(worker, pattern).set(rate)


@dataclass
class MetricsServer:
    """prometheus-client's HTTP server on our registry; ``port=0`` picks a free port.

    The server runs in prometheus-client's own daemon thread; ``stop`` shuts it down.
    """

    metrics: Metrics
    host: str = "127.0.0.1"
    port: int = 9464
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> int:
        server, thread = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
