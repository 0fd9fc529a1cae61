"""The guard board: judges every guard on every armed worker and publishes what changed.

Shared by the rollout engine, the watch mode and replay, so all three decide the same way.  When a worker's
guards are judged is decided by :class:`EventTimeJudge`, per event and in event time, so a recorded tail
replays to the same decision at the same event as the live run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from .bus import Breach, EventBus, GuardState
from .events import TailEvent
from .guards import Guard, Verdict
from .signals import WindowStats, WorkerSignals

#: Event time between two judgements of one worker's guards.
DEFAULT_JUDGE_INTERVAL_MS: Final = 20


class GuardBoard:
    """Judges guards on workers, publishes state changes and breaches on the bus.

    Args:
        guards: the guards; a guard with a non-empty ``workers`` applies only to those.
        bus: where ``GuardState`` and ``Breach`` events go.
        on_breach: called after a breach was published (the engine cancels its phase there).
    """

    def __init__(self, guards: Sequence[Guard], bus: EventBus,
                 on_breach: Callable[[Guard, Breach], None] | None = None) -> None:
        self.guards = list(guards)
        self.bus = bus
        self.on_breach = on_breach
        self.armed: dict[str, int] = {}
        self.baselines: dict[str, WindowStats | None] = {}
        self.verdicts: dict[tuple[str, str], Verdict] = {}
        self.breaches: list[Breach] = []
        self.shifts: dict[str, list[tuple[int, float]]] = {}
        #: With a window, a worker's baseline is measured from its own signals at its first judgement
        #: (replay does this; the engine and watch measure theirs and set ``baselines``).
        self.baseline_window: tuple[int, int] | None = None
        self.halted = False
        #: Set by the caller that decides: whether a breach of a rollback ``guard`` on ``worker`` rolls back
        #: (the ``Breach.will_roll_back`` it carries); None leaves it to the guard's action.
        self.will_roll_back: Callable[[Guard, str], bool] | None = None

    def halt(self) -> None:
        """Stop judging (after a breach that starts a rollback, the rollback's own checks take over)."""
        self.halted = True

    def arm(self, worker: str, since_ms: int) -> None:
        """Judge ``worker`` on events from ``since_ms`` on (re-arming after a rollback restarts the windows)."""
        self.armed[worker] = since_ms

    def note_shift(self, worker: str, at_ms: int, fraction: float) -> None:
        """Traffic moved: ``fraction`` of the worker's traffic now goes to a new version (Durable Objects
        restart, and guards with a ``wave`` allowance expect the burst of churn that follows)."""
        shifts = self.shifts.setdefault(worker, [])
        shifts.append((at_ms, fraction))
        del shifts[:-20]

    def withdraw_shift(self, worker: str, at_ms: int) -> None:
        """Forget a shift noted at ``at_ms`` (the traffic did not move)."""
        self.shifts[worker] = [shift for shift in self.shifts.get(worker, ()) if shift[0] != at_ms]

    def judge(self, guard: Guard, worker: str, signals: WorkerSignals, now_ms: int, since_ms: int) -> Verdict:
        """One guard's verdict on one worker's events from ``since_ms``, with the worker's baseline and (for
        guards with a Durable-Object ``wave``) its traffic shifts; publishes nothing."""
        if getattr(guard, "wave", 0):
            return guard.evaluate(signals, self.baselines.get(worker), now_ms, since_ms=since_ms,
                                  shifts=self.shifts.get(worker, ()))  # type: ignore[call-arg]
        return guard.evaluate(signals, self.baselines.get(worker), now_ms, since_ms=since_ms)

    def applies(self, guard: Guard, worker: str) -> bool:
        scope = getattr(guard, "workers", None)
        return not scope or worker in scope

    def evaluate(self, worker: str, signals: WorkerSignals, now_ms: int, *,
                 event_index: int | None = None) -> list[Verdict]:
        """Judge every guard of one armed worker; publish state changes; report breaches.

        ``event_index`` is the position, among the valid events of the worker's tail, of the event after
        which this judgement happens; a breach carries it (and ``now_ms`` as its event time).
        """
        since = self.armed.get(worker)
        if since is None or self.halted:
            return []
        if self.baseline_window is not None and worker not in self.baselines:
            self.baselines[worker] = signals.window(*self.baseline_window)
        out = []
        for guard in self.guards:
            if not self.applies(guard, worker):
                continue
            verdict = self.judge(guard, worker, signals, now_ms, since)
            out.append(verdict)
            key = (guard.name, worker)
            previous = self.verdicts.get(key)
            self.verdicts[key] = verdict
            if previous is not None and previous.state == verdict.state:
                continue
            self.bus.publish(GuardState(
                guard=guard.name, worker=worker, action=guard.action, state=verdict.state, value=verdict.value,
                baseline=verdict.baseline, threshold=verdict.threshold, samples=verdict.samples,
                window_s=verdict.window_s, detail=verdict.detail, p_value=verdict.p_value))
            if verdict.state == "breach":
                breach = Breach(
                    guard=guard.name, worker=worker, action=guard.action, value=verdict.value,
                    baseline=verdict.baseline, threshold=verdict.threshold, samples=verdict.samples,
                    window_s=verdict.window_s, detail=verdict.detail,
                    event_time=signals.latest_ms / 1000 if signals.latest_ms else None, p_value=verdict.p_value,
                    event_index=event_index, event_timestamp=now_ms if event_index is not None else None,
                    will_roll_back=self.will_roll_back(guard, worker)
                    if self.will_roll_back is not None and guard.action == "rollback" else None)
                self.breaches.append(breach)
                self.bus.publish(breach)
                if self.on_breach is not None:
                    self.on_breach(guard, breach)
        return out


class EventTimeJudge:
    """Adds one worker's events to its signals and judges its guards in event time.

    After each event, the worker's guards are judged when the worker is armed, the newest event time has
    reached the arming time, and at least ``interval_ms`` of event time has passed since the last
    judgement.  Wall time plays no part, so the live monitor and :mod:`rollout.replay`, given the same
    bytes, judge after the same events and report a breach at the same index.
    """

    __slots__ = ("board", "interval_ms", "judgements", "last_ms", "now_ms", "signals", "worker")

    def __init__(self, board: GuardBoard, worker: str, signals: WorkerSignals,
                 interval_ms: int = DEFAULT_JUDGE_INTERVAL_MS) -> None:
        self.board = board
        self.worker = worker
        self.signals = signals
        self.interval_ms = interval_ms
        self.now_ms = 0
        self.last_ms: int | None = None
        self.judgements = 0

    def add(self, event: TailEvent, index: int) -> None:
        """Count ``event`` (the ``index``-th valid event of the tail) and judge if it is time to."""
        self.signals.add(event)
        ts = event.timestamp_ms
        if ts > self.now_ms:
            self.now_ms = ts
        now = self.now_ms
        since = self.board.armed.get(self.worker)
        if since is None or now < since:
            return
        last = self.last_ms
        if last is None or now - last >= self.interval_ms:
            self.last_ms = now
            self.judgements += 1
            self.board.evaluate(self.worker, self.signals, now, event_index=index)
