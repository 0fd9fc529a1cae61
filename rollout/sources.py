"""Where tail bytes come from: ``wrangler tail --format json`` (restarted forever), or a file.

A source hands raw chunks to a callback; framing and parsing happen in the monitor.  Sources never print.

No blindness is read as health:

* a wrangler stream is *connected* only once it carries a tail event: wrangler 4.164 prints a bare newline
  on stdout when it cannot create a tail (and its error on stderr), and in json mode it prints no
  "connected" line at all (measured; WRANGLER.md §3f), so neither output nor a running process means a
  stream (the WebSocket source, :mod:`rollout.wstail`, knows when its socket is open and subscribed);
* a connected stream that carries nothing for ``silence_s`` while the tail's earlier rate says events were
  due (an expired tail goes silent with its socket open) is *lost*: blind from its last event, and its
  session is restarted (the silence watchdog of :func:`run_sessions`);
* restarts back off with jitter, and the backoff resets after a stable session (up for ``stable_s``).
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from ._orphan_guard import guarded_argv
from .wrangler import strip_ansi, terminate, wrangler_env

logger = logging.getLogger("rollout.sources")

#: Seconds without an event after which a connected tail that was carrying traffic counts as lost.
DEFAULT_SILENCE_S = 30.0
#: The silence watchdog fires only when the rate seen before predicts at least this many events in the
#: silent time (at 30 s: an average above 0.33 events/s; below that, silence may just be a quiet worker).
DEFAULT_SILENCE_MIN_EVENTS = 10.0
#: A session whose stream stayed up this long resets the restart backoff.
DEFAULT_STABLE_S = 10.0
#: A session (or wrangler's own reconnect) that carried no event this long after it began, while the rate
#: seen before says events were due, is restarted.  Longer than the silence: starting node and creating a
#: tail takes 1-3 s, more on a loaded machine, and must not be cut short.
DEFAULT_CONNECT_TIMEOUT_S = 60.0


@dataclass(slots=True)
class SourceStatus:
    """Live state of a tail source, read by the monitor (mutable, owned by the source task).

    ``connected`` means the stream is carrying tail events (not merely that a process or socket is up);
    blind time is the time it is not, counted from the last event when a stream goes silent.
    """

    connected: bool = False
    sessions: int = 0
    reconnects: int = 0
    blind_since: float | None = None
    blind_total_s: float = 0.0
    last_exit: str = ""
    #: when the last tail event arrived
    last_data_at: float | None = None
    #: the stream was lost while its process lives on (counted once, when the process then ends)
    lost: bool = False
    #: tail events the stream carried (counted by the source, without decoding them)
    events: int = 0
    #: seconds the stream was up, each spell from its first event to its last (the rate's denominator)
    up_total_s: float = 0.0
    #: when the current spell of events began (None while blind)
    up_since: float | None = None
    #: when the current session started, and when its stream was last declared lost
    session_started_at: float | None = None
    lost_at: float | None = None
    #: the longest spell of events in the current session (for the backoff)
    session_up_s: float = 0.0
    session_events: int = 0
    #: sessions restarted by the silence watchdog
    silences: int = 0
    #: the delay before the latest restart
    last_delay_s: float = 0.0

    def stream_up(self, now: float) -> None:
        """The stream is live: blind time stops counting."""
        if not self.connected:
            self.up_since = now
        self.connected = True
        self.lost = False
        if self.blind_since is not None:
            self.blind_total_s += max(0.0, now - self.blind_since)
            self.blind_since = None

    def events_seen(self, now: float, count: int = 1) -> None:
        """The stream carried ``count`` tail events: it is connected (if it was not), and they feed the rate."""
        if count <= 0:
            return
        if not self.connected:
            self.stream_up(now)
        self.events += count
        self.session_events += count
        self.last_data_at = now

    def _end_spell(self, end: float) -> None:
        if self.up_since is not None:
            spell = max(0.0, end - self.up_since)
            self.up_total_s += spell
            self.session_up_s = max(self.session_up_s, spell)
            self.up_since = None

    def stream_down(self, now: float) -> None:
        """The stream ended: blind time counts from now, and a restart will follow."""
        if self.connected:
            self._end_spell(now)
        self.connected = False
        if self.blind_since is None:
            self.blind_since = now
        if not self.lost:
            self.reconnects += 1
        self.lost = False

    def stream_lost(self, now: float, since: float | None = None) -> None:
        """The process is alive but its stream is gone (wrangler 4.164 reconnecting on its own, or a tail gone
        silent): blind from ``since`` (default ``now``; the last event for a silent tail)."""
        start = now if since is None else min(now, since)
        self.lost_at = now
        if self.connected:
            self._end_spell(start)
            self.connected = False
            self.reconnects += 1
            self.lost = True
        if self.blind_since is None:
            self.blind_since = start

    def blind_s(self, now: float) -> float:
        current = (now - self.blind_since) if self.blind_since is not None else 0.0
        return self.blind_total_s + max(0.0, current)

    def rate(self) -> float:
        """Tail events per second while the stream was up (0 until there is a second of history)."""
        up = self.up_total_s
        if self.connected and self.up_since is not None and self.last_data_at is not None:
            up += max(0.0, self.last_data_at - self.up_since)
        return self.events / up if up >= 1.0 else 0.0

    def silence(self, now: float, silence_s: float, min_events: float,
                connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> str | None:
        """Why the stream counts as silent now, or None.

        Silent: connected, and no event for ``silence_s`` since the last one; or not connected, and no event
        for ``connect_timeout_s`` since the session started (or since wrangler said it lost the connection
        and began reconnecting by itself).  Either only while the rate seen before on this tail predicts at
        least ``min_events`` events in ``silence_s``: silence from a quiet worker is not blindness.
        """
        if silence_s <= 0:
            return None
        if self.connected:  # since the last event, or since a socket that has carried none yet opened
            marks = [t for t in (self.last_data_at, self.up_since) if t is not None]
            since, limit = (max(marks) if marks else None), silence_s
        else:
            marks = [t for t in (self.session_started_at, self.lost_at, self.last_data_at) if t is not None]
            since, limit = (max(marks) if marks else None), max(silence_s, connect_timeout_s)
        if since is None or now - since < limit:
            return None
        rate = self.rate()
        if self.events < min_events or rate * silence_s < min_events:
            return None
        what = "tail silent" if self.connected else "no tail event since the session began"
        return f"{what} for {now - since:.0f}s while it averaged {rate:.1f} events/s before: restarted"


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How :func:`run_sessions` restarts sessions and when it calls a quiet one dead."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = DEFAULT_STABLE_S
    silence_s: float = DEFAULT_SILENCE_S
    silence_min_events: float = DEFAULT_SILENCE_MIN_EVENTS
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S


#: What wrangler 4.164 prints to stderr when the tail socket drops and it starts reconnecting by itself.
_CONNECTION_LOST = b"Tail connection lost"
#: Keys of a trace item, one of which the first object of a stream must have to count as a tail event.
_TRACE_KEYS = ("outcome", "eventTimestamp", "event")


def is_trace_item(text: bytes | str) -> bool:
    """True when ``text`` parses as a JSON object that looks like a tail event (a trace item)."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(value, dict) and any(key in value for key in _TRACE_KEYS)


