"""The edge: serves deployed workers over HTTP and generates their background traffic.

A request picks a version by the active deployment's percentages (a seeded ``random.Random`` per
worker), gets its outcome from the scenario, and becomes a trace item on every open tail of the worker.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel

from rollout.errors import SimulatorError
from rollout.sim._behaviour import Behaviours, Outcome
from rollout.sim._clock import SimClock
from rollout.sim._http import Request, Response
from rollout.sim._state import State, Version, Worker
from rollout.sim._tail import TailHub
from rollout.sim._trace import trace_item
from rollout.sim.scenario import MAX_TRAFFIC_RATE, Scenario

logger = logging.getLogger("rollout.sim")

_TICK = 0.1
#: generated requests served between two checkpoints, so cancellation (SIGTERM) and the API are never starved
_BATCH = 100
#: real seconds of owed traffic kept when the generator falls behind; the rest is dropped, not caught up
_MAX_BACKLOG_S = 1.0
_GENERATED_HEADERS = {"accept": "*/*", "user-agent": "rollout-sim-traffic/1", "cf-connecting-ip": "203.0.113.7"}


class Edge:
    def __init__(self, state: State, scenario: Scenario, clock: SimClock, hub: TailHub,
                 traffic_rate: float | None = None) -> None:
        if traffic_rate is not None and not _valid_rate(traffic_rate):
            raise SimulatorError(
                f"traffic rate (--traffic-rate, Simulator(traffic_rate=...)) must be a finite number from 0 to "
                f"{MAX_TRAFFIC_RATE:,.0f} requests/s per worker, got {traffic_rate!r}"
            )
        self.state = state
        self.scenario = scenario
        self.clock = clock
        self.hub = hub
        self.traffic_rate = traffic_rate
        self.served: dict[str, Counter[str]] = {}
        self.fault_onset: float | None = None
        self._behaviours: dict[str, Behaviours] = {}

    def _behaviour(self, worker: str) -> Behaviours:
        found = self._behaviours.get(worker)
        if found is None:
            rng = random.Random(f"{self.scenario.seed}:{worker}")
            found = self._behaviours[worker] = Behaviours(self.scenario.worker(worker), rng)
        return found

    def rate(self, worker: str) -> float:
        if self.traffic_rate is not None:
            return self.traffic_rate
        spec_rate = self.scenario.worker(worker).traffic_rate
        return spec_rate if spec_rate is not None else self.scenario.traffic_rate

    def pick(self, worker: Worker, rng: random.Random) -> Version | None:
        active = [(vid, pct) for vid, pct in worker.active if pct > 0]
        if not active:
            return None
        x, total = rng.random() * sum(p for _, p in active), 0.0
        for vid, pct in active:
            total += pct
            if x < total:
                return worker.version(vid)
        return worker.version(active[-1][0])

    def serve(self, name: str, method: str, path: str, headers: dict[str, str],
              query: str = "") -> Outcome | None:
        """One request to a worker: route, compute, record, and publish its trace item."""
        worker = self.state.worker(name)
        if worker is None:
            return None
        behaviours = self._behaviour(name)
        version = _override(worker, name, headers) or self.pick(worker, behaviours.rng)
        if version is None:
            return None
        now = self.clock.now()
        outcome = behaviours.serve(version.id, version.number, worker.live_since.get(version.id), method, path, now,
                                   worker.traffic_moves)
        self.served.setdefault(name, Counter())[version.id] += 1
        if outcome.faulty and self.fault_onset is None:
            self.fault_onset = now
            logger.info("fault: version %d of %s served its first faulty request", version.number, name)
        if self.hub.listening(name):
            url = f"https://{name}.rollout-sim.workers.dev{path}{'?' + query if query else ''}"
            self.hub.publish(name, trace_item(
                worker=name, version_id=version.id, tag=version.annotations.get("workers/tag"),
                message=version.annotations.get("workers/message"), outcome=outcome, url=url, method=method,
                headers=headers, timestamp=now,
            ))
        return outcome

    def generate(self, name: str, count: int) -> Counter[str]:
        """Serve ``count`` generated requests to a worker now; returns requests per version id."""
        served: Counter[str] = Counter()
        behaviours = self._behaviour(name)
        for _ in range(count):
            method, path = behaviours.sample_request()
            outcome = self.serve(name, method, path, _GENERATED_HEADERS)
            if outcome is not None:
                served[outcome.version_id] += 1
        return served

    async def run_traffic(self) -> None:
        """Background load for every deployed worker, forever.

        It serves the workers in turn, ``_BATCH`` requests at a time, and yields to the event loop after
        each batch, so it stays cancellable (SIGTERM) and the API stays served at any rate and speed.
        Traffic that cannot be served within ``_MAX_BACKLOG_S`` real seconds is dropped, not caught up.
        """
        owed: dict[str, float] = {}
        last = anyio.current_time()
        behind = False
        while True:
            await anyio.sleep(_TICK)
            now = anyio.current_time()
            elapsed, last = min(now - last, _MAX_BACKLOG_S) * self.clock.speed, now
            due: dict[str, int] = {}
            for name, worker in list(self.state.workers.items()):
                if not worker.active:
                    continue
                owed[name] = owed.get(name, 0.0) + self.rate(name) * elapsed
                due[name] = int(owed[name])
                owed[name] -= due[name]
            while any(due.values()):
                for name, count in due.items():
                    batch = min(count, _BATCH)
                    if batch:
                        self.generate(name, batch)
                        due[name] -= batch
                        await anyio.lowlevel.checkpoint()
                if any(due.values()) and anyio.current_time() - now > _MAX_BACKLOG_S:
                    if not behind:
                        logger.warning("traffic: the simulator cannot serve the scenario's rate; dropping "
                                       "%d generated requests (and more, silently, while it stays behind)",
                                       sum(due.values()))
                    behind = True
                    break

    def _target(self, request: Request) -> tuple[str, str] | None:
        path = request.path
        host = request.headers.get("host", "").split(":")[0]
        first_label = host.split(".")[0] if "." in host else ""
        if first_label and first_label in self.state.workers:
            return first_label, path
        parts = path.split("/", 2)
        if len(parts) >= 2 and parts[1]:
            return parts[1], "/" + (parts[2] if len(parts) > 2 else "")
        return None

    async def handle(self, request: Request) -> Response:
        target = self._target(request)
        if target is None:
            names = ", ".join(sorted(self.state.workers)) or "none yet"
            body = f"rollout sim edge: ask for /<worker>/<path>; workers: {names}\n"
            return Response(404, body.encode(), content_type="text/plain; charset=utf-8")
        name, path = target
        headers = {k: v for k, v in request.headers.items() if k != "host"}
        outcome = self.serve(name, request.method, path, headers, urlsplit(request.target).query)
        if outcome is None:
            body = f"rollout sim edge: no worker named {name!r} is deployed\n"
            return Response(404, body.encode(), content_type="text/plain; charset=utf-8")
        await self.clock.sleep(outcome.wall_ms / 1000.0)
        headers_out = [*outcome.headers.items(), ("x-rollout-sim-version", outcome.version_id)]
        return Response(outcome.status, outcome.body, headers_out, content_type=outcome.content_type)


def _valid_rate(rate: object) -> bool:
    return (isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(rate)
            and 0 <= rate <= MAX_TRAFFIC_RATE)


def _override(worker: Worker, name: str, headers: dict[str, str]) -> Version | None:
    """Cloudflare's ``Cloudflare-Workers-Version-Overrides: <worker>="<version id>"`` header: serve that
    version whatever the deployment says (how a 0% version is smoke-tested before it takes traffic)."""
    value = next((v for k, v in headers.items() if k.lower() == "cloudflare-workers-version-overrides"), None)
    if not value:
        return None
    for item in value.split(","):
        key, _, wanted = item.strip().partition("=")
        if key.strip() == name:
            return worker.version(wanted.strip().strip('"'))
    return None
