"""When guards are judged: per event, in event time, the same for a live monitor and for replay."""

from __future__ import annotations

from rollout.board import EventTimeJudge, GuardBoard
from rollout.bus import Breach, EventBus
from rollout.events import TailEvent
from rollout.guards import ErrorRate, LogRate
from rollout.replay import replay_bytes
from rollout.signals import WorkerSignals

from .helpers import T0, bad_release_items, pretty

T0_MS = int(T0 * 1000)


def _event(ts: int, *, error: bool = False, logs: tuple[str, ...] = ()) -> TailEvent:
    return TailEvent(ts, "w", "v1", "exception" if error else "ok", None if error else 200, logs=logs)


def test_judges_only_when_armed_and_every_interval_of_event_time() -> None:
    """Nothing is judged before arming; then one judgement per 20 ms of event time, however many events."""
    board = GuardBoard([ErrorRate()], EventBus())
    judge = EventTimeJudge(board, "w", WorkerSignals("w"))
    for i in range(100):  # 100 events 1 ms apart, unarmed
        judge.add(_event(T0_MS + i), i)
    assert judge.judgements == 0
    board.arm("w", T0_MS + 200)
    for i in range(100, 400):  # 1 ms apart: armed from the 200th on, judged every 20 ms
        judge.add(_event(T0_MS + i), i)
    assert judge.judgements == 10


def test_a_breach_carries_the_index_of_the_event_that_tripped_it() -> None:
    breaches: list[Breach] = []
    board = GuardBoard([ErrorRate(min_samples=30)], EventBus(), on_breach=lambda _g, b: breaches.append(b))
    board.arm("w", T0_MS)
    judge = EventTimeJudge(board, "w", WorkerSignals("w"))
    for i in range(200):
        judge.add(_event(T0_MS + i * 50, error=i >= 100), i)
    (breach,) = breaches
    assert breach.event_index is not None and 100 < breach.event_index < 200
    assert breach.event_timestamp == T0_MS + breach.event_index * 50


def test_a_halted_board_stops_judging() -> None:
    breaches: list[Breach] = []
    board = GuardBoard([ErrorRate(min_samples=30)], EventBus(), on_breach=lambda _g, b: breaches.append(b))
    board.arm("w", T0_MS)
    board.halt()
    judge = EventTimeJudge(board, "w", WorkerSignals("w"))
    for i in range(200):
        judge.add(_event(T0_MS + i * 50, error=True), i)
    assert breaches == []


def test_one_churn_line_right_after_arming_is_not_a_breach() -> None:
    """Judged at its own event time, one line in 1 ms is '3.6 million/hour'; over the 10 s minimum exposure
    it is p = 0.13 against 50/hour: not significant.  A flood still breaches at once."""
    guard = LogRate(pattern="do_churn", max_per_hour=50)
    signals = WorkerSignals("w")
    signals.add(_event(T0_MS, logs=("DO Instance Churn: object reset",)))
    first = guard.evaluate(signals, None, T0_MS, since_ms=T0_MS - 1)
    assert first.value is not None and first.value > 1e6  # the line counted: a huge rate over 1 ms
    assert first.state != "breach"
    for i in range(1, 6):
        signals.add(_event(T0_MS + i * 100, logs=("DO Instance Churn: object reset",)))
    verdict = guard.evaluate(signals, None, T0_MS + 500, since_ms=T0_MS - 1)
    assert verdict.state == "breach"
    assert "null over 10 s" in verdict.detail


def test_replay_judges_the_same_whatever_the_judging_interval_says_about_counts() -> None:
    """A shorter interval judges more often, and never later: the breach index can only come earlier."""
    data = pretty(bad_release_items())
    slow = replay_bytes([data], [ErrorRate(above_baseline_by=0.05)], baseline_ms=30_000, eval_interval_ms=1000)
    fast = replay_bytes([data], [ErrorRate(above_baseline_by=0.05)], baseline_ms=30_000, eval_interval_ms=20)
    assert fast.evaluations > slow.evaluations
    assert fast.breaches[0].event_index <= slow.breaches[0].event_index