class PrettyEventCounter:
    """Counts the tail events in ``wrangler tail --format json`` output without decoding them.

    wrangler prints each event with ``JSON.stringify(event, null, 4)``: a line that is exactly ``}`` ends
    one (inside an object every line is indented, and a JSON string holds no raw newline).  Until the first
    object of the stream has been decoded and found to be a trace item, nothing counts: a bare newline, an
    error text or a stray object is not a stream.
    """

    _END = b"\n}\n"

    def __init__(self, max_head_bytes: int = 1 << 20) -> None:
        self._carry = b""
        self._head = bytearray()
        self._max_head = max_head_bytes
        self.checked = False

    def feed(self, chunk: bytes) -> int:
        """The number of events completed by ``chunk``."""
        data = self._carry + chunk
        count = data.count(self._END)
        self._carry = data[-2:]
        if self.checked:
            return count
        self._head += chunk
        found = self._check_head()
        if not found and len(self._head) > self._max_head:
            del self._head[: -self._max_head]
        return found

    def _check_head(self) -> int:
        """Look for a trace item among the complete objects seen so far; the events from it on."""
        head = bytes(self._head)
        pos = 0
        while True:
            end = head.find(self._END, pos)
            if end < 0:
                self._head = bytearray(head[pos:])
                return 0
            opening = head.rfind(b"\n{", pos, end)  # a top-level object opens with a line "{"
            start = opening + 1 if opening >= 0 else pos
            if is_trace_item(head[start:end + 2]):
                self.checked = True
                self._head = bytearray()
                return 1 + head.count(self._END, end + 2)
            pos = end + 2


