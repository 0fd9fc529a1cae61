"""Replay: run a plan's guards over a recorded tail, at full speed, with the events' own time as the clock.

The core, :func:`replay_bytes`, is sans-IO: it takes byte chunks (split anywhere) and returns a
:class:`ReplayResult` value.  It runs the live engine's own loop: every event goes through
:class:`~rollout.framing.TailDecoder` into an :class:`~rollout.board.EventTimeJudge` per worker (sampling
notices, which name no worker, go to every worker seen so far), which judges the worker's guards on a
:class:`~rollout.board.GuardBoard` after an event when at least 20 ms of event time has passed since the last
judgement.  A guard that goes from any other state into ``breach`` is reported once, with the position of
the event after which it was judged (0-based, among valid events) and that event time.

Where the guards start and what they compare with:

* by default the first ``baseline_ms`` of event time (from the first event) is the baseline; the guards are
  armed at its end and judge only events from then on;
* with a :class:`~rollout.tailfile.ReplayContext` (written by ``rollout run --record-tail`` beside the
  recording), the recorded worker is armed when the live run armed it, judged against the live run's
  baseline, with its traffic shifts: the replay then reports each breach at the same event as the live run.

Judging after single events in event time, rather than after read chunks in wall time, makes the result
independent of how the bytes were chunked: the same recording always reports the same event index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .board import DEFAULT_JUDGE_INTERVAL_MS, EventTimeJudge, GuardBoard
from .bus import Breach, EventBus
from .durations import parse_duration
from .errors import UsageError
from .events import TailEvent
from .framing import TailDecoder
from .guards import Action, Guard
from .patterns import DEFAULT_PATTERNS, Matcher, patterns_for
from .signals import WindowStats, WorkerSignals
from .tailfile import ReplayContext, context_path_for

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ReplayBreach", "ReplayResult", "describe", "find_context", "read_chunks", "replay_bytes", "replay_file",
           "run_replay"]

DEFAULT_EVAL_INTERVAL_MS = DEFAULT_JUDGE_INTERVAL_MS


@dataclass(frozen=True, slots=True)
class ReplayBreach:
    """A guard that would have tripped: what it would have done, where in the recording, and why.

    Attributes:
        event_index: 0-based position, among valid events, of the event after which the guard was judged in
            breach.
        event_timestamp: the judgement's event time: the newest ``eventTimestamp`` seen (ms since the epoch).
        offset_ms: event time since the first event of the recording.
        detail: the guard's evidence, as the live run prints it.
    """

    guard: str
    action: Action
    worker: str
    event_index: int
    event_timestamp: int
    offset_ms: int
    detail: str
    value: float | None = None
    threshold: float | None = None
    samples: int = 0
    p_value: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "guard": self.guard, "action": self.action, "worker": self.worker, "event_index": self.event_index,
            "event_timestamp": self.event_timestamp, "offset_ms": self.offset_ms, "detail": self.detail,
            "value": self.value, "threshold": self.threshold, "samples": self.samples, "p_value": self.p_value,
        }


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay found.

    Attributes:
        events: valid events read.
        parse_errors: everything that was not a valid event (undecodable objects, objects over the size or
            nesting bound, garbage lines, truncated objects); never fatal.
        first_ms: event time of the first event (0 without events).
        last_ms: the newest event time seen.
        armed_ms: event time at which the guards were armed, None if the recording never reached it.
        baselines: the baseline window of each worker.
        breaches: guards that would have tripped, in order.
        evaluations: how many times a worker's guards were judged.
        context: the live run's context the replay started from, if any.
        parse_warnings: events kept although a field had an unexpected type (an exception message that is
            an object, a status that is a str, ...): counted, never dropped.
    """

    events: int
    parse_errors: int
    first_ms: int
    last_ms: int
    armed_ms: int | None
    baselines: Mapping[str, WindowStats] = field(default_factory=lambda: MappingProxyType({}))
    breaches: tuple[ReplayBreach, ...] = ()
    evaluations: int = 0
    context: ReplayContext | None = None
    parse_warnings: int = 0

    @property
    def rolled_back(self) -> bool:
        """True when a guard whose action is ``rollback`` tripped."""
        return any(b.action == "rollback" for b in self.breaches)

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "parse_errors": self.parse_errors, "parse_warnings": self.parse_warnings,
                "breaches": [b.to_json() for b in self.breaches],
                "context": None if self.context is None else self.context.worker}


