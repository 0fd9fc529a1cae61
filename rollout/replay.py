"""Replay: run a plan's guards over a recorded tail, at full speed, with the events' own time as the clock.

The core, :func:`replay_bytes`, is sans-IO: it takes byte chunks (split anywhere) and returns a
:class:`ReplayResult` value.  It does what the live engine does, in event time instead of wall time:

* every event goes through :class:`~rollout.framing.TailDecoder` into the :class:`~rollout.signals.WorkerSignals`
  of its worker (sampling notices, which name no worker, go to every worker seen so far);
* the first ``baseline_ms`` of event time (from the first event) is the baseline; the guards are armed at its
  end, and judge only events from then on (``since_ms``);
* after an event, a worker's guards are judged when at least ``eval_interval_ms`` of event time has passed
  since their last judgement (the engine judges at most every 20 ms);
* a guard that goes from any other state into ``breach`` is reported once, with the position of the event
  after which it was judged (0-based, among valid events) and that event's timestamp.

Judging after single events rather than after read chunks makes the result independent of how the file was
chunked: the same recording always reports the same event index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from .durations import parse_duration
from .errors import UsageError
from .framing import TailDecoder
from .guards import Action, Guard, Verdict
from .signals import DEFAULT_PATTERNS, WindowStats, WorkerSignals

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ReplayBreach", "ReplayResult", "describe", "read_chunks", "replay_bytes", "replay_file", "run_replay"]

DEFAULT_EVAL_INTERVAL_MS: Final = 20


@dataclass(frozen=True, slots=True)
class ReplayBreach:
    """A guard that would have tripped: what it would have done, where in the recording, and why.

    Attributes:
        event_index: 0-based position, among valid events, of the event after which the guard was judged in
            breach.
        event_timestamp: that event's ``eventTimestamp`` (ms since the epoch).
        offset_ms: event time since the first event of the recording.
        verdict: the guard's full verdict (``verdict.detail`` is the evidence).
    """

    guard: str
    action: Action
    worker: str
    event_index: int
    event_timestamp: int
    offset_ms: int
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "guard": self.guard, "action": self.action, "worker": self.worker, "event_index": self.event_index,
            "event_timestamp": self.event_timestamp, "offset_ms": self.offset_ms, "detail": self.verdict.detail,
            "value": self.verdict.value, "threshold": self.verdict.threshold, "samples": self.verdict.samples,
            "p_value": self.verdict.p_value,
        }


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay found.

    Attributes:
        events: valid events read.
        parse_errors: everything that was not a valid event (undecodable objects, garbage lines, truncated
            objects); never fatal.
        first_ms: event time of the first event (0 without events).
        last_ms: the newest event time seen.
        armed_ms: event time at which the guards were armed (end of the baseline), None if never reached.
        baselines: the baseline window of each worker.
        breaches: guards that would have tripped, in order.
        evaluations: how many times a worker's guards were judged.
    """

    events: int
    parse_errors: int
    first_ms: int
    last_ms: int
    armed_ms: int | None
    baselines: Mapping[str, WindowStats] = field(default_factory=lambda: MappingProxyType({}))
    breaches: tuple[ReplayBreach, ...] = ()
    evaluations: int = 0

    @property
    def rolled_back(self) -> bool:
        """True when a guard whose action is ``rollback`` tripped."""
        return any(b.action == "rollback" for b in self.breaches)

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "parse_errors": self.parse_errors,
                "breaches": [b.to_json() for b in self.breaches]}


