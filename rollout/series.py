"""Per-second series of a worker's requests and errors by version, for report.json and the timeline picture.

Built once, at the end of a run, from the monitor's :class:`~rollout.signals.WorkerSignals` (which keep two
hours of 1-second buckets): nothing is collected while the rollout runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from .bus import BaselineMeasured, EngineEvent, WorkerChanged
from .signals import WindowStats

#: The key for events that carried no ``scriptVersion`` (counted only when there are any).
NO_VERSION = "(no version)"

#: One row: ``[t, requests, errors]``, ``t`` in seconds since the series' start (the bucket's start).
Row = list[float]
Series = dict[str, list[Row]]


class _Signals(Protocol):
    bucket_ms: int

    def versions(self) -> set[str]: ...

    def window(self, start_ms: int, end_ms: int, version: str | None = None) -> WindowStats: ...


def series_from_signals(signals: _Signals, start_ms: int, end_ms: int) -> Series:
    """``{version: [[t, requests, errors], ...]}``: one row per bucket (a second) that starts inside
    ``[start_ms, end_ms)``, ``t`` the bucket's start in seconds since ``start_ms``, every second listed (zeros
    included, so a gap in the traffic shows).  Versions sort by their first request; events without a
    version are listed under :data:`NO_VERSION` when there are any."""
    bucket = signals.bucket_ms
    first, last = -(-start_ms // bucket), -(-end_ms // bucket)
    starts = [b * bucket for b in range(first, last)]
    times = [_seconds(s - start_ms) for s in starts]

    def rows(version: str | None) -> list[Row]:
        out = []
        for s, t in zip(starts, times, strict=True):
            w = signals.window(s, s + bucket, version)
            out.append([t, w.requests, w.errors])
        return out

    every: Series = {version: rows(version) for version in signals.versions()}
    rest = rows(None)  # every version's: what the named versions do not account for has none
    for named in every.values():
        for row, part in zip(rest, named, strict=True):
            row[1] -= part[1]
            row[2] -= part[2]
    every[NO_VERSION] = rest
    out = {version: rows for version, rows in every.items() if any(r[1] or r[2] for r in rows)}
    return dict(sorted(out.items(), key=lambda kv: _first_request(kv[1])))


def run_series(signals: Mapping[str, _Signals], events: Iterable[EngineEvent], started: float, ended: float
               ) -> tuple[float, dict[str, Series]]:
    """The series of every changed worker that has signals, from the start of the baseline (of the run, without
    one), on a whole second, to the end of the run: ``(start, {worker: series})``, ``start`` in epoch seconds."""
    history = list(events)
    begun = [e.at - e.seconds for e in history if isinstance(e, BaselineMeasured)]
    start_ms = int(min(begun, default=started) * 1000) // 1000 * 1000
    end_ms = int(ended * 1000) + 1
    changed = dict.fromkeys(e.worker for e in history if isinstance(e, WorkerChanged))
    series = {worker: series_from_signals(signals[worker], start_ms, end_ms) for worker in changed
              if worker in signals}
    return start_ms / 1000, series


def _first_request(rows: list[Row]) -> float:
    return next((r[0] for r in rows if r[1]), float("inf"))


def _seconds(ms: int) -> float:
    return ms // 1000 if ms % 1000 == 0 else round(ms / 1000, 3)
