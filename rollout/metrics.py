"""Prometheus metrics on a registry of our own (never the global one), fed from the bus.

Names follow Prometheus conventions: ``rollout_`` prefix, base units, ``_total`` for counters.  Labels
are bounded: worker names come from the plan, guard names from the plan, versions only as the
``role`` of a bounded set, never URLs or free text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .bus import (
    BaselineMeasured,
    Breach,
    EngineEvent,
    GuardState,
    MonitorState,
    PhaseFinished,
    PhaseStarted,
    RollbackDone,
    WorkerStats,
)

GUARD_STATES = ("ok", "breach", "no_data", "inconclusive")
PHASE_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")


class Metrics:
    """Every series rollout exports.  ``observe(event)`` updates them from engine events."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("rollout_requests", "Requests seen in the tail", ["worker"], registry=r)
        self.errors = Counter("rollout_errors", "Failed requests seen in the tail (outcome not ok or status >= 500)",
                              ["worker"], registry=r)
        self.error_ratio = Gauge("rollout_error_ratio", "Error ratio over the last 10 s", ["worker"], registry=r)
        self.baseline_error_ratio = Gauge("rollout_baseline_error_ratio", "Error ratio measured before the deploy",
                                          ["worker"], registry=r)
        self.pattern_total = Counter("rollout_log_pattern_matches", "Log lines matching a watched pattern",
                                     ["worker", "pattern"], registry=r)
        self.pattern_rate = Gauge("rollout_log_pattern_per_hour", "Matches of a watched pattern per hour (last 60 s)",
                                  ["worker", "pattern"], registry=r)
        self.guard_state = Gauge("rollout_guard_state", "1 for the guard's current state, 0 for the others",
                                 ["worker", "guard", "state"], registry=r)
        self.guard_value = Gauge("rollout_guard_value", "The value a guard last judged", ["worker", "guard"],
                                 registry=r)
        self.guard_threshold = Gauge("rollout_guard_threshold", "The threshold a guard judges against",
                                     ["worker", "guard"], registry=r)
        self.breaches = Counter("rollout_breaches", "Guard breaches", ["worker", "guard", "action"], registry=r)
        self.rollbacks = Counter("rollout_rollbacks", "Rollbacks by result", ["worker", "result"], registry=r)
        self.tail_connected = Gauge("rollout_tail_connected", "1 while the tail streams", ["worker"], registry=r)
        self.tail_reconnects = Gauge("rollout_tail_reconnects", "Tail restarts so far", ["worker"], registry=r)
        self.blind_seconds = Gauge("rollout_tail_blind_seconds", "Seconds without a tail stream so far", ["worker"],
                                   registry=r)
        self.parse_errors = Gauge("rollout_tail_parse_errors", "Tail objects that could not be parsed", ["worker"],
                                  registry=r)
        self.sampled = Gauge("rollout_tail_sampled", "1 while Cloudflare samples the tail", ["worker"], registry=r)
        self.phase_state = Gauge("rollout_phase_state", "1 for the phase's current state", ["phase", "state"],
                                 registry=r)
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def observe(self, event: EngineEvent) -> None:
        with self._lock:
            self._observe(event)

    def _observe(self, event: EngineEvent) -> None:
        if isinstance(event, WorkerStats):
            self._stats(event)
        elif isinstance(event, GuardState):
            for state in GUARD_STATES:
                self.guard_state.labels(event.worker, event.guard, state).set(1.0 if state == event.state else 0.0)
            if event.value is not None:
                self.guard_value.labels(event.worker, event.guard).set(event.value)
            self.guard_threshold.labels(event.worker, event.guard).set(event.threshold)
        elif isinstance(event, Breach):
            self.breaches.labels(event.worker, event.guard, event.action).inc()
        elif isinstance(event, RollbackDone):
            self.rollbacks.labels(event.worker, "verified" if event.verified else "unverified").inc()
        elif isinstance(event, MonitorState):
            self.tail_connected.labels(event.worker).set(1.0 if event.connected else 0.0)
            self.tail_reconnects.labels(event.worker).set(event.reconnects)
            self.blind_seconds.labels(event.worker).set(event.blind_s)
        elif isinstance(event, BaselineMeasured):
            if event.requests:
                self.baseline_error_ratio.labels(event.worker).set(event.errors / event.requests)
        elif isinstance(event, PhaseStarted | PhaseFinished):
            status = "running" if isinstance(event, PhaseStarted) else event.status
            for state in PHASE_STATES:
                self.phase_state.labels(event.phase, state).set(1.0 if state == status else 0.0)

    def _stats(self, event: WorkerStats) -> None:
        worker = event.worker
        previous_requests, _ = self._seen.get(worker, (0, 0))
        if event.requests > previous_requests:
            self.requests.labels(worker).inc(event.requests - previous_requests)
        self._seen[worker] = (event.requests, 0)
        if event.error_rate is not None:
            self.error_ratio.labels(worker).set(event.error_rate)
        if event.baseline_error_rate is not None:
            self.baseline_error_ratio.labels(worker).set(event.baseline_error_rate)
        for pattern, rate in event.pattern_per_hour.items():
            self.pattern_rate.labels(worker, pattern).set(rate)
        self.parse_errors.labels(worker).set(event.parse_errors)
        self.sampled.labels(worker).set(1.0 if event.sampled else 0.0)
        self.requests.labels(worker)
        self.errors.labels(worker)

    def count_errors(self, worker: str, errors: int) -> None:
        if errors > 0:
            self.errors.labels(worker).inc(errors)

    def count_patterns(self, worker: str, counts: Iterable[tuple[str, int]]) -> None:
        for pattern, count in counts:
            if count > 0:
                self.pattern_total.labels(worker, pattern).inc(count)


@dataclass
class MetricsServer:
    """prometheus-client's HTTP server on our registry; ``port=0`` picks a free port."""

    metrics: Metrics
    host: str = "127.0.0.1"
    port: int = 9464
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> int:
        server, thread = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        self._server, self._thread = server, thread
        return int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
