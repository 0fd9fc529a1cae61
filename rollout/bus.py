"""Engine events and the bus that fans them out to the view, the journal and the metrics.

Every state change of a rollout is one frozen value published on the bus.  Subscribers get their
own bounded memory stream; nothing but the view writes to the terminal.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

Level = Literal["info", "warn", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineEvent:
    """Base of every event; ``at`` is wall-clock epoch seconds from the engine's clock."""

    at: float = field(default_factory=time.time)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind}
        data.update(_plain(asdict(self)))
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutStarted(EngineEvent):
    rollout_id: str
    plan: str
    target: str
    workers: tuple[str, ...]
    phases: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseStarted(EngineEvent):
    index: int
    phase: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseFinished(EngineEvent):
    index: int
    phase: str
    status: Literal["succeeded", "failed", "cancelled", "skipped"]
    seconds: float
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(EngineEvent):
    """A line for people: progress, warnings, command output summaries."""

    level: Level = "info"
    text: str
    phase: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerChanged(EngineEvent):
    """A deploy changed (or may have changed) what serves a worker."""

    worker: str
    before: str | None
    after: str | None
    phase: str
    command: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineMeasured(EngineEvent):
    worker: str
    requests: int
    errors: int
    seconds: float
    pattern_rates: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardState(EngineEvent):
    """A guard's verdict changed state (ok / breach / no_data / inconclusive)."""

    guard: str
    worker: str
    action: str
    state: str
    value: float | None
    baseline: float | None
    threshold: float
    samples: int
    window_s: float
    detail: str
    p_value: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Breach(EngineEvent):
    guard: str
    worker: str
    action: str
    value: float | None
    baseline: float | None
    threshold: float
    samples: int
    window_s: float
    detail: str
    event_time: float | None = None
    p_value: float | None = None
    #: Position of the event that tripped the guard among the valid events of the worker's tail
    #: (what ``rollout replay --json`` reports as ``event_index``), and that judgement's event time (ms).
    event_index: int | None = None
    event_timestamp: int | None = None
    #: Whether this breach makes rollout roll back: None (a rollout's breach) means "as the guard's action
    #: says" (a rollback guard rolls back); a watch sets False when it only alerts (no --rollback-on-breach,
    #: or the worker was rolled back once already) and True when it rolls the worker back.
    will_roll_back: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GateAnswered(EngineEvent):
    """A gate's question got an answer (or none): who gave it, for the reports."""

    phase: str
    question: str
    answer: Literal["yes", "no", "none"]
    #: "--yes" (approved by the command line), "a person at the terminal", or "nobody"
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeChecked(EngineEvent):
    phase: str
    worker: str
    probe: str
    ok: bool
    saw: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackAttempt(EngineEvent):
    worker: str
    from_version: str | None
    to_version: str
    attempt: int
    ok: bool
    detail: str
    codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackDone(EngineEvent):
    worker: str
    from_version: str | None
    to_version: str
    attempts: int
    verified: bool
    detail: str
    recovered: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorState(EngineEvent):
    worker: str
    connected: bool
    reconnects: int
    blind_s: float
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis(EngineEvent):
    """A Cloudflare error code met during the rollout, explained."""

    phase: str
    command: str
    code: int | None
    message: str
    cause: str
    fix: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStats(EngineEvent):
    """A periodic snapshot of one worker's live signals, for the view and the metrics."""

    worker: str
    rps: float
    error_rate: float | None
    baseline_error_rate: float | None
    requests: int
    errors: int
    pattern_per_hour: Mapping[str, float]
    versions: Mapping[str, int]
    parse_errors: int
    sampled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutFinished(EngineEvent):
    outcome: Literal["succeeded", "rolled_back", "rollback_failed", "failed"]
    exit_code: int
    detail: str = ""


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class EventBus:
    """Fans every published event out to each subscriber's bounded stream.

    ``publish`` never blocks: a subscriber that falls more than ``buffer`` events behind loses
    the oldest ones it has not read (counted in ``dropped``); the journal uses a large buffer.
    """

    def __init__(self) -> None:
        self._subscribers: list[tuple[MemoryObjectSendStream[EngineEvent], str]] = []
        self.dropped: dict[str, int] = {}
        self.history: deque[EngineEvent] = deque(maxlen=50_000)

    def subscribe(self, name: str, buffer: int = 10_000) -> MemoryObjectReceiveStream[EngineEvent]:
        send, receive = anyio.create_memory_object_stream[EngineEvent](buffer)
        self._subscribers.append((send, name))
        return receive

    def publish(self, event: EngineEvent) -> None:
        if not isinstance(event, WorkerStats):
            self.history.append(event)
        for send, name in self._subscribers:
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped[name] = self.dropped.get(name, 0) + 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                continue

    def close(self) -> None:
        for send, _ in self._subscribers:
            send.close()
        self._subscribers.clear()
