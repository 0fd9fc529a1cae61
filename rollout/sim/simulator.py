"""The simulator: one loopback HTTP server for the API, the tail WebSockets and the edge."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import ByteStream, TaskGroup

from rollout.errors import SimulatorError
from rollout.sim._api import API_PREFIX, Api, ApiCall, envelope
from rollout.sim._clock import SimClock
from rollout.sim._edge import Edge
from rollout.sim._faults import FaultInjector
from rollout.sim._http import (
    DEFAULT_MAX_CONNECTIONS,
    IDLE_TIMEOUT,
    SEND_TIMEOUT,
    ConnectionStats,
    Limits,
    Request,
    Response,
    Server,
    bearer_matches,
    ensure_file_limit,
    raw_response,
)
from rollout.sim._state import State, Worker
from rollout.sim._store import Store
from rollout.sim._tail import TailHub, TailStats
from rollout.sim._ws import WebSocket, WebSocketProtocolError, handshake_headers
from rollout.sim.scenario import Scenario, load_scenario

logger = logging.getLogger("rollout.sim")

DEFAULT_ACCOUNT_ID = "5eed5eed5eed5eed5eed5eed5eed5eed"
DEFAULT_API_TOKEN = "rollout-sim-dummy-token"
_TAIL_PREFIX = "/tail/"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    id: str
    number: int
    created_at: float
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    id: str
    created_at: float
    versions: tuple[tuple[str, float], ...]
    annotations: dict[str, str]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Simulator:
    """A local stand-in for the part of Cloudflare that wrangler talks to.

    Use it as ``async with Simulator(scenario="bad-release") as sim:`` and point wrangler at
    ``sim.env()``.

    Args:
        scenario: a shipped scenario name, a path to a TOML file, or a loaded :class:`Scenario`.
        port: the TCP port; 0 picks a free one.
        host: the address to bind; loopback only unless ``allow_remote``.
        state_path: an SQLite file that keeps workers, versions and deployments across restarts.
        clock: epoch seconds of the simulated world (default ``time.time``).
        speed: simulated time runs this many times faster than ``clock``.
        traffic_rate: generated requests per second per worker, overriding the scenario (0: none).
        allow_remote: allow a non-loopback ``host`` (the CLI sets it when ``--host`` is given).
        require_token: check ``Authorization: Bearer <api_token>`` on every API call and tail socket,
            with a random ``api_token``.  Default: only when ``host`` is not loopback (on loopback the
            token is a fixed dummy nobody checks).
        max_connections: simultaneous connections served; past it new ones are closed at once.  Lowered
            when the open-file limit cannot be raised enough.
        idle_timeout: seconds a keep-alive connection may send nothing before it is closed.
        send_timeout: seconds a send may take before its connection is dropped (the client stopped
            reading).  Together with the per-tail queue this bounds the memory a slow reader costs.
    """

    def __init__(
        self, scenario: str | Path | Scenario = "healthy", *, port: int = 0, host: str = "127.0.0.1",
        state_path: str | Path | None = None, clock: Callable[[], float] | None = None, speed: float = 1.0,
        traffic_rate: float | None = None, allow_remote: bool = False, require_token: bool | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise SimulatorError(
                f"refusing to bind the simulator to {host}, beyond loopback: use 127.0.0.1, or pass --host "
                "explicitly to really bind elsewhere (the API then needs the random token it prints)"
            )
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.host = host
        self.port = port
        self.account_id = DEFAULT_ACCOUNT_ID
        self.token_required = not is_loopback(host) if require_token is None else require_token
        self.api_token = secrets.token_urlsafe(32) if self.token_required else DEFAULT_API_TOKEN
        if max_connections < 1:
            raise SimulatorError(f"max_connections must be at least 1, got {max_connections}")
        self.limits = Limits(max_connections, idle_timeout, send_timeout)
        self._server: Server | None = None
        self.clock = SimClock(clock, speed)
        self.state = State(self.clock.now)
        self._store = Store(Path(state_path)) if state_path is not None else None
        self.hub = TailHub(self.clock, self.scenario.tail, self.scenario.seed)
        self.edge = Edge(self.state, self.scenario, self.clock, self.hub, traffic_rate)
        faults = FaultInjector(self.scenario.api_faults, self.scenario.api_delay)
        self.api = Api(self.state, self.clock, faults, self.account_id, self._tail_url,
                       self.scenario.tail.expire_after)
        self.api.token = self.api_token if self.token_required else None
        self._tg: TaskGroup | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._store is not None:
            self.state.workers.update(await self._store.open())
            self.api.on_change = self._store.save
        await self._preseed()
        cap = ensure_file_limit(self.limits.max_connections)
        if cap != self.limits.max_connections:
            self.limits = Limits(cap, self.limits.idle_timeout, self.limits.send_timeout)
        self._server = Server(self, self.limits)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            self.port = await self._tg.start(self._server.run, self.host, self.port)
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            raise
        self._tg.start_soon(self.edge.run_traffic)
        logger.info("simulator up at %s (scenario %s)", self.api_base_url, self.scenario.name)
        if not is_loopback(self.host):
            logger.warning("simulator listening on %s port %d, beyond loopback: %s", self.host, self.port,
                           "API calls and tails need the token" if self.token_required
                           else "no token is checked (require_token=False)")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            if self._store is not None:
                with anyio.CancelScope(shield=True):
                    await self._store.close()

    def _preseed_storage(self) -> None:
        """The scenario's ``[resources]`` plus what the pre-seeded workers bind, minus ``missing``."""
        res, storage = self.scenario.resources, self.state.storage
        queues = list(res.queues)
        kv = list(res.kv)
        for spec in self.scenario.workers.values():
            for binding in spec.bindings:
                if binding.get("type") == "queue" and binding.get("queue_name"):
                    queues.append(str(binding["queue_name"]))
                if binding.get("type") == "kv_namespace" and binding.get("namespace_id"):
                    kv.append((str(binding["name"]).lower(), str(binding["namespace_id"])))
        for queue in queues:
            if not res.is_missing("queue", queue):
                self.state.queues.setdefault(queue, uuid.uuid5(uuid.NAMESPACE_URL, queue).hex)
        for title, ns_id in kv:
            if not res.is_missing("kv", title, ns_id):
                storage.add_kv(title, ns_id)
        for name, db_id in res.d1:
            if not res.is_missing("d1", name, db_id):
                storage.add_d1(name, db_id)
        for bucket in res.r2:
            if not res.is_missing("r2", bucket):
                storage.add_r2(bucket)

    async def _preseed(self) -> None:
        self._preseed_storage()
        for spec in self.scenario.workers.values():
            if self.scenario.resources.is_missing("worker", spec.name):
                continue
            if not spec.preseed or spec.name in self.state.workers:
                continue
            worker = self.state.create_worker(spec.name)
            worker.migration_tag = spec.migration_tag
            worker.do_classes = [str(b["class_name"]) for b in spec.bindings
                                 if b.get("type") == "durable_object_namespace" and not b.get("script_name")]
            version = self.state.add_version(
                worker, source="api", annotations={"workers/message": "pre-seeded by rollout sim"},
                compatibility_date="2026-04-01", bindings=[dict(b) for b in spec.bindings], modules=["index.js"],
            )
            self.state.deploy(worker, [(version.id, 100.0)], source="api",
                              annotations={"workers/triggered_by": "upload"})
            if self._store is not None:
                await self._store.save(worker)

    # --- addresses -----------------------------------------------------------------------------

    @property
    def _url_host(self) -> str:
        """The host for URLs: the bound address, or loopback when bound to every interface."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def api_base_url(self) -> str:
        return f"http://{self._url_host}:{self.port}{API_PREFIX}"

    @property
    def edge_url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables that point wrangler (and rollout's probes) at this simulator."""
        return {
            "CLOUDFLARE_API_BASE_URL": self.api_base_url,
            "CLOUDFLARE_ACCOUNT_ID": self.account_id,
            "CLOUDFLARE_API_TOKEN": self.api_token,
            "ROLLOUT_EDGE_URL": self.edge_url,
        }

    def _tail_url(self, request: Request, tail_id: str) -> str:
        host = request.headers.get("host") or f"{self._url_host}:{self.port}"
        url = f"ws://{host}{_TAIL_PREFIX}{tail_id}"
        # wrangler sends no Authorization on the tail socket: the URL is the capability, as on Cloudflare
        return f"{url}?key={self._tail_key(tail_id)}" if self.token_required else url

    def _tail_key(self, tail_id: str) -> str:
        return hmac.new(self.api_token.encode(), tail_id.encode(), hashlib.sha256).hexdigest()[:32]

    def _tail_authorised(self, request: Request, tail_id: str) -> bool:
        if not self.token_required:
            return True
        if bearer_matches(request.headers.get("authorization"), self.api_token):
            return True
        key = request.query.get("key", [""])[0]
        return hmac.compare_digest(key.encode(), self._tail_key(tail_id).encode())

    # --- state for tests and the demo ----------------------------------------------------------

    def first_fault_onset(self) -> float | None:
        """When a faulty behaviour of the scenario first served a request (epoch seconds), or None."""
        return self.edge.fault_onset

    def workers(self) -> list[str]:
        return sorted(self.state.workers)

    def _worker(self, name: str) -> Worker:
        worker = self.state.worker(name)
        if worker is None:
            raise SimulatorError(f"the simulator has no worker named {name!r}")
        return worker

    def active_versions(self, worker: str) -> list[tuple[str, float]]:
        """``[(version_id, percentage)]`` of the worker's current deployment."""
        return self._worker(worker).active

    def versions(self, worker: str) -> list[VersionInfo]:
        """The worker's versions, oldest first (``number`` 1 is the first uploaded)."""
        return [VersionInfo(v.id, v.number, v.created_at, dict(v.annotations)) for v in self._worker(worker).versions]

    def deployments(self, worker: str) -> list[DeploymentInfo]:
        """The worker's deployments, oldest first."""
        return [DeploymentInfo(d.id, d.created_at, tuple(d.versions), dict(d.annotations))
                for d in self._worker(worker).deployments]

    def api_calls(self) -> list[ApiCall]:
        """Every API call so far, in order."""
        return list(self.api.calls)

    def tail_stats(self) -> TailStats:
        return self.hub.stats()

    def connection_stats(self) -> ConnectionStats:
        """Connections accepted, open, the peak, and refused at the cap (zeros before the server starts)."""
        if self._server is None:
            return ConnectionStats(0, 0, 0, 0, self.limits.max_connections)
        return self._server.stats()

    def served(self, worker: str) -> dict[str, int]:
        """Requests served per version id (generated and probes)."""
        return dict(self.edge.served.get(worker, {}))

    def generate(self, worker: str, count: int) -> dict[str, int]:
        """Serve ``count`` generated requests to ``worker`` now; requests per version id."""
        return dict(self.edge.generate(worker, count))

    # --- the HTTP application ------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        if request.path.startswith(API_PREFIX):
            return await self.api.handle(request)
        return await self.edge.handle(request)

    async def websocket(self, request: Request, stream: ByteStream, leftover: bytes) -> None:
        tail_id = request.path[len(_TAIL_PREFIX):] if request.path.startswith(_TAIL_PREFIX) else ""
        if not self._tail_authorised(request, tail_id):
            logger.info("tail WebSocket %s refused: no valid token or key", request.path)
            await stream.send(raw_response(401, "Unauthorized", [("content-type", "application/json")],
                                           envelope(None, [{"code": 10000, "message": "Authentication error"}])))
            return
        tail = self.state.tails.get(tail_id)
        if tail is None:
            logger.warning("WebSocket upgrade for unknown path %s refused", request.path)
            await stream.send(raw_response(404, "Not Found", [("content-type", "text/plain")], b"no such tail\n"))
            return
        try:
            headers = handshake_headers(request.headers)
        except WebSocketProtocolError as exc:
            await stream.send(raw_response(400, "Bad Request", [("content-type", "text/plain")], f"{exc}\n".encode()))
            return
        await stream.send(raw_response(101, "Switching Protocols", headers))
        await self.hub.session(tail, WebSocket(stream, leftover, send_timeout=self.limits.send_timeout))
