"""Where tail bytes come from: ``wrangler tail --format json`` (restarted forever), or a file.

A source hands raw chunks to a callback; framing and parsing happen in the monitor.  Sources never print.
"""

from __future__ import annotations

import logging
import random
import subprocess
from collections.abc import Callable, Sequence
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

    def blind_s(self, now: float) -> float:
        current = (now - self.blind_since) if self.blind_since is not None else 0.0
        return self.blind_total_s + max(0.0, current)


@dataclass
class WranglerTailSource:
    """Streams ``wrangler tail WORKER --format json``, and restarts it whenever it ends.

    Exit 0 does not mean done: wrangler 4.86 exits 0 when the socket drops and never reconnects,
    and every tail expires after about an hour without closing, so each session is also restarted
    after ``max_session_s``.  Restarts back off with jitter.  Time without a running stream is
    counted as blind time.

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
        backoff = self.backoff_initial_s
        self.status.blind_since = self.clock()
        while True:
            started = self.clock()
            self.status.sessions += 1
            got_data = await self._session(on_chunk)
            self.status.connected = False
            if self.status.blind_since is None:
                self.status.blind_since = self.clock()
            self.status.reconnects += 1
            if got_data and self.clock() - started > 5:
                backoff = self.backoff_initial_s
            delay = backoff * (0.5 + self.rng.random())
            logger.info("tail ended (%s); restarting in %.1fs", self.status.last_exit, delay)
            await anyio.sleep(delay)
            backoff = min(self.backoff_max_s, backoff * 2)

    def _end_blind(self) -> None:
        if self.status.blind_since is not None:
            self.status.blind_total_s += max(0.0, self.clock() - self.status.blind_since)
            self.status.blind_since = None

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

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain_stderr)
                assert proc.stdout is not None
                with anyio.move_on_after(self.max_session_s):
                    async for chunk in proc.stdout:
                        if not got_data:
                            got_data = True
                            self._end_blind()
                            self.status.connected = True
                        self.status.last_data_at = self.clock()
                        on_chunk(chunk)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await terminate(proc)
            tail = stderr_tail.decode("utf-8", "replace")[-200:].strip()
            self.status.last_exit = f"exit {proc.returncode}" + (f": {tail}" if tail else "")
        return got_data


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
