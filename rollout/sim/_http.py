"""A minimal HTTP/1.1 server: h11 on anyio TCP listeners, loopback by default.

The application is one object with two coroutines: ``handle(request) -> Response`` for plain requests
and ``websocket(request, stream, leftover)`` for upgrades, which then owns the connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import anyio
import h11
from anyio.abc import ByteStream, SocketAttribute, TaskStatus

logger = logging.getLogger("rollout.sim")

_MAX_BODY = 64 << 20
_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, body fully read.  Header names are lower case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def wants_websocket(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


class Application(Protocol):
    async def handle(self, request: Request) -> Response: ...

    async def websocket(self, request: Request, stream: ByteStream, leftover: bytes) -> None: ...


class _Connection:
    def __init__(self, stream: ByteStream, app: Application) -> None:
        self.stream = stream
        self.app = app
        self.conn = h11.Connection(h11.SERVER)

    async def _event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                data = b""
            self.conn.receive_data(data)

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send(data)

    async def _read_request(self) -> Request | None:
        event = await self._event()
        if not isinstance(event, h11.Request):
            return None
        body = bytearray()
        while True:
            part = await self._event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > _MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
            elif isinstance(part, h11.EndOfMessage) or part is h11.PAUSED:
                break
            else:
                return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        return Request(event.method.decode(), event.target.decode("latin-1"), headers, bytes(body))

    async def respond(self, response: Response) -> None:
        headers = [("content-type", response.content_type), ("content-length", str(len(response.body)))]
        headers += [("server", "rollout-sim")] + response.headers
        await self._send(h11.Response(status_code=response.status, headers=headers))
        await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())

    async def run(self) -> None:
        while True:
            try:
                request = await self._read_request()
            except h11.RemoteProtocolError as exc:
                logger.warning("bad HTTP request: %s", exc)
                if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self.respond(Response(400, b"bad request\n", content_type="text/plain"))
                return
            if request is None:
                return
            if request.wants_websocket:
                await self._upgrade(request)
                return
            await self.respond(await self.app.handle(request))
            if self.conn.our_state is h11.MUST_CLOSE:
                return
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _upgrade(self, request: Request) -> None:
        leftover = self.conn.trailing_data[0]
        await self.app.websocket(request, self.stream, leftover)


async def _serve_one(stream: ByteStream, app: Application) -> None:
    async with stream:
        try:
            await _Connection(stream, app).run()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass
        except h11.LocalProtocolError as exc:
            logger.debug("connection ended: %s", exc)


async def serve(
    app: Application, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; reports the bound port through task_status."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = listener.extra(SocketAttribute.local_port)
    async with listener:
        task_status.started(bound)
        await listener.serve(lambda stream: _serve_one(stream, app))



def raw_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """An HTTP/1.1 response as bytes, for answers written after h11 has let go of the connection."""
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    if body or status >= 200:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
