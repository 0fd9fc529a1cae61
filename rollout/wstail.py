"""Read a worker's tail straight from the Cloudflare API and its WebSocket, without node (``--source ws``).

The same life cycle as wrangler's, done by us: create the tail (``POST …/tails``), connect to its URL
with the ``trace-v1`` subprotocol, send ``{"debug": false}``, read one trace item per message, and
delete the tail on the way out.  Sessions are renewed before ``expires_at`` (tails go silent after
about an hour without closing), re-created with jittered backoff when the socket drops (reset after a
stable session), and restarted by the silence watchdog of :func:`~rollout.sources.run_sessions` when a
socket stays open but stops carrying events.  The stream is connected when the socket is open and
subscribed (wrangler's pretty mode prints "Connected to W" at that point; its json mode prints nothing,
so a wrangler stream is connected only at its first event), and blind again when it closes or goes
silent.

Tails left behind by a runner that died (SIGKILL: no ``finally`` runs) are deleted by the next source
for the same worker: with ``state_dir`` set, each tail is recorded in ``state_dir/tails/`` until it is
deleted, with the pid of its runner, and records of runners that are gone are deleted on the server at
the next start.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import anyio
import httpx
import websockets
from websockets.asyncio.client import connect

from .sources import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_SILENCE_MIN_EVENTS,
    DEFAULT_SILENCE_S,
    DEFAULT_STABLE_S,
    SessionPolicy,
    SourceStatus,
    run_sessions,
)

logger = logging.getLogger("rollout.wstail")

DEFAULT_API_BASE = "https://api.cloudflare.com/client/v4"


@dataclass
class WebSocketTailSource:
    """A tail read with httpx (create/delete) and websockets (stream)."""

    worker: str
    env: Mapping[str, str]
    clock: Callable[[], float]
    max_session_s: float = 50 * 60
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = DEFAULT_STABLE_S
    silence_s: float = DEFAULT_SILENCE_S
    silence_min_events: float = DEFAULT_SILENCE_MIN_EVENTS
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    #: where tails are recorded until deleted (None: not recorded)
    state_dir: Path | None = None
    status: SourceStatus = field(default_factory=SourceStatus)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def api_base(self) -> str:
        return self.env.get("CLOUDFLARE_API_BASE_URL", DEFAULT_API_BASE).rstrip("/")

    @property
    def account(self) -> str:
        return self.env.get("CLOUDFLARE_ACCOUNT_ID", "")

    @property
    def tails_url(self) -> str:
        return f"{self.api_base}/accounts/{self.account}/workers/scripts/{self.worker}/tails"

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy(self.backoff_initial_s, self.backoff_max_s, self.stable_s, self.silence_s,
                             self.silence_min_events, self.connect_timeout_s)

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        headers = {"Authorization": f"Bearer {self.env.get('CLOUDFLARE_API_TOKEN', '')}"}
        async with httpx.AsyncClient(headers=headers, timeout=15.0, trust_env=False) as client:
            await self._delete_left_behind(client)

            async def session() -> None:
                try:
                    await self._session(client, on_chunk)
                except (httpx.HTTPError, OSError, websockets.exceptions.WebSocketException, ValueError) as exc:
                    self.status.last_exit = f"{type(exc).__name__}: {exc}"[:200]

            await run_sessions(self.status, self.clock, self.rng, session, self.policy)

    async def _session(self, client: httpx.AsyncClient, on_chunk: Callable[[bytes], None]) -> None:
        response = await client.post(self.tails_url, content=json.dumps({"filters": []}),
                                     headers={"Content-Type": "text/plain;charset=UTF-8"})
        envelope = response.json()
        if not envelope.get("success"):
            errors = envelope.get("errors") or []
            raise ValueError(f"creating the tail failed (HTTP {response.status_code}): {errors}")
        result = envelope["result"]
        tail_id, url = result["id"], result["url"]
        record = await self._record(tail_id)
        lifetime = min(self.max_session_s, _seconds_until(result.get("expires_at"), self.clock()) - 60)
        try:
            async with connect(url, subprotocols=[websockets.Subprotocol("trace-v1")], compression=None,
                               ping_interval=10, ping_timeout=20, max_size=2**24) as socket:
                await socket.send(json.dumps({"debug": False}))
                # The socket tells us when the stream is up (what wrangler's pretty mode prints as "Connected
                # to W, waiting for logs..."; its json mode prints nothing).  A socket that then stays silent
                # while the worker has traffic is the silence watchdog's to catch.
                self.status.stream_up(self.clock())
                with anyio.move_on_after(max(5.0, lifetime)):
                    async for message in socket:
                        data = message.encode() if isinstance(message, str) else bytes(message)
                        self.status.events_seen(self.clock())
                        on_chunk(data + b"\n")
                self.status.last_exit = "session renewed before expiry"
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await client.delete(f"{self.tails_url}/{tail_id}")
                except httpx.HTTPError as exc:
                    logger.info("deleting tail %s failed: %s", tail_id, exc)
                else:
                    if record is not None:
                        await record.unlink(missing_ok=True)

    # -- tails left behind ---------------------------------------------------------------------------
    def _records(self) -> anyio.Path | None:
        return anyio.Path(self.state_dir) / "tails" if self.state_dir is not None else None

    async def _record(self, tail_id: str) -> anyio.Path | None:
        folder = self._records()
        if folder is None:
            return None
        try:
            await folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self.worker}.{tail_id}.json"
            await path.write_text(json.dumps({"worker": self.worker, "tail_id": tail_id, "pid": os.getpid(),
                                              "api_base": self.api_base, "account": self.account,
                                              "created": self.clock()}))
        except OSError as exc:
            logger.info("cannot record tail %s: %s", tail_id, exc)
            return None
        return path

    async def _delete_left_behind(self, client: httpx.AsyncClient) -> None:
        """Delete on the server the tails of this worker recorded by runners that are gone."""
        folder = self._records()
        if folder is None or not await folder.is_dir():
            return
        async for path in folder.glob(f"{self.worker}.*.json"):
            try:
                data = json.loads(await path.read_text())
                pid, tail_id = int(data["pid"]), str(data["tail_id"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (_alive(pid) or data.get("worker") != self.worker or data.get("api_base") != self.api_base
                    or data.get("account") != self.account):
                continue
            with anyio.move_on_after(5):
                try:
                    response = await client.delete(f"{self.tails_url}/{tail_id}")
                except httpx.HTTPError as exc:
                    logger.info("deleting tail %s left by pid %d failed: %s", tail_id, pid, exc)
                    continue
                logger.info("deleted tail %s of %s left by pid %d (HTTP %d)", tail_id, self.worker, pid,
                            response.status_code)
                if response.status_code < 500:  # gone, or deleted now
                    await path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another source of this very process may be using it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _seconds_until(expires_at: object, now: float) -> float:
    if not isinstance(expires_at, str):
        return 3600.0
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 3600.0
    return max(0.0, when - now)
