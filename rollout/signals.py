"""Signals: a worker's tail reduced to counts in fixed buckets of event time.

Nothing here keeps raw events.  Each event adds to one cell, keyed by (bucket, ``scriptVersion``): requests,
errors, matches of each log pattern, exceptions by name.  Buckets older than the retention (measured from
the newest event time seen) are dropped, so memory is bounded by ``retention_ms / bucket_ms`` times the
number of live versions, never by the length of the stream.  Time is the events' own ``eventTimestamp``:
late and out-of-order events land in the bucket they belong to, and replaying a recorded tail at full
speed gives the same numbers as watching it live.

A window ``[start_ms, end_ms)`` is made of whole buckets: a bucket counts when its start lies inside the
window.

Sampling notices (``kind`` ``overload`` / ``overload-stop``, WRANGLER.md §6) are not requests; they mark
the time during which the tail was sampled.  Windows overlapping that time say ``sampled``: their absolute
counts are lower bounds, their ratios are still unbiased.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from rollout.events import NON_FAILURE_OUTCOMES, TailEvent
from rollout.patterns import DEFAULT_PATTERNS, Matcher, split_matchers

__all__ = ["DEFAULT_PATTERNS", "Matcher", "WindowStats", "WorkerSignals"]

_HOUR_MS: Final = 3_600_000
_EMPTY: Final[Mapping[str, int]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Counts over ``[start_ms, end_ms)`` of event time, for one version or all of them.

    Attributes:
        observed_ms: the part of the window the signals were watching (from the first event seen on), the
            exposure that per-hour rates divide by.
        version: the ``scriptVersion`` the counts are restricted to, or None for all versions.
    """

    start_ms: int
    end_ms: int
    requests: int
    errors: int
    pattern_counts: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    exceptions: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    sampled: bool = False
    observed_ms: int = -1
    version: str | None = None

    def __post_init__(self) -> None:
        if self.observed_ms < 0:
            object.__setattr__(self, "observed_ms", max(0, self.end_ms - self.start_ms))

    @property
    def duration_ms(self) -> int:
        return max(0, self.end_ms - self.start_ms)

    @property
    def error_rate(self) -> float | None:
        """errors / requests, or None without requests."""
        return self.errors / self.requests if self.requests else None

    def rate_per_hour(self, pattern: str) -> float:
        """Matches of ``pattern`` per hour of observed time (0.0 when nothing was observed)."""
        if self.observed_ms <= 0:
            return 0.0
        return self.pattern_counts.get(pattern, 0) * _HOUR_MS / self.observed_ms


@dataclass(frozen=True, slots=True)
class Signature:
    """An exception signature: its name and the first line of its message, and where it was first seen."""

    version: str | None
    name: str
    message: str
    first_ms: int
    last_ms: int
    count: int

    @property
    def key(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


@dataclass(slots=True)
class _Sig:
    first_ms: int
    last_ms: int
    count: int = 0


@dataclass(slots=True)
class _Sampling:
    active_since: int | None = None
    closed_ms: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)


# A cell is a list: [requests, errors, <one count per pattern>...].
_Cell = list[int]


class _Prefix:
    """Running totals of one version's buckets (or all versions'): ``cols[c][i]`` is the sum of cell column
    ``c`` over the buckets ``[base, base + i)``, and ``exc[name][i]`` the same for exceptions of ``name``."""

    __slots__ = ("base", "cols", "exc")

    def __init__(self, base: int, width: int) -> None:
        self.base = base
        self.cols = [array("q", [0]) for _ in range(width)]
        self.exc: dict[str, array[int]] = {}

    @property
    def hi(self) -> int:
        """The first bucket not summed yet."""
        return self.base + len(self.cols[0]) - 1

    def cut(self, b: int) -> None:
        """Forget the sums from bucket ``b`` on."""
        keep = b - self.base + 1
        if keep < len(self.cols[0]):
            for col in [*self.cols, *self.exc.values()]:
                del col[max(1, keep):]
            if keep < 1:
                self.base = b

    def trim(self, floor: int) -> None:
        """Drop the rows of buckets below ``floor`` (gone from the signals), when there are many."""
        drop = floor - self.base
        if 1024 < drop < len(self.cols[0]):
            for col in [*self.cols, *self.exc.values()]:
                del col[:drop]
            self.base = floor


