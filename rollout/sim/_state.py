"""The simulator's account state: workers, their versions, deployments and tails.

Plain mutable records owned by one event loop; :mod:`rollout.sim._store` persists them.  Nothing
here knows about HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rollout.sim._storage import Storage

AUTHOR_EMAIL = "sim@rollout.invalid"


def iso(ts: float) -> str:
    """Cloudflare's timestamp format, e.g. ``2026-11-21T10:00:05.123456Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Version:
    id: str
    number: int
    created_at: float
    source: str = "wrangler"
    annotations: dict[str, str] = field(default_factory=dict)
    main_module: str = "index.js"
    compatibility_date: str = ""
    compatibility_flags: list[str] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    etag: str = ""
    handlers: list[str] = field(default_factory=lambda: ["fetch"])


@dataclass(slots=True)
class Deployment:
    id: str
    created_at: float
    versions: list[tuple[str, float]]
    source: str = "wrangler"
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Tail:
    id: str
    worker: str
    filters: list[dict[str, Any]]
    created_at: float
    expires_at: float


@dataclass(slots=True)
class Worker:
    name: str
    created_at: float
    versions: list[Version] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    subdomain_enabled: bool = True
    previews_enabled: bool = True
    migration_tag: str | None = None
    do_classes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    #: version id -> when it first took traffic (epoch seconds)
    live_since: dict[str, float] = field(default_factory=dict)
    #: ``(when, share, versions)`` for each deployment that moved a share of the traffic to versions that did
    #: not serve it before, and which versions gained it (the Durable-Object reset wave); the first
    #: deployment moves nothing
    traffic_moves: list[tuple[float, float, tuple[str, ...]]] = field(default_factory=list)

    def version(self, version_id: str) -> Version | None:
        return next((v for v in self.versions if v.id == version_id), None)

    @property
    def active(self) -> list[tuple[str, float]]:
        """``[(version_id, percentage)]`` of the newest deployment."""
        return list(self.deployments[-1].versions) if self.deployments else []

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Worker:
        data = dict(data)
        data["versions"] = [Version(**v) for v in data["versions"]]
        data["deployments"] = [
            Deployment(**{**d, "versions": [tuple(p) for p in d["versions"]]}) for d in data["deployments"]
        ]
        data["traffic_moves"] = [(float(m[0]), float(m[1]), tuple(m[2])) for m in data.get("traffic_moves", [])]
        return cls(**data)


def traffic_gains(before: list[tuple[str, float]], after: list[tuple[str, float]]) -> dict[str, float]:
    """Version id -> the share of traffic (0..1) that ``after`` sends to it and ``before`` did not."""
    old = dict(before)
    return {vid: (pct - old.get(vid, 0.0)) / 100.0 for vid, pct in after if pct > old.get(vid, 0.0)}


class State:
    """All workers of the one simulated account, plus its tails."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.workers: dict[str, Worker] = {}
        self.tails: dict[str, Tail] = {}
        #: queue name -> queue id (the queues the scenario's bindings name)
        self.queues: dict[str, str] = {}
        #: D1 databases, R2 buckets and KV namespaces (what preflight and the Migrate phase use)
        self.storage = Storage(clock)

    def worker(self, name: str) -> Worker | None:
        return self.workers.get(name)

    def create_worker(self, name: str) -> Worker:
        worker = Worker(name=name, created_at=self.clock())
        self.workers[name] = worker
        return worker

    def add_version(self, worker: Worker, **fields: Any) -> Version:
        version = Version(
            id=new_id(), number=len(worker.versions) + 1, created_at=self.clock(),
            etag=uuid.uuid4().hex, **fields,
        )
        worker.versions.append(version)
        return version

    def deploy(
        self, worker: Worker, versions: list[tuple[str, float]], *, source: str = "wrangler",
        annotations: dict[str, str] | None = None,
    ) -> Deployment:
        now = self.clock()
        if worker.deployments and (gains := traffic_gains(worker.active, versions)):
            worker.traffic_moves.append((now, sum(gains.values()), tuple(gains)))
        deployment = Deployment(new_id(), now, versions, source, dict(annotations or {}))
        worker.deployments.append(deployment)
        for version_id, percentage in versions:
            if percentage > 0:
                worker.live_since.setdefault(version_id, now)
        return deployment

    def create_tail(self, worker: str, filters: list[dict[str, Any]], lifetime: float) -> Tail:
        now = self.clock()
        tail = Tail(new_id(), worker, filters, now, now + lifetime)
        self.tails[tail.id] = tail
        return tail
