"""A minimal HTTP/1.1 server: h11 on anyio TCP listeners, loopback by default.

The application is one object with two coroutines: ``handle(request) -> Response`` for plain requests
and ``websocket(request, stream, leftover)`` for upgrades, which then owns the connection.

Whatever a client does costs that one connection only: a reset, a half-close, a client that stops
reading (a send that does not finish within :attr:`Limits.send_timeout`) or one that sends nothing
for :attr:`Limits.idle_timeout` ends its connection, logged at debug level.  At most
:attr:`Limits.max_connections` connections are served at once; past that, new ones are closed as soon
as they are accepted.
"""

from __future__ import annotations

import errno
import hmac
import logging
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import anyio
import h11
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream, TaskGroup, TaskStatus

logger = logging.getLogger("rollout.sim")

_MAX_BODY = 64 << 20
_READ_SIZE = 65536
_SEND_CHUNK = 65536

#: simultaneous connections served by default; past it new connections are closed at once
DEFAULT_MAX_CONNECTIONS = 4096
#: a keep-alive connection that sends nothing for this long is closed (seconds)
IDLE_TIMEOUT = 60.0
#: a send that does not complete within this long drops the connection: its reader stopped reading
SEND_TIMEOUT = 30.0
#: file handles kept free for everything else the process opens (listeners, SQLite, pipes, logs)
FD_RESERVE = 256
#: a spell at the connection cap ends once the open connections fall to this fraction of the cap
_CAP_HYSTERESIS = 0.9
#: back-off after accept() failed for lack of file handles or memory
_ACCEPT_BACKOFF = 0.1
_OUT_OF_HANDLES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: what a peer that went away looks like: anyio's wrappers, and the OSErrors underneath them
#: (ConnectionResetError, BrokenPipeError, ...; TimeoutError from a send timeout is one too)
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError,
)


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (compared in constant time)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def is_disconnect(exc: BaseException) -> bool:
    """True for a connection error, or an exception group made only of connection errors."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_disconnect(e) for e in exc.exceptions)
    return isinstance(exc, CONNECTION_ERRORS)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-server limits; see the module docstring."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    send_timeout: float = SEND_TIMEOUT


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """Connections of one server so far (for tests and the CLI log)."""

    accepted: int
    open: int
    peak: int
    refused: int
    cap: int


def ensure_file_limit(max_connections: int) -> int:
    """Make room for ``max_connections`` sockets; returns the cap that fits.

    Raises the soft ``RLIMIT_NOFILE`` to the hard limit when it is lower than ``max_connections``
    plus :data:`FD_RESERVE`; when even that is not enough, lowers the cap (logged at warning).
    """
    try:
        import resource
    except ImportError:  # not POSIX: leave the limits alone
        return max_connections
    needed = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else needed
    if soft != resource.RLIM_INFINITY and soft < needed and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            logger.info("raised the open-file limit from %d to %d", soft, target)
            soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        cap = max(1, soft - FD_RESERVE)
        logger.warning("connection cap lowered from %d to %d: the open-file limit is %d", max_connections, cap, soft)
        return cap
    return max_connections


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


class _IdleTimeout(Exception):
    """The client sent nothing for the idle timeout."""


class _Connection:
    def __init__(self, stream: ByteStream, app: Application, limits: Limits) -> None:
        self.stream = stream
        self.app = app
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER)
        self.eof = False

    async def _event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = b""
            with anyio.move_on_after(self.limits.idle_timeout) as idle:
                try:
                    data = await self.stream.receive(_READ_SIZE)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    data = b""
            if idle.cancelled_caught:
                raise _IdleTimeout(f"nothing received for {self.limits.idle_timeout:g} s")
            self.eof = not data
            self.conn.receive_data(data)

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            with anyio.fail_after(self.limits.send_timeout):
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
        body = response.body
        for start in range(0, len(body), _SEND_CHUNK):  # the send timeout is per piece: "no progress"
            await self._send(h11.Data(data=body[start : start + _SEND_CHUNK]))
        await self._send(h11.EndOfMessage())

    async def run(self) -> None:
        while True:
            try:
                request = await self._read_request()
            except h11.RemoteProtocolError as exc:
                if self.eof:  # the client went away mid-request
                    logger.debug("client closed the connection mid-request: %s", exc)
                    return
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


def _peer(stream: SocketStream) -> str:
    try:
        address = stream.extra(SocketAttribute.remote_address)
    except (OSError, anyio.TypedAttributeLookupError):
        return "?"
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


class Server:
    """Accepts connections on one or more listeners and serves each with ``app`` under ``limits``."""

    def __init__(self, app: Application, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self._open = 0
        self._accepted = 0
        self._peak = 0
        self._refused = 0
        self._spell_refused = 0
        self._capped = False
        self._starved = False

    def stats(self) -> ConnectionStats:
        return ConnectionStats(self._accepted, self._open, self._peak, self._refused, self.limits.max_connections)

    async def run(self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve on ``host:port`` until cancelled; reports the bound port through task_status."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
        bound = listener.extra(SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            for one in listener.listeners:
                assert isinstance(one, SocketListener)
                tg.start_soon(self._accept_loop, one, tg)
            task_status.started(bound)

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_HANDLES:
                    logger.debug("accept failed: %s", exc)  # e.g. ECONNABORTED: that client is gone already
                    continue
                if not self._starved:
                    self._starved = True
                    logger.warning("cannot accept connections: %s (%d open); retrying", exc, self._open)
                await anyio.sleep(_ACCEPT_BACKOFF)
                continue
            self._starved = False
            if self._open >= self.limits.max_connections:
                self._refuse()
                await stream.aclose()
                continue
            self._accepted += 1
            self._open += 1
            self._peak = max(self._peak, self._open)
            tg.start_soon(self._serve_one, stream)

    def _refuse(self) -> None:
        self._refused += 1
        self._spell_refused += 1
        if not self._capped:
            self._capped = True
            logger.warning("connection cap of %d reached: closing new connections until some end",
                           self.limits.max_connections)

    def _closed_one(self) -> None:
        self._open -= 1
        if self._capped and self._open <= self.limits.max_connections * _CAP_HYSTERESIS:
            logger.info("below the connection cap again (%d open); %d connections were refused meanwhile",
                        self._open, self._spell_refused)
            self._capped, self._spell_refused = False, 0

    async def _serve_one(self, stream: SocketStream) -> None:
        """The per-connection boundary: nothing a client does gets past it."""
        peer = _peer(stream)
        try:
            async with stream:
                await _Connection(stream, self.app, self.limits).run()
        except TimeoutError:
            logger.debug("connection from %s dropped: a send did not complete within %g s",
                         peer, self.limits.send_timeout)
        except _IdleTimeout as exc:
            logger.debug("idle connection from %s closed: %s", peer, exc)
        except h11.ProtocolError as exc:
            logger.debug("connection from %s ended: %s", peer, exc)
        except Exception as exc:
            if is_disconnect(exc):
                logger.debug("connection from %s ended: %r", peer, exc)
            else:  # our bug: say so loudly, but keep serving everyone else
                logger.warning("connection from %s failed; the server carries on", peer, exc_info=True)
        finally:
            self._closed_one()


def raw_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """An HTTP/1.1 response as bytes, for answers written after h11 has let go of the connection."""
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    if body or status >= 200:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
