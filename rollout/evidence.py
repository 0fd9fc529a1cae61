"""What a bake waits for before it may promote: every rollback guard judged ``ok`` on every changed worker.

A bake's time is a minimum, not a verdict.  At its end each guard that can roll back is judged afresh on
each changed, watched worker; ``no_data``, ``inconclusive`` or a blind tail is not evidence of health, so
the bake goes on (up to a bound) until they are ``ok``, and otherwise the phase fails and rolls back.
Guards that only alert or warn never hold a rollout up.

Evidence of health accumulates: "ok" is judged over everything since the worker was changed (a guard's own
window, for the breach, slides; for the proof, it grows), so a release close to its line is shown inside it
after enough requests instead of waiting forever on one window's worth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from .board import GuardBoard
from .guards import Guard
from .monitor import Monitor


@dataclass(frozen=True, slots=True)
class Missing:
    """One thing a bake still waits for: a guard on a worker that is not ``ok``, or a blind tail."""

    worker: str
    guard: str
    state: str
    detail: str

    def describe(self) -> str:
        if self.guard == "tail":
            return f"{self.worker}: {self.detail}"
        return f"{self.guard} on {self.worker} is {self.state} ({self.detail})"


def missing_evidence(board: GuardBoard, monitors: Mapping[str, Monitor], armed: Mapping[str, int],
                     now_ms: int) -> list[Missing]:
    """What is not yet judged ok, for every armed worker that has a monitor (empty: the bake may end)."""
    missing: list[Missing] = []
    for worker, since_ms in armed.items():
        monitor = monitors.get(worker)
        if monitor is None:
            continue
        if not monitor.source.status.connected:
            missing.append(Missing(worker, "tail", "blind", "tail is blind (no stream): the guards cannot see"))
            continue
        for guard in board.guards:
            if guard.action != "rollback" or not board.applies(guard, worker):
                continue
            now = max(now_ms, monitor.signals.latest_ms)
            verdict = board.judge(_since_arming(guard, now - since_ms), worker, monitor.signals, now, since_ms)
            if verdict.state != "ok":
                missing.append(Missing(worker, guard.name, verdict.state, verdict.detail))
    return missing


def _since_arming(guard: Guard, span_ms: int) -> Guard:
    """The guard with its window widened to cover everything since arming (built-ins are dataclasses)."""
    window = getattr(guard, "window_s", None)
    if not dataclasses.is_dataclass(guard) or not isinstance(window, int | float) or span_ms / 1000 <= window:
        return guard
    widened: Guard = dataclasses.replace(guard, window_s=span_ms / 1000)
    return widened
