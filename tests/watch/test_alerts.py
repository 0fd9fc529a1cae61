"""Webhook alerts: breach, recovery and rollback reach a receiver; a dead receiver never stops monitoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from rollout.alerts import AlertSink
from rollout.clock import ManualClock
from rollout.guards import LogRate
from rollout.journal import Journal
from rollout.metrics import Metrics
from rollout.monitor import Source
from rollout.sim import Simulator
from rollout.sources import ChunkSource
from rollout.target import Target
from rollout.watch import Watcher, WatchOptions, WatchResult, run_watch

from .helpers import Receiver, deploy_new_version, free_port

T0 = 1_795_353_600.0


def item(t: float, worker: str = "w", logs: int = 0) -> bytes:
    ms = int(t * 1000)
    data: dict[str, Any] = {
        "outcome": "ok", "scriptName": worker, "scriptVersion": {"id": "v1"}, "eventTimestamp": ms,
        "event": {"request": {"url": "https://w.example/", "method": "GET"}, "response": {"status": 200}},
        "logs": [{"message": [f"⚠️  DO Instance Churn: id={i}"], "level": "warn", "timestamp": ms}
                 for i in range(logs)],
        "exceptions": [],
    }
    return json.dumps(data).encode() + b"\n"


async def test_dead_webhook_counts_failures_and_monitoring_goes_on(workdir: Path) -> None:
    """With the receiver down, breach and recovery alerts fail (counted), and every request is still counted."""
    clock = ManualClock(T0)
    sources: dict[str, ChunkSource] = {}

    def factory(worker: str) -> Source:
        sources[worker] = ChunkSource()
        return sources[worker]

    url = f"http://127.0.0.1:{free_port()}/hook"
    options = WatchOptions(workers=["w"], duration_s=400, webhook=url, baseline_s=0, tick_s=0.005,
                           stats_interval_s=0.01, journal_path=workdir / "journal.sqlite", tty=False)
    guards = [LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback")]
    metrics = Metrics()
    alerts = AlertSink(url, attempts=3, backoff_s=0.01, on_result=metrics.count_alert)
    results: list[WatchResult] = []
    async with Journal(options.journal_path) as journal:
        watcher = Watcher(options, Target(name="test"), guards=guards, journal=journal, clock=clock,
                          source_factory=factory, metrics=metrics, alerts=alerts)

        async def run() -> None:
            results.append(await watcher.run())

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                while True:
                    if "w" in sources:
                        break
                    await anyio.sleep(0.01)
                for second in range(380):
                    clock.advance(1)
                    churn = 5 if 100 <= second < 160 else 0
                    await sources["w"].send.send(item(clock.now(), logs=churn))
                    await anyio.sleep(0.002)
                clock.advance(30)
    (result,) = results
    assert result.exit_code == 6  # a rollback guard breached; without --rollback-on-breach: alert only
    assert result.outcome == "breached"
    assert result.rollbacks == ()
    (summary,) = result.workers
    assert summary.requests == 380  # exact: nothing lost while alerts failed
    assert summary.churn == 60 * 5
    assert result.alerts.failed >= 2  # breach and recovery
    assert result.alerts.sent == 0
    assert metrics.registry.get_sample_value("rollout_alerts_total", {"kind": "breach", "result": "failed"}) == 1
    assert metrics.registry.get_sample_value("rollout_alerts_total", {"kind": "recovery", "result": "failed"}) == 1
    assert metrics.registry.get_sample_value("rollout_requests_total", {"worker": "w"}) == 380
    assert metrics.registry.get_sample_value("rollout_breaches_total",
                                             {"worker": "w", "guard": "do_churn_per_hour", "action": "rollback"}) == 1
    assert any("alerts: 0 sent" in line for line in result.lines())


@pytest.mark.wrangler
async def test_webhook_gets_breach_rollback_and_recovery(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A churn storm breaches; watch rolls back with real wrangler, verifies, recovers; the receiver sees all three."""
    receiver = Receiver()
    results: list[WatchResult] = []
    async with Simulator(scenario="churn-storm", traffic_rate=20) as sim, anyio.create_task_group() as tg:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        monkeypatch.setenv("ROLLOUT_EDGE_URL", sim.edge_url)
        before = sim.active_versions("cf-ssai")[0][0]
        await tg.start(receiver.serve)
        options = WatchOptions(
            workers=["cf-ssai"], duration_s=28, api_base=sim.api_base_url, webhook=receiver.url,
            rollback_on_breach=True, baseline_s=0, tty=False, rollback_backoff_s=0.2,
            guards=[LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback")],
            console=Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None),
            journal_path=workdir / ".rollout" / "journal.sqlite")

        done = anyio.Event()

        async def run() -> None:
            results.append(await run_watch(options))
            done.set()

        tg.start_soon(run)
        with anyio.fail_after(20):
            while True:
                if sim.tail_stats().open:
                    break
                await anyio.sleep(0.1)
        await anyio.sleep(2)
        deploy_new_version(sim, "cf-ssai")
        with anyio.fail_after(60):
            await done.wait()
        tg.cancel_scope.cancel()
    (result,) = results
    assert result.exit_code == 1, result.detail
    assert result.outcome == "rolled_back"
    (rollback,) = result.rollbacks
    assert rollback.verified
    assert rollback.to_version == before
    assert sim.active_versions("cf-ssai") == [(before, 100.0)]
    kinds = receiver.kinds()
    assert "breach" in kinds
    assert "rollback" in kinds
    assert "recovery" in kinds
    assert kinds.index("breach") < kinds.index("rollback") < kinds.index("recovery")
    assert all(isinstance(body.get("text"), str) and body["text"] for body in receiver.bodies)  # Slack-compatible
    assert result.alerts.failed == 0
