"""A small, tolerant RFC 6455 WebSocket server side.

Why not the ``websockets`` library: wrangler (the ``ws`` client it bundles) sends its first frame,
``{"debug":false}``, *without a mask*.  RFC 6455 says a server must close the connection then, and
strict libraries do.  This codec accepts masked and unmasked client frames alike.

The codec (:class:`FrameParser`, :func:`encode_frame`) is sans-IO; :class:`WebSocket` puts it on an
anyio byte stream.  Only what the tail needs is here: text and binary messages, ping/pong, close.
permessage-deflate is declined simply by not echoing the extension.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import struct
from dataclasses import dataclass

import anyio
from anyio.abc import ByteStream

from rollout.sim._http import CONNECTION_ERRORS, SEND_TIMEOUT

logger = logging.getLogger("rollout.sim")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_MESSAGE = 1 << 20

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class WebSocketProtocolError(Exception):
    """The peer broke the framing rules in a way we cannot tolerate."""


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.strip().encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def handshake_headers(
    headers: dict[str, str], subprotocols: tuple[str, ...] = ("trace-v1",)
) -> list[tuple[str, str]]:
    """Headers of the 101 answer to an upgrade request (``headers`` keys are lower case).

    Raises:
        WebSocketProtocolError: the request is not a WebSocket version 13 upgrade.
    """
    if "websocket" not in headers.get("upgrade", "").lower():
        raise WebSocketProtocolError("not a websocket upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise WebSocketProtocolError("only WebSocket version 13 is supported")
    key = headers.get("sec-websocket-key")
    if not key:
        raise WebSocketProtocolError("missing Sec-WebSocket-Key")
    answer = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    for protocol in offered:
        if protocol in subprotocols:
            answer.append(("Sec-WebSocket-Protocol", protocol))
            break
    return answer


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame (payload already unmasked)."""

    opcode: int
    payload: bytes
    fin: bool = True
    masked: bool = False


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A server frame: never masked."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]


def parse_close(payload: bytes) -> tuple[int, str]:
    if len(payload) < 2:
        return 1005, ""
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode("utf-8", "replace")


class FrameParser:
    """Feed bytes, get frames.  Masked and unmasked client frames are both accepted."""

    def __init__(self, max_size: int = _MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> Frame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        if buf[0] & 0x70:
            raise WebSocketProtocolError("reserved bits set (no extension was negotiated)")
        masked, size, pos = bool(buf[1] & 0x80), buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return None
            (size,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif size == 127:
            if len(buf) < 10:
                return None
            (size,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if size > self._max_size:
            raise WebSocketProtocolError(f"frame of {size} bytes is too big")
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos : pos + 4]), pos + 4
        if len(buf) < pos + size:
            return None
        payload = bytes(buf[pos : pos + size])
        del buf[: pos + size]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return Frame(opcode, payload, fin, masked)


class WebSocket:
    """A server-side WebSocket over an anyio byte stream.

    :meth:`receive` answers pings and close frames itself and returns whole messages.  Sending is
    serialised with a lock, so a writer task and the reader's pong never interleave frames.

    A send that does not complete within ``send_timeout`` seconds (the peer stopped reading and the
    socket buffers are full) raises :class:`TimeoutError`; any failed send marks the socket closed.
    """

    def __init__(self, stream: ByteStream, initial: bytes = b"", *, send_timeout: float = SEND_TIMEOUT) -> None:
        self._stream = stream
        self.send_timeout = send_timeout
        self._parser = FrameParser()
        self._pending: list[Frame] = self._parser.feed(initial) if initial else []
        self._send_lock = anyio.Lock()
        self._fragments: list[bytes] = []
        self._fragment_opcode = OP_TEXT
        self.closed = False
        self.close_code: int | None = None
        self.unmasked_frames = 0

    async def _next_frame(self) -> Frame | None:
        while not self._pending:
            try:
                data = await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return None
            self._pending = self._parser.feed(data)
        return self._pending.pop(0)

    async def receive(self) -> tuple[int, bytes] | None:
        """The next text/binary message as ``(opcode, payload)``, or None once the peer is gone."""
        while True:
            frame = await self._next_frame()
            if frame is None:
                self.closed = True
                return None
            if not frame.masked:
                self.unmasked_frames += 1
            if frame.opcode == OP_PING:
                await self.send_frame(OP_PONG, frame.payload)
            elif frame.opcode == OP_PONG:
                continue
            elif frame.opcode == OP_CLOSE:
                code, _ = parse_close(frame.payload)
                self.close_code = code
                if not self.closed:
                    await self._send_close(code if code not in (1005, 1006) else 1000)
                self.closed = True
                return None
            elif frame.opcode in (OP_TEXT, OP_BINARY) and frame.fin and not self._fragments:
                return frame.opcode, frame.payload
            elif frame.opcode in (OP_TEXT, OP_BINARY):
                self._fragments, self._fragment_opcode = [frame.payload], frame.opcode
            elif frame.opcode == OP_CONTINUATION and self._fragments:
                self._fragments.append(frame.payload)
                if frame.fin:
                    message, self._fragments = b"".join(self._fragments), []
                    return self._fragment_opcode, message
            else:
                raise WebSocketProtocolError(f"unexpected opcode {frame.opcode:#x}")

    async def send_frame(self, opcode: int, payload: bytes = b"") -> None:
        """Send one frame.

        Raises:
            TimeoutError: the frame was not sent within ``send_timeout`` (the peer stopped reading).
            anyio.BrokenResourceError, anyio.ClosedResourceError, OSError: the connection is gone.
        """
        try:
            with anyio.fail_after(self.send_timeout):
                async with self._send_lock:
                    await self._stream.send(encode_frame(opcode, payload))
        except CONNECTION_ERRORS:
            self.closed = True
            raise

    async def send_text(self, text: str) -> None:
        await self.send_frame(OP_TEXT, text.encode("utf-8"))

    async def _send_close(self, code: int, reason: str = "") -> None:
        try:
            await self.send_frame(OP_CLOSE, close_payload(code, reason))
        except CONNECTION_ERRORS as exc:
            logger.debug("WebSocket close frame not sent: %r", exc)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the reader sees the peer's echo and ends."""
        if not self.closed:
            self.closed = True
            await self._send_close(code, reason)

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.closed = True
        await self._stream.aclose()