class _Replayer:
    """The state of one replay (one instance per call of :func:`replay_bytes`)."""

    def __init__(self, guards: Sequence[Guard], baseline_ms: int, eval_interval_ms: int,
                 patterns: Mapping[str, str]) -> None:
        self.guards = tuple(guards)
        self.baseline_ms = baseline_ms
        self.eval_interval_ms = eval_interval_ms
        self.patterns = patterns
        self.signals: dict[str, WorkerSignals] = {}
        self.baselines: dict[str, WindowStats] = {}
        self.states: dict[tuple[str, str], str] = {}
        self.last_eval: dict[str, int] = {}
        self.breaches: list[ReplayBreach] = []
        self.index = -1
        self.first_ms = 0
        self.now_ms = 0
        self.armed_ms: int | None = None
        self.evaluations = 0

    def add(self, worker: str | None, timestamp_ms: int, event: Any) -> None:
        self.index += 1
        if timestamp_ms > 0:
            if not self.first_ms:
                self.first_ms = timestamp_ms
                self.armed_ms = timestamp_ms + self.baseline_ms
            if timestamp_ms > self.now_ms:
                self.now_ms = timestamp_ms
        if worker is None:  # a sampling notice: it concerns every tail being watched
            for each in self.signals.values():
                each.add(event)
            return
        signals = self.signals.get(worker)
        if signals is None:
            signals = self.signals[worker] = WorkerSignals(worker, patterns=self.patterns)
        signals.add(event)
        armed = self.armed_ms
        if armed is None or self.now_ms < armed:
            return
        if self.now_ms - self.last_eval.get(worker, -self.eval_interval_ms) >= self.eval_interval_ms:
            self.judge(worker, signals, armed)

    def judge(self, worker: str, signals: WorkerSignals, armed: int) -> None:
        now = self.now_ms
        self.last_eval[worker] = now
        self.evaluations += 1
        baseline = self.baselines.get(worker)
        if baseline is None:
            baseline = self.baselines[worker] = signals.window(self.first_ms, armed)
        for guard in self.guards:
            scope = getattr(guard, "workers", None)
            if scope and worker not in scope:
                continue
            verdict = guard.evaluate(signals, baseline, now, since_ms=armed)
            key = (guard.name, worker)
            previous = self.states.get(key)
            self.states[key] = verdict.state
            if verdict.state == "breach" and previous != "breach":
                self.breaches.append(ReplayBreach(
                    guard=guard.name, action=guard.action, worker=worker, event_index=self.index,
                    event_timestamp=now, offset_ms=now - self.first_ms, verdict=verdict))


def replay_bytes(
    chunks: Iterable[bytes], guards: Sequence[Guard], *, baseline_ms: int = 30_000,
    eval_interval_ms: int = DEFAULT_EVAL_INTERVAL_MS, patterns: Mapping[str, str] = DEFAULT_PATTERNS,
) -> ReplayResult:
    """Run ``guards`` over the tail in ``chunks`` (``wrangler tail --format json`` output, or one compact
    object per line) and return what they would have done.

    Args:
        chunks: the recording, split anywhere.
        guards: the plan's guards.
        baseline_ms: event time, from the first event, that makes the baseline; the guards are armed at its
            end (0: armed at the first event, judged without a baseline).
        eval_interval_ms: event time between two judgements of one worker's guards.
        patterns: the log patterns the signals count.
    """
    replayer = _Replayer(guards, baseline_ms, eval_interval_ms, patterns)
    decoder = TailDecoder()
    add = replayer.add
    for chunk in chunks:
        for event in decoder.feed(chunk):
            add(event.worker, event.timestamp_ms, event)
    for event in decoder.flush():
        add(event.worker, event.timestamp_ms, event)
    return ReplayResult(
        events=decoder.events, parse_errors=decoder.malformed, first_ms=replayer.first_ms,
        last_ms=replayer.now_ms, armed_ms=replayer.armed_ms if replayer.now_ms >= (replayer.armed_ms or 0) else None,
        baselines=MappingProxyType(dict(replayer.baselines)), breaches=tuple(replayer.breaches),
        evaluations=replayer.evaluations,
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
    if result.armed_ms is None:
        lines.append(f"the recording is shorter than the baseline ({baseline_ms / 1000:g} s): guards never armed")
    for worker, stats in sorted(result.baselines.items()):
        rate = f"{stats.error_rate * 100:.2f}%" if stats.error_rate is not None else "n/a"
        lines.append(f"baseline {worker}: first {baseline_ms / 1000:g} s, {stats.requests} requests, "
                     f"error rate {rate}")
    if not result.breaches:
        lines.append("no guard would have tripped")
    for b in result.breaches:
        verb = {"rollback": "would have ROLLED BACK", "alert": "would have alerted", "warn": "would have warned"}
        lines.append(f"{_clock(b.offset_ms)} event #{b.event_index} (t={b.event_timestamp}): {b.guard} on "
                     f"{b.worker} {verb.get(b.action, b.action)}: {b.verdict.detail}")
    return lines


async def run_replay(tail_file: Path, plan_path: Path, *, baseline: str | None = None, as_json: bool = False,
                     console: Console) -> int:
    """``rollout replay``: 1 if a rollback guard tripped, else 0.

    Raises:
        PlanError: the plan cannot be loaded.
        UsageError: the tail file cannot be read, or ``baseline`` is not a duration.
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
    try:
        result = await anyio.to_thread.run_sync(
            lambda: replay_file(tail_file, plan.guards, baseline_ms=baseline_ms))
    except OSError as exc:
        raise UsageError(f"{tail_file}: cannot read: {exc.strerror or exc}") from None
    if as_json:
        console.print(json.dumps(result.to_json()), markup=False, highlight=False, soft_wrap=True)
    else:
        for line in describe(result, baseline_ms):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 1 if result.rolled_back else 0