@dataclass
class WranglerTailSource:
    """Streams ``wrangler tail WORKER --format json``, and restarts it whenever it ends.

    Exit 0 does not mean done: wrangler 4.86 exits 0 when the socket drops and never reconnects,
    and every tail expires after about an hour without closing, so each session is also restarted
    after ``max_session_s``, and the silence watchdog restarts a session whose stream stopped carrying
    events while the worker had traffic (``silence_s``, ``silence_min_events``).  Restarts back off with
    jitter; a session up for ``stable_s`` resets the backoff.  A session that carries no event within
    ``connect_timeout_s`` while events were due is restarted too.  Time without events from a live stream is
    counted as blind time, and so is the time wrangler 4.164 spends reconnecting on its own (its stderr
    says ``Tail connection lost. Reconnecting (attempt N of 5)``, for up to about 31 s, while the process
    stays alive and prints nothing).

    wrangler is started through :mod:`rollout._orphan_guard` (``orphan_guard``), so that it gets SIGTERM
    (and 4.164 deletes its tail) when the runner dies, even of SIGKILL.

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
    stable_s: float = DEFAULT_STABLE_S
    silence_s: float = DEFAULT_SILENCE_S
    silence_min_events: float = DEFAULT_SILENCE_MIN_EVENTS
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    orphan_guard: bool = True
    stderr_path: Path | None = None
    status: SourceStatus = field(default_factory=SourceStatus)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy(self.backoff_initial_s, self.backoff_max_s, self.stable_s, self.silence_s,
                             self.silence_min_events, self.connect_timeout_s)

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        """Stream forever, calling ``on_chunk`` for every piece of stdout; restarts each session."""
        await run_sessions(self.status, self.clock, self.rng, lambda: self._session(on_chunk), self.policy)

    async def _session(self, on_chunk: Callable[[bytes], None]) -> None:
        argv = guarded_argv(self.argv) if self.orphan_guard else list(self.argv)
        proc = await anyio.open_process(
            argv, env=wrangler_env(self.env), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        stderr_tail = bytearray()
        counter = PrettyEventCounter()

        async def drain_stderr() -> None:
            if proc.stderr is None:
                return
            async for chunk in proc.stderr:
                stderr_tail.extend(chunk)
                del stderr_tail[:-4000]
                if _CONNECTION_LOST in stderr_tail[-(len(chunk) + len(_CONNECTION_LOST)):]:
                    self.status.stream_lost(self.clock())

        ended = False  # stdout closed: wrangler is exiting by itself
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain_stderr)
                assert proc.stdout is not None
                with anyio.move_on_after(self.max_session_s):
                    async for chunk in proc.stdout:
                        self.status.events_seen(self.clock(), counter.feed(chunk))
                        on_chunk(chunk)
                    ended = True
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if ended:  # let it exit and be reaped first: a signal now would lose its exit code
                    with anyio.move_on_after(2.0):
                        await proc.wait()
                await terminate(proc)
            tail = _stderr_summary(stderr_tail.decode("utf-8", "replace"))
            self.status.last_exit = f"exit {proc.returncode}" + (f": {tail}" if tail else "")


def _stderr_summary(text: str, limit: int = 240) -> str:
    """What wrangler's stderr says went wrong, in one line: its error and code lines, without colours."""
    lines = [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]
    wanted = [line for line in lines if "[ERROR]" in line or "[code:" in line or "Error" in line
              or _CONNECTION_LOST.decode() in line]
    return " ".join(wanted or lines[-2:])[-limit:]


async def run_sessions(status: SourceStatus, clock: Callable[[], float], rng: random.Random,
                       session: Callable[[], Awaitable[object]], policy: SessionPolicy) -> None:
    """Run tail sessions forever, each under the silence watchdog; restarts back off with jitter.

    A session whose stream stayed up for ``policy.stable_s`` resets the backoff, and so does one the watchdog
    ended after it had carried events (its restart already waited ``silence_s``), so an hourly drop or an
    expired tail reconnects fast while a tail that fails at once backs off up to ``backoff_max_s``.
    """
    backoff = policy.backoff_initial_s
    status.blind_since = clock()
    while True:
        status.sessions += 1
        status.session_started_at = clock()
        status.session_up_s = 0.0
        status.session_events = 0
        status.lost_at = None
        silent = await _watched(status, clock, session, policy)
        status.stream_down(clock())
        if silent is not None:
            status.silences += 1
            status.last_exit = f"{silent}; then {status.last_exit}"[:300]
        stable = status.session_up_s >= policy.stable_s or (silent is not None and status.session_events > 0)
        if stable:
            backoff = policy.backoff_initial_s
        delay = backoff * (0.5 + rng.random())
        status.last_delay_s = delay
        logger.info("tail ended (%s); restarting in %.1fs", status.last_exit, delay)
        await anyio.sleep(delay)
        if not stable:
            backoff = min(policy.backoff_max_s, backoff * 2)


async def _watched(status: SourceStatus, clock: Callable[[], float], session: Callable[[], Awaitable[object]],
                   policy: SessionPolicy) -> str | None:
    """Run one session; end it early when its stream goes silent.  Returns why it was silenced, if it was."""
    silent: str | None = None
    tick = min(1.0, max(0.05, policy.silence_s / 10))

    async def run(scope: anyio.CancelScope) -> None:
        try:
            await session()
        finally:
            scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, tg.cancel_scope)
        while True:
            await anyio.sleep(tick)
            now = clock()
            silent = status.silence(now, policy.silence_s, policy.silence_min_events, policy.connect_timeout_s)
            if silent is not None:
                status.last_exit = silent
                status.stream_lost(now, since=status.last_data_at if status.connected else None)
                tg.cancel_scope.cancel()
                break
    return silent


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