class _Replayer:
    """The state of one replay (one instance per call of :func:`replay_bytes`)."""

    def __init__(self, guards: Sequence[Guard], baseline_ms: int, interval_ms: int,
                 patterns: Mapping[str, Matcher], context: ReplayContext | None) -> None:
        self.board = GuardBoard(guards, EventBus(), on_breach=self._on_breach)
        self.baseline_ms = baseline_ms
        self.interval_ms = interval_ms
        self.patterns = patterns_for(guards, patterns)
        self.context = context
        self.judges: dict[str, EventTimeJudge] = {}
        self.breaches: list[ReplayBreach] = []
        self.first_ms = 0
        self.now_ms = 0

    def _on_breach(self, guard: Guard, breach: Breach) -> None:
        at = breach.event_timestamp or 0
        self.breaches.append(ReplayBreach(
            guard=breach.guard, action=guard.action, worker=breach.worker, event_index=breach.event_index or 0,
            event_timestamp=at, offset_ms=at - self.first_ms, detail=breach.detail, value=breach.value,
            threshold=breach.threshold, samples=breach.samples, p_value=breach.p_value))

    def _judge_for(self, worker: str) -> EventTimeJudge:
        context = self.context if self.context is not None and self.context.worker == worker else None
        interval = context.judge_interval_ms if context is not None else self.interval_ms
        judge = self.judges[worker] = EventTimeJudge(
            self.board, worker, WorkerSignals(worker, patterns=self.patterns), interval)
        if context is not None:
            if context.armed_ms is not None:
                self.board.arm(worker, context.armed_ms)
            self.board.baselines[worker] = context.baseline
            for at, share in context.shifts:
                self.board.note_shift(worker, at, share)
        elif self.first_ms:
            self.board.arm(worker, self.first_ms + self.baseline_ms)
        return judge

    def _start(self, first_ms: int) -> None:
        """The first event time: the default baseline window, and arming for workers without a context."""
        self.first_ms = first_ms
        armed = first_ms + self.baseline_ms
        self.board.baseline_window = (first_ms, armed)
        for worker in self.judges:
            if worker not in self.board.armed:
                self.board.arm(worker, armed)

    def add(self, event: TailEvent, index: int) -> None:
        ts = event.timestamp_ms
        if ts > 0:
            if not self.first_ms:
                self._start(ts)
            if ts > self.now_ms:
                self.now_ms = ts
        worker = event.worker
        if worker is None:  # a sampling notice: it concerns every tail being watched
            for judge in self.judges.values():
                judge.add(event, index)
            return
        found = self.judges.get(worker)
        (found if found is not None else self._judge_for(worker)).add(event, index)

    def armed_ms(self) -> int | None:
        """When the guards were armed, if the recording reached that point."""
        armed = [a for a in self.board.armed.values() if a <= self.now_ms]
        return min(armed) if armed else None


def replay_bytes(
    chunks: Iterable[bytes], guards: Sequence[Guard], *, baseline_ms: int = 30_000,
    eval_interval_ms: int = DEFAULT_EVAL_INTERVAL_MS, patterns: Mapping[str, Matcher] = DEFAULT_PATTERNS,
    context: ReplayContext | None = None,
) -> ReplayResult:
    """Run ``guards`` over the tail in ``chunks`` (``wrangler tail --format json`` output, or one compact
    object per line) and return what they would have done.

    Args:
        chunks: the recording, split anywhere.
        guards: the plan's guards.
        baseline_ms: event time, from the first event, that makes the baseline; the guards are armed at its
            end (0: armed at the first event, judged without a baseline).  Not used for the worker of
            ``context``.
        eval_interval_ms: event time between two judgements of one worker's guards.
        patterns: the log patterns the signals count, besides each guard's own
            (:func:`rollout.patterns.patterns_for`).
        context: what a live run knew about the recorded worker (arming, baseline, shifts): start from there.
    """
    replayer = _Replayer(guards, baseline_ms, eval_interval_ms, patterns, context)
    decoder = TailDecoder()
    add = replayer.add
    for chunk in chunks:
        first = decoder.events
        for index, event in enumerate(decoder.feed(chunk), first):
            add(event, index)
    first = decoder.events
    for index, event in enumerate(decoder.flush(), first):
        add(event, index)
    baselines = {w: b for w, b in replayer.board.baselines.items() if b is not None}
    return ReplayResult(
        events=decoder.events, parse_errors=decoder.malformed, first_ms=replayer.first_ms,
        last_ms=replayer.now_ms, armed_ms=replayer.armed_ms(), baselines=MappingProxyType(baselines),
        breaches=tuple(replayer.breaches), evaluations=sum(j.judgements for j in replayer.judges.values()),
        context=context, parse_warnings=decoder.parse_warnings,
    )