class WorkerSignals:
    """The windowed signals of one worker.

    Args:
        worker: the worker's name (carried into verdicts).
        patterns: name -> substring, ``re:`` regular expression or compiled ``re.Pattern``, matched against
            each log line; a line counts once per pattern (:func:`rollout.patterns.patterns_for` builds them
            from a plan's guards).
        bucket_ms: the width of a bucket of event time.
        retention_ms: how much event time to keep, counted back from the newest event.
        max_signatures: distinct exception signatures remembered per version; beyond it only names count.

    Attributes:
        latest_ms: the newest event time seen (0 before any event).
        first_ms: the oldest event time seen (0 before any event).
        events: events added, notices included.
        late_events: events older than the retention when they arrived, dropped.
    """

    def __init__(
        self, worker: str, patterns: Mapping[str, Matcher] = DEFAULT_PATTERNS, bucket_ms: int = 1000,
        retention_ms: int = 2 * 3600 * 1000, *, max_signatures: int = 1000,
    ) -> None:
        if bucket_ms <= 0 or retention_ms < bucket_ms:
            raise ValueError("need bucket_ms > 0 and retention_ms >= bucket_ms")
        self.worker = worker
        self.patterns: Mapping[str, Matcher] = MappingProxyType(dict(patterns))
        self.bucket_ms = bucket_ms
        self.retention_ms = retention_ms
        self.max_signatures = max_signatures
        self.latest_ms = 0
        self.first_ms = 0
        self.events = 0
        self.late_events = 0
        self._names, substrings, regexes = split_matchers(self.patterns)
        # cell columns: the patterns come after requests and errors
        self._substrings = [(i + 2, needle) for i, needle in substrings]
        self._regexes = [(i + 2, rx) for i, rx in regexes]
        self._width = 2 + len(self._names)
        self._buckets: dict[int, dict[str | None, _Cell]] = {}
        # exceptions by (version, name), per bucket; kept apart from the cells because they are rare
        self._exc: dict[int, dict[tuple[str | None, str], int]] = {}
        self._floor = 0          # buckets below this index are gone
        self._next_roll_ms = 0   # event time at which the floor next moves
        self._versions: dict[str | None, int] = {}
        self._signatures: dict[str | None, dict[tuple[str, str], _Sig]] = {}
        self._sampling = _Sampling()
        self._last_b = -1                       # the bucket the previous event went to ...
        self._last_cells: dict[str | None, _Cell] = {}  # ... and its cells
        # Running totals for window(): per version (None: all), prefix sums over whole buckets below
        # ``_sealed``.  An event that lands below it (late) cuts the sums back to its bucket.
        self._prefix: dict[str | None, _Prefix] = {}
        self._sealed = 0

    # -- ingest -----------------------------------------------------------------------------------------
    def add(self, ev: TailEvent) -> None:
        """Count one event (hot path)."""
        self.events += 1
        t = ev.timestamp_ms
        if t <= 0:  # eventTimestamp was null: the best guess is "now" in stream time
            t = self.latest_ms
            if t <= 0:
                self.late_events += 1
                return
        kind = ev.kind
        if kind != "fetch" and (kind == "overload" or kind == "overload-stop"):
            self._notice(kind, t)
            return
        if t > self.latest_ms:
            if not self.first_ms:
                self.first_ms = t
            self.latest_ms = t
            if t >= self._next_roll_ms:
                self._roll(t)
        elif t < self.first_ms:
            self.first_ms = t
        b = t // self.bucket_ms
        if b != self._last_b:
            if b < self._floor:
                self.late_events += 1
                return
            if b < self._sealed:  # a late event changes a bucket the window sums already hold
                self._unseal(b)
            cells = self._buckets.get(b)
            if cells is None:
                cells = self._buckets[b] = {}
            self._last_b = b
            self._last_cells = cells
        else:
            cells = self._last_cells
        version = ev.version
        cell = cells.get(version)
        if cell is None:
            cell = cells[version] = [0] * self._width
            first = self._versions.get(version)
            if first is None or t < first:
                self._versions[version] = t
        cell[0] += 1
        status = ev.status
        if ev.outcome not in NON_FAILURE_OUTCOMES or (status is not None and status >= 500):
            cell[1] += 1
        if logs := ev.logs:
            if len(logs) == 1 and not self._regexes:
                text = logs[0]
                for i, needle in self._substrings:
                    if needle in text:
                        cell[i] += 1
            else:
                self._match(cell, logs)
        if ev.exceptions:
            self._count_exceptions(b, version, ev.exceptions, t)

    def _match(self, cell: _Cell, logs: tuple[str, ...]) -> None:
        text = logs[0] if len(logs) == 1 else "\n".join(logs)
        for i, needle in self._substrings:
            if needle in text:
                cell[i] += 1 if len(logs) == 1 else sum(needle in line for line in logs)
        for i, rx in self._regexes:
            if rx.search(text):
                cell[i] += 1 if len(logs) == 1 else sum(1 for line in logs if rx.search(line))

    def _count_exceptions(
        self, b: int, version: str | None, exceptions: tuple[tuple[str, str], ...], t: int,
    ) -> None:
        by_name = self._exc.get(b)
        if by_name is None:
            by_name = self._exc[b] = {}
        sigs = self._signatures.get(version)
        if sigs is None:
            sigs = self._signatures[version] = {}
        for name, message in exceptions:
            by_name[version, name] = by_name.get((version, name), 0) + 1
            key = (name, message.split("\n", 1)[0][:200])
            sig = sigs.get(key)
            if sig is None:
                if len(sigs) >= self.max_signatures:
                    continue
                sig = sigs[key] = _Sig(t, t)
            elif t < sig.first_ms:
                sig.first_ms = t
            elif t > sig.last_ms:
                sig.last_ms = t
            sig.count += 1

    def _notice(self, kind: str, t: int) -> None:
        s = self._sampling
        if kind == "overload":
            if s.active_since is None:
                s.active_since = t
        elif s.active_since is not None:
            start = min(s.active_since, t)
            s.spans.append((start, t))
            s.closed_ms += t - start
            s.active_since = None
        else:  # a stop without a start: sampled since we began watching, as far as we know
            start = self.first_ms or t
            s.spans.append((start, t))
            s.closed_ms += t - start
        if t > self.latest_ms:
            self.latest_ms = t
            self.first_ms = self.first_ms or t

    def _roll(self, t: int) -> None:
        """Drop the buckets that fell out of the retention."""
        floor = (t - self.retention_ms) // self.bucket_ms + 1
        self._next_roll_ms = (t // self.bucket_ms + 1) * self.bucket_ms
        if floor <= self._floor:
            return
        buckets = self._buckets
        if floor - self._floor <= len(buckets):
            for b in range(self._floor, floor):
                buckets.pop(b, None)
        else:
            for b in [b for b in buckets if b < floor]:
                del buckets[b]
        if self._exc:
            for b in [b for b in self._exc if b < floor]:
                del self._exc[b]
        self._floor = floor
        if self._last_b < floor:
            self._last_b = -1
        for pre in self._prefix.values():
            pre.trim(floor)
        horizon = floor * self.bucket_ms
        spans = self._sampling.spans
        if spans and spans[0][1] < horizon:
            self._sampling.spans = [span for span in spans if span[1] >= horizon]

    # -- queries ----------------------------------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        """True while the tail is in sampling mode (an ``overload`` notice without its ``overload-stop``)."""
        return self._sampling.active_since is not None

    @property
    def sampled_ms(self) -> int:
        """Total event time spent in sampling mode (including the current stretch)."""
        s = self._sampling
        open_ms = max(0, self.latest_ms - s.active_since) if s.active_since is not None else 0
        return s.closed_ms + open_ms

    def versions(self) -> set[str]:
        """The ``scriptVersion`` ids seen (events without one are not listed)."""
        return {v for v in self._versions if v is not None}

    def first_seen(self, version: str | None) -> int | None:
        """The event time a version was first seen, or None."""
        return self._versions.get(version)

    def window(self, start_ms: int, end_ms: int, version: str | None = None) -> WindowStats:
        """Counts over the buckets that start inside ``[start_ms, end_ms)``; all versions unless one is named."""
        bk = self.bucket_ms
        lo, hi = max(-(-start_ms // bk), self._floor), -(-end_ms // bk)
        summed = self._totals(lo, hi, version)
        if summed is None:
            totals = self._sum_cells(self._bucket_keys(lo, hi), version)
            exceptions = self._sum_exceptions(lo, hi, version)
        else:
            totals, exceptions = summed
        first = self.first_ms if self.first_ms else end_ms
        observed = max(0, end_ms - max(start_ms, first))
        return WindowStats(
            start_ms=start_ms, end_ms=end_ms, requests=totals[0], errors=totals[1],
            pattern_counts=MappingProxyType(dict(zip(self._names, totals[2:], strict=True))),
            exceptions=MappingProxyType(exceptions), sampled=self._sampled_between(start_ms, end_ms),
            observed_ms=observed, version=version,
        )

    def _sum_exceptions(self, lo: int, hi: int, version: str | None) -> dict[str, int]:
        """Exceptions by name over the buckets ``[lo, hi)``, in the order they first occur."""
        exceptions: dict[str, int] = {}
        exc = self._exc
        if exc:
            keys = sorted(b for b in exc if lo <= b < hi) if hi - lo > len(exc) else range(lo, hi)
            get = exc.get
            for b in keys:
                by_key = get(b)
                if by_key:
                    for (v, name), count in by_key.items():
                        if version is None or v == version:
                            exceptions[name] = exceptions.get(name, 0) + count
        return exceptions

    def _bucket_keys(self, lo: int, hi: int) -> list[int]:
        """The buckets present in ``[lo, hi)``, in order."""
        buckets = self._buckets
        if hi - lo > len(buckets):
            return sorted(b for b in buckets if lo <= b < hi)
        return [b for b in range(lo, hi) if b in buckets]

    def _sum_cells(self, keys: list[int] | range, version: str | None) -> list[int]:
        """Column sums of the cells of ``keys`` (one version's, or all versions')."""
        buckets = self._buckets
        if version is None:
            cells = [c for b in keys if b in buckets for c in buckets[b].values()]
        else:
            cells = [c for b in keys if b in buckets and (c := buckets[b].get(version)) is not None]
        # column sums in C: zip(*cells) transposes the cells
        return [sum(col) for col in zip(*cells, strict=True)] if cells else [0] * self._width

    def _totals(self, lo: int, hi: int, version: str | None) -> tuple[list[int], dict[str, int]] | None:
        """Column sums and exceptions by name over ``[lo, hi)`` from the running totals, or None when the
        buckets are too sparse for them (then the caller sums the buckets).

        Whole buckets below the newest one are summed once, into :class:`_Prefix`; the newest bucket, still
        filling, is added from its cells.  With the default 1 s buckets a guard's window costs a few
        subtractions instead of a pass over hundreds of cells.  The result is what summing the buckets
        gives, exceptions in the same order (by the bucket, then the order within it, of their first
        occurrence in the window).
        """
        width = self._width
        if hi <= lo:
            return [0] * width, {}
        bk = self.bucket_ms
        cur = self.latest_ms // bk  # the newest bucket: no bucket lies above it ...
        low = max(self._floor, self.first_ms // bk)  # ... nor below this one
        if cur - low > 4 * len(self._buckets) + 256:  # sparse: running totals would be mostly empty rows
            return None
        top = min(hi, cur)
        pre = self._prefix.get(version)
        if pre is None or pre.hi < low:
            pre = self._prefix[version] = _Prefix(low, width)
        lo = max(lo, pre.base)
        if pre.hi < top:
            self._extend(pre, top, version)
        if top > self._sealed:
            self._sealed = top
            if self._last_b < top:  # add() checks against _sealed only when the bucket changes
                self._last_b = -1
        exceptions: dict[str, int] = {}
        if lo < top:
            a, z = lo - pre.base, top - pre.base
            totals = [col[z] - col[a] for col in pre.cols]
            if pre.exc:
                found = []
                for name, counts in pre.exc.items():
                    if counts[z] > counts[a]:
                        first = pre.base + bisect_right(counts, counts[a], a, z + 1) - 1
                        found.append((first, self._exc_rank(first, name, version), name, counts[z] - counts[a]))
                found.sort()
                exceptions = {name: count for _, _, name, count in found}
        else:
            totals = [0] * width
        if lo <= cur < hi:
            cells = self._buckets.get(cur)
            if cells:
                if version is None:
                    for cell in cells.values():
                        totals = [x + y for x, y in zip(totals, cell, strict=True)]
                elif (one := cells.get(version)) is not None:
                    totals = [x + y for x, y in zip(totals, one, strict=True)]
            by_key = self._exc.get(cur)
            if by_key:
                for (v, name), count in by_key.items():
                    if version is None or v == version:
                        exceptions[name] = exceptions.get(name, 0) + count
        return totals, exceptions

    def _exc_rank(self, b: int, name: str, version: str | None) -> int:
        """Where exceptions of ``name`` first come among those of bucket ``b``."""
        for rank, (v, n) in enumerate(self._exc.get(b, ())):
            if n == name and (version is None or v == version):
                return rank
        return 0

    def _extend(self, pre: _Prefix, top: int, version: str | None) -> None:
        """Add the buckets ``[pre.hi, top)`` to ``pre``."""
        buckets = self._buckets
        exc = self._exc
        cols = pre.cols
        names = pre.exc
        row = [col[-1] for col in cols]
        width = self._width
        for b in range(pre.hi, top):
            cells = buckets.get(b)
            if cells:
                if version is None:
                    for cell in cells.values():
                        for c in range(width):
                            row[c] += cell[c]
                elif (one := cells.get(version)) is not None:
                    for c in range(width):
                        row[c] += one[c]
            for c in range(width):
                cols[c].append(row[c])
            by_key = exc.get(b)
            added: dict[str, int] = {}
            if by_key:
                for (v, name), count in by_key.items():
                    if version is None or v == version:
                        added[name] = added.get(name, 0) + count
                        if name not in names:
                            names[name] = array("q", bytes(8 * (len(cols[0]) - 1)))
            for name, counts in names.items():
                counts.append(counts[-1] + added.get(name, 0))

    def _unseal(self, b: int) -> None:
        """A late event changed bucket ``b``: forget the running totals from it on."""
        for pre in self._prefix.values():
            pre.cut(b)
        self._sealed = b

    def _sampled_between(self, start_ms: int, end_ms: int) -> bool:
        s = self._sampling
        if s.active_since is not None and s.active_since < end_ms:
            return True
        return any(a < end_ms and b >= start_ms for a, b in s.spans)

    def signatures(self, version: str | None = None) -> list[Signature]:
        """Exception signatures (name + first line of message) seen in one version, oldest first."""
        sigs = self._signatures.get(version, {})
        out = [Signature(version, name, msg, s.first_ms, s.last_ms, s.count) for (name, msg), s in sigs.items()]
        out.sort(key=lambda s: s.first_ms)
        return out

    def signature_versions(self) -> list[str | None]:
        """The versions (None included) that raised exceptions."""
        return list(self._signatures)
