"""One monitor per watched worker: a tail source, framing and parsing, and the worker's signals."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .board import EventTimeJudge, GuardBoard
from .events import TailEvent
from .framing import TailDecoder
from .patterns import DEFAULT_PATTERNS, Matcher, patterns_for
from .signals import WorkerSignals
from .sources import SourceStatus

logger = logging.getLogger("rollout.monitor")


class Source(Protocol):
    status: SourceStatus

    async def run(self, on_chunk: Callable[[bytes], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """What a monitor knows at one instant (a value, safe to hand to the view)."""

    worker: str
    connected: bool
    reconnects: int
    blind_s: float
    events: int
    parse_errors: int
    last_event_ms: int
    #: events kept although a field had an unexpected type (see :attr:`TailDecoder.parse_warnings`)
    parse_warnings: int = 0


class Monitor:
    """Feeds a worker's tail into its :class:`WorkerSignals`.

    With a ``board``, the worker's guards are judged per event, in event time, by an
    :class:`~rollout.board.EventTimeJudge` (the same loop replay runs, so a recording of this tail replays
    to the same breach at the same event).  ``on_events`` is called after each chunk that produced events
    (exact counters for metrics).  Events of other workers are ignored.

    The signals count ``patterns`` (the defaults) plus the log pattern of every guard on ``board``
    (:func:`rollout.patterns.patterns_for`), so a plan's ``LogRate(pattern="greet failed")`` is watched.
    """

    def __init__(
        self,
        worker: str,
        source: Source,
        *,
        patterns: Mapping[str, Matcher] = DEFAULT_PATTERNS,
        on_events: Callable[[str, list[TailEvent]], None] | None = None,
        recorder: Callable[[bytes], None] | None = None,
        board: GuardBoard | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.worker = worker
        self.source = source
        self.decoder = TailDecoder()
        if board is not None:
            patterns = patterns_for(board.guards, patterns)
        self.signals = WorkerSignals(worker, patterns=patterns)
        self.judge = EventTimeJudge(board, worker, self.signals) if board is not None else None
        self.on_events = on_events
        self.recorder = recorder
        self.clock = clock

    def feed(self, chunk: bytes) -> None:
        if self.recorder is not None:
            self.recorder(chunk)
        first = self.decoder.events
        events = self.decoder.feed(chunk)
        if not events:
            return
        worker = self.worker
        judge = self.judge
        if judge is None:
            add = self.signals.add
            for event in events:
                if event.worker is None or event.worker == worker:
                    add(event)
        else:
            judge_add = judge.add
            for index, event in enumerate(events, first):
                if event.worker is None or event.worker == worker:
                    judge_add(event, index)
        if self.on_events is not None:
            self.on_events(worker, events)

    async def run(self) -> None:
        await self.source.run(self.feed)

    def snapshot(self) -> MonitorSnapshot:
        status = self.source.status
        return MonitorSnapshot(
            worker=self.worker,
            connected=status.connected,
            reconnects=status.reconnects,
            blind_s=status.blind_s(self.clock()),
            events=self.decoder.events,
            parse_errors=self.decoder.parse_errors,
            last_event_ms=self.signals.latest_ms,
            parse_warnings=self.decoder.parse_warnings,
        )