def read_chunks(path: Path, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of ``path`` in chunks (blocking: call it from a worker thread in async code).

    Raises:
        OSError: the file cannot be opened or read.
    """
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk


def replay_file(path: Path, guards: Sequence[Guard], **options: Any) -> ReplayResult:
    """:func:`replay_bytes` over a file (blocking)."""
    return replay_bytes(read_chunks(path), guards, **options)


def _clock(offset_ms: int) -> str:
    minutes, ms = divmod(offset_ms, 60_000)
    return f"+{minutes:d}:{ms / 1000:06.3f}"


def describe(result: ReplayResult, baseline_ms: int) -> list[str]:
    """The replay as lines for a person: the recording, the baseline, then each breach with its evidence."""
    span = max(0, result.last_ms - result.first_ms)
    lines = [f"{result.events} events over {_clock(span)[1:]} of event time, {result.parse_errors} bad input(s)"]
    if result.parse_warnings:
        lines.append(f"{result.parse_warnings} event(s) kept with a field of an unexpected type (read as "
                     "far as it could be)")
    context = result.context
    if context is not None:
        armed = "never armed" if context.armed_ms is None else \
            f"armed at {_clock(context.armed_ms - result.first_ms) if result.first_ms else context.armed_ms}"
        lines.append(f"starting from the live run's context for {context.worker}: {armed}, its baseline, "
                     f"{len(context.shifts)} traffic shift(s)")
        if context.dropped_chunks:
            lines.append(f"warning: the live recorder dropped {context.dropped_chunks} chunk(s): event "
                         "positions after the first drop cannot match the live run")
    if result.armed_ms is None:
        lines.append("the recording ends before the guards were armed: nothing was judged" if context else
                     f"the recording is shorter than the baseline ({baseline_ms / 1000:g} s): guards never armed")
    for worker, stats in sorted(result.baselines.items()):
        rate = f"{stats.error_rate * 100:.2f}%" if stats.error_rate is not None else "n/a"
        source = "the live run's" if context is not None and context.worker == worker else \
            f"first {baseline_ms / 1000:g} s"
        lines.append(f"baseline {worker}: {source}, {stats.requests} requests, error rate {rate}")
    if not result.breaches:
        lines.append("no guard would have tripped")
    verbs = {"rollback": "would have ROLLED BACK", "alert": "would have alerted", "warn": "would have warned"}
    lines.extend(f"{_clock(b.offset_ms)} event #{b.event_index} (t={b.event_timestamp}): {b.guard} on "
                 f"{b.worker} {verbs.get(b.action, b.action)}: {b.detail}" for b in result.breaches)
    if context is not None:
        for live in context.breaches:
            same = next((b for b in result.breaches if b.guard == live.guard and b.worker == context.worker), None)
            verdict = "replay agrees" if same is not None and same.event_index == live.event_index else \
                (f"replay differs: event #{same.event_index}" if same is not None else "replay did not trip it")
            lines.append(f"live run: {live.guard} on {context.worker} tripped at event #{live.event_index}: {verdict}")
    return lines


def find_context(tail_file: Path, explicit: Path | None, *, use: bool = True) -> ReplayContext | None:
    """The context to start from: ``explicit``, else the one a live run left beside ``tail_file`` (blocking).

    Raises:
        UsageError: ``explicit`` (or the file found) cannot be read or is not a context.
    """
    if explicit is not None:
        return ReplayContext.read(explicit)
    if not use:
        return None
    beside = context_path_for(tail_file)
    return ReplayContext.read(beside) if beside.is_file() else None


async def run_replay(tail_file: Path, plan_path: Path, *, baseline: str | None = None, as_json: bool = False,
                     context_file: Path | None = None, console: Console) -> int:
    """``rollout replay``: 1 if a rollback guard tripped, else 0.

    The live run's context beside the recording (``NAME.context.json`` for ``NAME.tail.json``), or
    ``context_file``, is used unless ``baseline`` is given.

    Raises:
        PlanError: the plan cannot be loaded.
        UsageError: the tail file or context cannot be read, or ``baseline`` is not a duration.
    """
    import json

    import anyio

    from .plan import load_plan

    plan = load_plan(plan_path)
    try:
        baseline_s = parse_duration(baseline) if baseline is not None else plan.baseline_s
    except ValueError as exc:
        raise UsageError(f"--baseline: {exc}") from None
    baseline_ms = int(baseline_s * 1000)
    if not await anyio.Path(tail_file).is_file():
        raise UsageError(f"{tail_file}: no such tail file")
    context = await anyio.to_thread.run_sync(
        lambda: find_context(tail_file, context_file, use=baseline is None))
    try:
        result = await anyio.to_thread.run_sync(
            lambda: replay_file(tail_file, plan.guards, baseline_ms=baseline_ms, context=context))
    except OSError as exc:
        raise UsageError(f"{tail_file}: cannot read: {exc.strerror or exc}") from None
    if as_json:
        console.print(json.dumps(result.to_json()), markup=False, highlight=False, soft_wrap=True)
    else:
        for line in describe(result, baseline_ms):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 1 if result.rolled_back else 0
