"""Tail sessions: fan trace items out to the open tail WebSockets, with the tail faults applied.

Memory per session is bounded: each subscriber has a queue of :data:`_BUFFER` items (items that do not
fit are withheld and counted), and the socket send is bounded by the WebSocket's send timeout, after
which a reader that stopped reading is dropped.  A peer that goes away, however rudely, ends its own
session only.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rollout.sim._clock import SimClock
from rollout.sim._http import CONNECTION_ERRORS
from rollout.sim._state import Tail
from rollout.sim._trace import overload_notice, passes
from rollout.sim._ws import WebSocket, WebSocketProtocolError
from rollout.sim.scenario import TailFaults

logger = logging.getLogger("rollout.sim")

_BUFFER = 2000
_CLOSE_GRACE = 2.0


@dataclass(eq=False, slots=True)
class _Subscriber:
    tail: Tail
    send: MemoryObjectSendStream[str]
    sampling: bool = False
    delivered: int = 0
    withheld: int = 0
    events: list[str] = field(default_factory=list)
    #: why the session ended, for the "disconnected" log line
    reason: str = "client closed"


@dataclass(frozen=True, slots=True)
class TailStats:
    """What happened on tail sockets so far (for tests and the CLI log)."""

    connections: int
    open: int
    delivered: int
    withheld: int
    unmasked_frames: int
    #: sessions dropped because a send did not complete within the send timeout
    slow_dropped: int = 0


class TailHub:
    def __init__(self, clock: SimClock, faults: TailFaults, seed: int) -> None:
        self.clock = clock
        self.faults = faults
        self._rng = random.Random(seed)
        self._subs: dict[str, set[_Subscriber]] = {}
        self._connections = 0
        self._delivered = 0
        self._withheld = 0
        self._unmasked = 0
        self._slow_dropped = 0

    def listening(self, worker: str) -> bool:
        return bool(self._subs.get(worker))

    def stats(self) -> TailStats:
        open_ = sum(len(s) for s in self._subs.values())
        return TailStats(self._connections, open_, self._delivered, self._withheld, self._unmasked,
                         self._slow_dropped)

    def publish(self, worker: str, item: dict[str, Any]) -> None:
        subs = self._subs.get(worker)
        if not subs:
            return
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
        now = self.clock.now()
        for sub in list(subs):
            if now >= sub.tail.expires_at:
                continue  # expired tails go silent but stay open, like Cloudflare's
            if not passes(sub.tail.filters, item, self._rng):
                continue
            if sub.sampling and self._rng.random() >= self.faults.sampling_keep:
                self._withheld += 1
                continue
            try:
                sub.send.send_nowait(text)
            except anyio.WouldBlock:
                self._withheld += 1

    async def session(self, tail: Tail, ws: WebSocket) -> None:
        """Serve one tail WebSocket until either side ends it."""
        send, receive = anyio.create_memory_object_stream[str](_BUFFER)
        sub = _Subscriber(tail, send)
        self._subs.setdefault(tail.worker, set()).add(sub)
        self._connections += 1
        logger.info("tail %s of %s connected", tail.id, tail.worker)
        try:
            async with send, receive, anyio.create_task_group() as tg:
                tg.start_soon(self._reader, ws, sub, tg.cancel_scope)
                tg.start_soon(self._writer, ws, receive, sub, tg.cancel_scope)
                if self.faults.drop_every:
                    tg.start_soon(self._dropper, ws, sub, tg.cancel_scope)
                if self.faults.sampling_after is not None:
                    tg.start_soon(self._sampler, sub)
        finally:
            self._subs[tail.worker].discard(sub)
            self._unmasked += ws.unmasked_frames
            logger.info("tail %s of %s disconnected (%s)", tail.id, tail.worker, sub.reason)

    async def _reader(self, ws: WebSocket, sub: _Subscriber, scope: CancelScope) -> None:
        try:
            while await ws.receive() is not None:
                pass  # {"debug":false} is the only thing wrangler sends; pings are answered inside
        except WebSocketProtocolError as exc:
            sub.reason = f"protocol error: {exc}"
            logger.debug("tail %s: %s; dropping the connection", sub.tail.id, exc)
            await ws.abort()
        except CONNECTION_ERRORS as exc:
            sub.reason = f"connection lost: {exc!r}"
            logger.debug("tail %s: connection lost while reading: %r", sub.tail.id, exc)
        finally:
            scope.cancel()

    async def _writer(self, ws: WebSocket, receive: MemoryObjectReceiveStream[str], sub: _Subscriber,
                      scope: CancelScope) -> None:
        try:
            async for text in receive:
                if ws.closed:
                    return
                await ws.send_text(text)
                sub.delivered += 1
                self._delivered += 1
        except TimeoutError:
            self._slow_dropped += 1
            sub.reason = f"the client read nothing for {ws.send_timeout:g} s"
            logger.debug("tail %s: a send did not complete within %g s; dropping the client",
                         sub.tail.id, ws.send_timeout)
        except CONNECTION_ERRORS as exc:
            sub.reason = f"connection lost: {exc!r}"
            logger.debug("tail %s: connection lost while writing: %r", sub.tail.id, exc)
        else:
            return
        await ws.abort()
        scope.cancel()

    async def _dropper(self, ws: WebSocket, sub: _Subscriber, scope: CancelScope) -> None:
        assert self.faults.drop_every is not None
        await self.clock.sleep(self.faults.drop_every)
        sub.reason = f"fault: {self.faults.drop_mode} drop"
        if self.faults.drop_mode == "tcp":
            logger.info("fault: dropping the tail TCP connection")
            await ws.abort()
            scope.cancel()
            return
        logger.info("fault: closing the tail WebSocket with code %d", self.faults.close_code)
        await ws.close(self.faults.close_code, "rollout sim: injected tail drop")
        await anyio.sleep(_CLOSE_GRACE)  # the reader ends the session when the client echoes the close
        await ws.abort()
        scope.cancel()

    async def _sampler(self, sub: _Subscriber) -> None:
        assert self.faults.sampling_after is not None
        await self.clock.sleep(self.faults.sampling_after)
        sub.sampling = True
        await sub.send.send(json.dumps(overload_notice(True, self.clock.now())))
        await self.clock.sleep(self.faults.sampling_for)
        sub.sampling = False
        await sub.send.send(json.dumps(overload_notice(False, self.clock.now())))
