"""The guard board: judges every guard on every armed worker and publishes what changed.

Shared by the rollout engine and the watch mode, so both decide the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .bus import Breach, EventBus, GuardState
from .guards import Guard, Verdict
from .signals import WindowStats, WorkerSignals


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

    def arm(self, worker: str, since_ms: int) -> None:
        """Judge ``worker`` on events from ``since_ms`` on (re-arming after a rollback restarts the windows)."""
        self.armed[worker] = since_ms

    def note_shift(self, worker: str, at_ms: int, fraction: float) -> None:
        """Traffic moved: ``fraction`` of the worker's traffic now goes to a new version (Durable Objects
        restart, and guards with a ``wave`` allowance expect the burst of churn that follows)."""
        shifts = self.shifts.setdefault(worker, [])
        shifts.append((at_ms, fraction))
        del shifts[:-20]

    def applies(self, guard: Guard, worker: str) -> bool:
        scope = getattr(guard, "workers", None)
        return not scope or worker in scope

    def evaluate(self, worker: str, signals: WorkerSignals, now_ms: int) -> list[Verdict]:
        """Judge every guard of one armed worker; publish state changes; report breaches."""
        since = self.armed.get(worker)
        if since is None:
            return []
        out = []
        for guard in self.guards:
            if not self.applies(guard, worker):
                continue
            if getattr(guard, "wave", 0):
                verdict = guard.evaluate(signals, self.baselines.get(worker), now_ms, since_ms=since,
                                         shifts=self.shifts.get(worker, ()))  # type: ignore[call-arg]
            else:
                verdict = guard.evaluate(signals, self.baselines.get(worker), now_ms, since_ms=since)
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
                    event_time=signals.latest_ms / 1000 if signals.latest_ms else None, p_value=verdict.p_value)
                self.breaches.append(breach)
                self.bus.publish(breach)
                if self.on_breach is not None:
                    self.on_breach(guard, breach)
        return out
