"""What one request to one version does: status, body, logs, exceptions, timings.

Pure: given the scenario's :class:`WorkerSpec`, a version, the request, the simulated time and a
seeded ``random.Random``, it returns an :class:`Outcome`.  The log-rate accumulators are the only
memory, kept per worker in :class:`Behaviours`.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.sim.scenario import Behaviour, LogLine, Route, WorkerSpec

_PLACEHOLDER = re.compile(r"\{(worker|version|number|colo|channel|id|n|path|method|seq)\}")
_COLOS = ("SJC", "LAX", "IAD", "AMS", "FRA", "LHR", "NRT")
_CHANNELS = ("sports1", "news", "movies", "sports2")
#: most lines of one ``per_hour`` log line a request writes; what a long quiet spell owes beyond it is dropped
MAX_LINES_PER_REQUEST = 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    version_id: str
    number: int
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]
    outcome: str
    logs: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]
    wall_ms: float
    cpu_ms: float
    faulty: bool


@dataclass(slots=True)
class _Meter:
    """Per version and log line: fractional log lines owed, and when we last looked."""

    owed: dict[tuple[str, int], float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)


def render(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def match_route(routes: tuple[Route, ...], method: str, path: str) -> Route | None:
    for route in routes:
        if route.method in (method, "*") and fnmatch.fnmatchcase(path, route.path):
            return route
    return None


class Behaviours:
    """Turns requests into outcomes for one worker."""

    def __init__(self, spec: WorkerSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self._meter = _Meter()
        self._seq = 0
        #: Durable Objects restarted so far, per traffic move (by its index in the worker's moves)
        self._restarted: dict[int, int] = {}

    def _log_count(self, version_id: str, index: int, line: LogLine, elapsed: float) -> int:
        if line.per_hour is not None:
            key = (version_id, index)
            owed = self._meter.owed.get(key, self.rng.random()) + line.per_hour / 3600.0 * elapsed
            count = int(owed)
            self._meter.owed[key] = owed - count
            return min(count, MAX_LINES_PER_REQUEST)
        if line.probability is not None:
            return 1 if self.rng.random() < line.probability else 0
        return 1

    def _logs(self, version_id: str, lines: tuple[LogLine, ...], offset: int, elapsed: float,
              values: dict[str, str], ts_ms: int) -> list[dict[str, Any]]:
        out = []
        for i, line in enumerate(lines):
            for _ in range(self._log_count(version_id, offset + i, line, elapsed)):
                values["id"] = f"{self.rng.getrandbits(48):012x}"
                out.append({"message": [render(line.message, values)], "level": line.level, "timestamp": ts_ms})
        return out

    def _reset_wave(self, moves: Sequence[tuple[float, float, tuple[str, ...]]], version_id: str, now: float,
                    values: dict[str, str], ts_ms: int) -> list[dict[str, Any]]:
        """The reset logs of the Durable Objects due to restart by ``now`` after each traffic move, written on
        a request to a version that gained the traffic (the restarted objects serve it)."""
        spec = self.spec.durable_objects
        if spec is None or not spec.instances:
            return []
        out: list[dict[str, Any]] = []
        for i, (at, share, gained) in enumerate(moves):
            total = round(spec.instances * share)
            done = self._restarted.get(i, 0)
            if done >= total or now < at or version_id not in gained:
                continue
            due = int(total * min(1.0, (now - at) / spec.wave_s))
            if due > done:
                self._restarted[i] = due
                for _ in range(due - done):
                    out += self._logs("", spec.reset_logs, 2000, 0.0, values, ts_ms)
        return out

    def serve(self, version_id: str, number: int, live_since: float | None, method: str, path: str,
              now: float, moves: Sequence[tuple[float, float, tuple[str, ...]]] = ()) -> Outcome:
        """The outcome of ``method path`` on the ``number``-th version at simulated time ``now``; ``moves``
        are the worker's traffic moves (for the Durable-Object reset wave)."""
        self._seq += 1
        chosen = self.spec.behaviour_for(number)
        started = live_since is not None and now - live_since >= chosen.onset_after
        b = chosen if (started or not chosen.fault) else self.spec.behaviour
        last = self._meter.last.get(version_id, now)
        self._meter.last[version_id] = now
        elapsed = max(0.0, now - last)
        channel = next((c for c in _CHANNELS if c in path), self.rng.choice(_CHANNELS))
        values = {
            "worker": self.spec.name, "version": version_id, "number": str(number), "path": path,
            "method": method, "colo": self.rng.choice(_COLOS), "channel": channel, "n": str(self._seq),
            "seq": str(self._seq),
        }
        ts_ms = int(now * 1000)
        logs = self._logs(version_id, b.logs, 0, elapsed, values, ts_ms)
        if b is chosen and chosen.fault:
            logs += self._logs(version_id, b.fault_logs, 1000, elapsed, values, ts_ms)
        if moves:
            logs += self._reset_wave(moves, version_id, now, values, ts_ms)
        return self._respond(b, version_id, number, method, path, values, logs, ts_ms, started and b.fault)

    def _respond(self, b: Behaviour, version_id: str, number: int, method: str, path: str,
                 values: dict[str, str], logs: list[dict[str, Any]], ts_ms: int, faulty: bool) -> Outcome:
        rng = self.rng
        wall = max(0.5, rng.gauss(b.latency_ms, b.latency_ms / 4)) if b.latency_ms else 0.0
        cpu = max(0.1, rng.gauss(b.cpu_ms, b.cpu_ms / 4)) if b.cpu_ms else 0.0
        exceptions: list[dict[str, Any]] = []
        if b.exception_rate and rng.random() < b.exception_rate:
            message = render(b.exception_message, values)
            exceptions.append({
                "name": b.exception_name, "message": message, "timestamp": ts_ms,
                "stack": f"{b.exception_name}: {message}\n    at Object.fetch (index.js:42:11)",
            })
            body = b"Error 1101: Worker threw exception"
            return Outcome(version_id, number, 500, body, "text/plain", {}, "exception", logs, exceptions,
                           round(wall, 1), round(cpu, 1), faulty)
        if b.error_rate and rng.random() < b.error_rate:
            if b.error_log:
                logs.append({"message": [render(b.error_log, values)], "level": "error", "timestamp": ts_ms})
            return Outcome(version_id, number, b.error_status, render(b.error_body, values).encode(),
                           "text/plain; charset=utf-8", {}, "ok", logs, exceptions, round(wall, 1),
                           round(cpu, 1), faulty)
        route = match_route(self.spec.routes, method, path)
        if route is None:
            return Outcome(version_id, number, 404, b"not found\n", "text/plain; charset=utf-8", {}, "ok",
                           logs, exceptions, round(wall, 1), round(cpu, 1), faulty)
        return Outcome(version_id, number, route.status, render(route.body, values).encode(),
                       route.content_type, dict(route.headers), "ok", logs, exceptions, round(wall, 1),
                       round(cpu, 1), faulty)

    def sample_request(self) -> tuple[str, str]:
        """A (method, path) for generated traffic, drawn by route weight."""
        routes = [r for r in self.spec.routes if r.weight > 0] or list(self.spec.routes)
        if not routes:
            return "GET", "/"
        route = self.rng.choices(routes, weights=[r.weight or 1.0 for r in routes])[0]
        return (route.method if route.method != "*" else "GET"), route.sample_path
