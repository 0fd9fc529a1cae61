"""Recorded tails: the file writer, and the context a live run leaves next to its recording.

A recording is the tail's bytes exactly as the monitor read them (``wrangler tail --format json`` output).
A live run that records (``rollout run --record-tail DIR``) also writes a *context* beside each recording:
when the worker's guards were armed, the baseline they judged against, the traffic shifts, and the breach
the run reported.  ``rollout replay`` reads it, so the replay judges from the same starting point and
reports the breach at the same event as the live run did.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio

from .errors import UsageError
from .signals import WindowStats

__all__ = ["CONTEXT_SUFFIX", "LiveBreach", "ReplayContext", "TailWriter", "context_path_for"]

logger = logging.getLogger("rollout.tailfile")

TAIL_SUFFIX: Final = ".tail.json"
CONTEXT_SUFFIX: Final = ".context.json"


def context_path_for(tail_path: Path) -> Path:
    """``cf-ssai.tail.json`` → ``cf-ssai.context.json``; any other name gets ``.context.json`` appended."""
    name = tail_path.name
    if name.endswith(TAIL_SUFFIX):
        return tail_path.with_name(name[: -len(TAIL_SUFFIX)] + CONTEXT_SUFFIX)
    return tail_path.with_name(name + CONTEXT_SUFFIX)


@dataclass(frozen=True, slots=True)
class LiveBreach:
    """The breach a live run reported for the recorded worker (for comparison with the replay)."""

    guard: str
    action: str
    event_index: int | None
    event_timestamp: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class ReplayContext:
    """What a live run knew about one recorded worker, for an exact replay.

    Attributes:
        worker: the recorded worker.
        armed_ms: event time from which its guards judged (its first change by the run); None if never armed.
        baseline: the baseline its guards judged against (None: there was none).
        shifts: ``(event time ms, share of traffic moved)`` for each traffic shift (the Durable-Object wave).
        judge_interval_ms: event time between two judgements.
        dropped_chunks: chunks the recorder could not write (then the replay cannot be exact).
        breaches: the breaches the live run reported for this worker, in order.
    """

    worker: str
    armed_ms: int | None
    baseline: WindowStats | None
    shifts: tuple[tuple[int, float], ...] = ()
    judge_interval_ms: int = 20
    dropped_chunks: int = 0
    breaches: tuple[LiveBreach, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        b = self.baseline
        baseline = None if b is None else {
            "start_ms": b.start_ms, "end_ms": b.end_ms, "requests": b.requests, "errors": b.errors,
            "pattern_counts": dict(b.pattern_counts), "exceptions": dict(b.exceptions), "sampled": b.sampled,
            "observed_ms": b.observed_ms, "version": b.version}
        return {"format": 1, "worker": self.worker, "armed_ms": self.armed_ms, "baseline": baseline,
                "shifts": [list(s) for s in self.shifts], "judge_interval_ms": self.judge_interval_ms,
                "dropped_chunks": self.dropped_chunks, "breaches": [asdict(b) for b in self.breaches]}

    @classmethod
    def from_json(cls, data: Any, source: str) -> ReplayContext:
        """Read what :meth:`to_json` wrote.

        Raises:
            UsageError: naming ``source`` and the field that is wrong.
        """
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            base = data["baseline"]
            baseline = None if base is None else WindowStats(
                start_ms=int(base["start_ms"]), end_ms=int(base["end_ms"]), requests=int(base["requests"]),
                errors=int(base["errors"]), pattern_counts=dict(base.get("pattern_counts") or {}),
                exceptions=dict(base.get("exceptions") or {}), sampled=bool(base.get("sampled", False)),
                observed_ms=int(base.get("observed_ms", -1)), version=base.get("version"))
            armed = data["armed_ms"]
            return cls(
                worker=str(data["worker"]), armed_ms=None if armed is None else int(armed), baseline=baseline,
                shifts=tuple((int(at), float(share)) for at, share in data.get("shifts", ())),
                judge_interval_ms=int(data.get("judge_interval_ms", 20)),
                dropped_chunks=int(data.get("dropped_chunks", 0)),
                breaches=tuple(LiveBreach(**b) for b in data.get("breaches", ())))
        except (KeyError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise UsageError(f"{source}: not a replay context ({what})") from None

    @classmethod
    def read(cls, path: Path) -> ReplayContext:
        """Load a context file (blocking).

        Raises:
            UsageError: the file cannot be read or is not a context.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path}: not JSON: {exc}") from None
        return cls.from_json(data, str(path))


class TailWriter:
    """Writes tail chunks to a file from its own task, so the monitor's callback never waits on the disk.

    ``write`` never blocks: when the disk falls ``buffer`` chunks behind, a chunk is dropped and counted in
    ``dropped`` (a recording with drops cannot replay exactly, and its context says so).  A disk error ends
    the recording (see ``error``), not the caller's run.
    """

    def __init__(self, path: Path, buffer: int = 10_000) -> None:
        self.path = path
        self.written = 0
        self.dropped = 0
        #: why the recording stopped early, if it did
        self.error: str | None = None
        self._send, self._receive = anyio.create_memory_object_stream[bytes](buffer)
        self._finished = anyio.Event()

    def write(self, chunk: bytes) -> None:
        try:
            self._send.send_nowait(chunk)
        except anyio.WouldBlock:
            self.dropped += 1
            logger.warning("recording %s: writer behind, dropped %d bytes", self.path, len(chunk))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the recording has ended: later chunks are not part of it

    def close(self) -> None:
        """No more chunks: :meth:`run` returns once everything before is written."""
        self._send.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until :meth:`run` has written everything and closed the file."""
        self.close()
        await self._finished.wait()

    async def run(self) -> None:
        """Write chunks until :meth:`close` (run it in a task group)."""
        try:
            async with self._receive, await anyio.open_file(self.path, "wb") as handle:
                async for chunk in self._receive:
                    await handle.write(chunk)
                    self.written += len(chunk)
        except OSError as exc:  # a full or read-only disk ends the recording, never the run
            self.error = f"{self.path}: {exc.strerror or exc}"
            logger.warning("recording stopped: %s", self.error)
        finally:
            self._finished.set()
