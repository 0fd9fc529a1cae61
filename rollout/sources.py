"""Where tail bytes come from: ``wrangler tail --format json`` (restarted forever), or a file.

A source hands raw chunks to a callback; framing and parsing happen in the monitor.  Sources never print.
"""

from __future__ import annotations

import logging
import random
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from .wrangler import terminate, wrangler_env

logger = logging.getLogger("rollout.sources")


@dataclass(slots=True)
class SourceStatus:
    """Live state of a tail source, read by the monitor (mutable, owned by the source task)."""

    connected: bool = False
    sessions: int = 0
    reconnects: int = 0
    blind_since: float | None = None
    blind_total_s: float = 0.0
    last_exit: str = ""
    last_data_at: float | None = None
    #: the stream was lost while its process lives on (counted once, when the process then ends)
    lost: bool = False

    def stream_up(self, now: float) -> None:
        """The stream is live: blind time stops counting."""
        self.connected = True
        self.lost = False
        if self.blind_since is not None:
            self.blind_total_s += max(0.0, now - self.blind_since)
            self.blind_since = None

    def stream_down(self, now: float) -> None:
        """The stream ended: blind time counts from now, and a restart will follow."""
        self.connected = False
        if self.blind_since is None:
            self.blind_since = now
        if not self.lost:
            self.reconnects += 1
        self.lost = False

    def stream_lost(self, now: float) -> None:
        """The process is alive but its stream is gone (wrangler 4.164 reconnecting on its own): blind."""
        if self.connected:
            self.connected = False
            self.reconnects += 1
            self.lost = True
        if self.blind_since is None:
            self.blind_since = now

    def blind_s(self, now: float) -> float:
        current = (now - self.blind_since) if self.blind_since is not None else 0.0
        return self.blind_total_s + max(0.0, current)


#: What wrangler 4.164 prints to stderr when the tail socket drops and it starts reconnecting by itself.
_CONNECTION_LOST = b"Tail connection lost"


@dataclass
class WranglerTailSource:
    """Streams ``wrangler tail WORKER --format json``, and restarts it whenever it ends.

    Exit 0 does not mean done: wrangler 4.86 exits 0 when the socket drops and never reconnects,
    and every tail expires after about an hour without closing, so each session is also restarted
    after ``max_session_s``.  Restarts back off with jitter.  Time without a running stream is
    counted as blind time, and so is the time wrangler 4.164 spends reconnecting on its own (its
    stderr says ``Tail connection lost. Reconnecting (attempt N of 5)``, for up to about 31 s, while
    the process stays alive and prints nothing).

    Args:
        argv: the full wrangler tail command (from ``Wrangler.tail_argv``).
        env: extra environment for wrangler.
        clock: returns epoch seconds.
    """

    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = field(default=lambda: 0.0)
    max_session_s: float = 50 * 60
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stderr_path: Path | None = None
    status: SourceStatus = field(default_factory=SourceStatus)
    rng: random.Random = field(default_factory=random.Random)

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        """Stream forever, calling ``on_chunk`` for every piece of stdout; restarts each session."""
        await run_sessions(self.status, self.clock, self.rng, lambda: self._session(on_chunk),
                           self.backoff_initial_s, self.backoff_max_s)

    async def _session(self, on_chunk: Callable[[bytes], None]) -> bool:
        proc = await anyio.open_process(
            list(self.argv), env=wrangler_env(self.env), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        stderr_tail = bytearray()
        got_data = False

        async def drain_stderr() -> None:
            if proc.stderr is None:
                return
            async for chunk in proc.stderr:
                stderr_tail.extend(chunk)
                del stderr_tail[:-4000]
                if _CONNECTION_LOST in stderr_tail[-(len(chunk) + len(_CONNECTION_LOST)):]:
                    self.status.stream_lost(self.clock())

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain_stderr)
                assert proc.stdout is not None
                with anyio.move_on_after(self.max_session_s):
                    async for chunk in proc.stdout:
                        if not self.status.connected:
                            self.status.stream_up(self.clock())
                        got_data = True
                        self.status.last_data_at = self.clock()
                        on_chunk(chunk)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await terminate(proc)
            tail = stderr_tail.decode("utf-8", "replace")[-200:].strip()
            self.status.last_exit = f"exit {proc.returncode}" + (f": {tail}" if tail else "")
        return got_data


async def run_sessions(status: SourceStatus, clock: Callable[[], float], rng: random.Random,
                       session: Callable[[], Awaitable[bool]], backoff_initial_s: float, backoff_max_s: float) -> None:
    """Run tail sessions forever: each returns whether it got data; restarts back off with jitter.

    A session that streamed for more than 5 s resets the backoff, so an hourly drop reconnects fast while a
    tail that fails at once backs off up to ``backoff_max_s``.
    """
    backoff = backoff_initial_s
    status.blind_since = clock()
    while True:
        started = clock()
        status.sessions += 1
        got_data = await session()
        status.stream_down(clock())
        if got_data and clock() - started > 5:
            backoff = backoff_initial_s
        delay = backoff * (0.5 + rng.random())
        logger.info("tail ended (%s); restarting in %.1fs", status.last_exit, delay)
        await anyio.sleep(delay)
        backoff = min(backoff_max_s, backoff * 2)


@dataclass
class FileSource:
    """A recorded tail file, read in chunks (for replay and backtests)."""

    path: Path
    chunk_size: int = 1 << 16
    status: SourceStatus = field(default_factory=lambda: SourceStatus(connected=True))

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        async with await anyio.open_file(self.path, "rb") as handle:
            while True:
                chunk = await handle.read(self.chunk_size)
                if not chunk:
                    return
                on_chunk(chunk)


class ChunkSource:
    """Chunks pushed by a test or another task through a memory stream."""

    def __init__(self, buffer: int = 1000) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[bytes](buffer)
        self.status = SourceStatus(connected=True)

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        async with self._receive:
            async for chunk in self._receive:
                on_chunk(chunk)
