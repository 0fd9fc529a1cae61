"""Read a worker's tail straight from the Cloudflare API and its WebSocket, without node (``--source ws``).

The same life cycle as wrangler's, done by us: create the tail (``POST …/tails``), connect to its URL
with the ``trace-v1`` subprotocol, send ``{"debug": false}``, read one trace item per message, and
delete the tail on the way out.  Sessions are renewed before ``expires_at`` (tails go silent after
about an hour without closing) and re-created with jittered backoff when the socket drops.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import httpx
import websockets
from websockets.asyncio.client import connect

from .sources import SourceStatus, run_sessions

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
    status: SourceStatus = field(default_factory=SourceStatus)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def api_base(self) -> str:
        return self.env.get("CLOUDFLARE_API_BASE_URL", DEFAULT_API_BASE).rstrip("/")

    @property
    def tails_url(self) -> str:
        account = self.env.get("CLOUDFLARE_ACCOUNT_ID", "")
        return f"{self.api_base}/accounts/{account}/workers/scripts/{self.worker}/tails"

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        headers = {"Authorization": f"Bearer {self.env.get('CLOUDFLARE_API_TOKEN', '')}"}
        async with httpx.AsyncClient(headers=headers, timeout=15.0, trust_env=False) as client:

            async def session() -> bool:
                try:
                    return await self._session(client, on_chunk)
                except (httpx.HTTPError, OSError, websockets.exceptions.WebSocketException, ValueError) as exc:
                    self.status.last_exit = f"{type(exc).__name__}: {exc}"[:200]
                    return False

            await run_sessions(self.status, self.clock, self.rng, session, self.backoff_initial_s,
                               self.backoff_max_s)

    async def _session(self, client: httpx.AsyncClient, on_chunk: Callable[[bytes], None]) -> bool:
        response = await client.post(self.tails_url, content=json.dumps({"filters": []}),
                                     headers={"Content-Type": "text/plain;charset=UTF-8"})
        envelope = response.json()
        if not envelope.get("success"):
            errors = envelope.get("errors") or []
            raise ValueError(f"creating the tail failed: {errors}")
        result = envelope["result"]
        tail_id, url = result["id"], result["url"]
        lifetime = min(self.max_session_s, _seconds_until(result.get("expires_at"), self.clock()) - 60)
        got_data = False
        try:
            async with connect(url, subprotocols=[websockets.Subprotocol("trace-v1")], compression=None,
                               ping_interval=10, ping_timeout=20, max_size=2**24) as socket:
                await socket.send(json.dumps({"debug": False}))
                # Unlike wrangler's json output, the socket tells us when the stream is up.
                self.status.stream_up(self.clock())
                with anyio.move_on_after(max(5.0, lifetime)):
                    async for message in socket:
                        data = message.encode() if isinstance(message, str) else bytes(message)
                        got_data = True
                        self.status.last_data_at = self.clock()
                        on_chunk(data + b"\n")
                self.status.last_exit = "session renewed before expiry"
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await client.delete(f"{self.tails_url}/{tail_id}")
                except httpx.HTTPError as exc:
                    logger.info("deleting tail %s failed: %s", tail_id, exc)
        return got_data


def _seconds_until(expires_at: object, now: float) -> float:
    if not isinstance(expires_at, str):
        return 3600.0
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 3600.0
    return max(0.0, when - now)
