"""The words of a breach say what rollout does, and the view and the webhook say the same.

A watch without --rollback-on-breach only alerts: its plain-view line and its webhook both say "alert — not
rolled back" (never "(rollback)"); with --rollback-on-breach both say "rolling back"; a rollout's breach
(the engine leaves ``will_roll_back`` unset) says "rolling back".
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from rollout.alerts import AlertSink, AlertTracker
from rollout.bus import Breach, EventBus
from rollout.clock import ManualClock
from rollout.guards import LogRate
from rollout.journal import Journal
from rollout.monitor import Source
from rollout.runner import journal_writer
from rollout.sources import ChunkSource
from rollout.target import Target
from rollout.view import NOT_ROLLED_BACK, PlainView, ViewModel, describe
from rollout.watch import Watcher, WatchOptions, WatchResult

from .helpers import Receiver

T0 = 1_795_353_600.0


def item(t: float, logs: int = 0) -> bytes:
    ms = int(t * 1000)
    data: dict[str, Any] = {
        "outcome": "ok", "scriptName": "w", "scriptVersion": {"id": "v1"}, "eventTimestamp": ms,
        "event": {"request": {"url": "https://w.example/", "method": "GET"}, "response": {"status": 200}},
        "logs": [{"message": [f"⚠️  DO Instance Churn: id={i}"], "level": "warn", "timestamp": ms}
                 for i in range(logs)],
        "exceptions": [],
    }
    return json.dumps(data).encode() + b"\n"


async def _watch(workdir: Path, *, rollback_on_breach: bool) -> tuple[WatchResult, list[str], list[dict[str, Any]]]:
    """A churn storm under a rollback guard: the watch's result, its plain-view lines, the webhook bodies."""
    clock = ManualClock(T0)
    sources: dict[str, ChunkSource] = {}

    def factory(worker: str) -> Source:
        sources[worker] = ChunkSource()
        return sources[worker]

    receiver = Receiver()
    screen = io.StringIO()
    view = PlainView(Console(file=screen, width=400, color_system=None))
    bus = EventBus()
    view_stream = bus.subscribe("view")
    results: list[WatchResult] = []
    async with Journal(workdir / "journal.sqlite") as journal, anyio.create_task_group() as tg:
        await tg.start(receiver.serve)
        options = WatchOptions(workers=["w"], duration_s=400, webhook=receiver.url, baseline_s=0, tick_s=0.005,
                               stats_interval_s=0.01, journal_path=workdir / "journal.sqlite", tty=False,
                               rollback_on_breach=rollback_on_breach, rollback_attempts=1)
        watcher = Watcher(options, Target(name="test"), guards=[
            LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback")],
            journal=journal, bus=bus, clock=clock, source_factory=factory,
            alerts=AlertSink(receiver.url, attempts=3, backoff_s=0.01))
        done = anyio.Event()

        async def run() -> None:
            try:
                results.append(await watcher.run())
            finally:
                bus.close()
                done.set()

        tg.start_soon(view.run, view_stream)
        tg.start_soon(journal_writer, journal, watcher.watch_id, bus.subscribe("journal", buffer=100_000))
        tg.start_soon(run)
        with anyio.fail_after(30):
            while True:  # polled: the watcher makes its source when it starts
                if "w" in sources:
                    break
                await anyio.sleep(0.01)
            for second in range(380):
                clock.advance(1)
                await sources["w"].send.send(item(clock.now(), logs=5 if 100 <= second < 160 else 0))
                await anyio.sleep(0.002)
            clock.advance(30)
            await done.wait()
        tg.cancel_scope.cancel()
    (result,) = results
    return result, screen.getvalue().splitlines(), receiver.bodies


async def test_an_alert_only_breach_says_alert_not_rolled_back_on_screen_and_in_the_webhook(workdir: Path) -> None:
    result, lines, bodies = await _watch(workdir, rollback_on_breach=False)
    assert result.exit_code == 6, result.detail
    assert result.rollbacks == ()
    (line,) = [line for line in lines if " BREACH " in line]
    assert f"BREACH do_churn_per_hour on w ({NOT_ROLLED_BACK}): " in line, line
    assert "(rollback)" not in line and "rolling back" not in line
    (body,) = [b for b in bodies if b["kind"] == "breach"]
    assert f"do_churn_per_hour breached on w ({NOT_ROLLED_BACK} (watch runs without --rollback-on-breach)): " \
           in body["text"], body["text"]
    assert "(rollback)" not in body["text"] and "rolling back" not in body["text"]
    assert body["fields"]["doing"].startswith(NOT_ROLLED_BACK)
    assert "wrangler" in body["fields"]["hint"]  # how to roll back by hand
    assert body["action"] == "rollback"  # the guard's action stays in the payload
    async with Journal(workdir / "journal.sqlite") as journal:  # the journal keeps what the view said
        (breach,) = await journal.events(result.watch_id, kinds=("Breach",))
    assert breach["will_roll_back"] is False


async def test_a_breach_that_rolls_back_says_rolling_back_on_screen_and_in_the_webhook(workdir: Path) -> None:
    result, lines, bodies = await _watch(workdir, rollback_on_breach=True)
    async with Journal(workdir / "journal.sqlite") as journal:
        (breach,) = await journal.events(result.watch_id, kinds=("Breach",))
    assert breach["will_roll_back"] is True
    assert len(result.rollbacks) == 1  # attempted (no wrangler here: unverified, exit 3)
    (line,) = [line for line in lines if " BREACH " in line]
    assert "BREACH do_churn_per_hour on w (rolling back): " in line, line
    (body,) = [b for b in bodies if b["kind"] == "breach"]
    assert "do_churn_per_hour breached on w (rolling back): " in body["text"], body["text"]
    assert NOT_ROLLED_BACK not in line and NOT_ROLLED_BACK not in body["text"]


@pytest.mark.parametrize(("action", "will_roll_back", "words"), [
    ("rollback", None, "rolling back"),  # a rollout's breach: the engine rolls back
    ("rollback", True, "rolling back"),
    ("rollback", False, NOT_ROLLED_BACK),
    ("alert", None, "alert"),
    ("warn", None, "warn"),
])
def test_view_line_live_view_and_webhook_use_the_same_words(action: str, will_roll_back: bool | None,
                                                            words: str) -> None:
    breach = Breach(guard="error_rate", worker="cf-ssai", action=action, value=0.2, baseline=0.0, threshold=0.05,
                    samples=100, window_s=60.0, detail="error rate 20.0%", will_roll_back=will_roll_back)
    assert f"BREACH error_rate on cf-ssai ({words}): error rate 20.0%" in describe(breach)
    model = ViewModel()
    model.apply(breach)
    assert f"last breach: error_rate on cf-ssai ({words}): " in model._breach_text().plain
    alert = AlertTracker(lambda: 0.0).from_event(breach)
    assert alert is not None and f"error_rate breached on cf-ssai ({words}): " in alert.text
