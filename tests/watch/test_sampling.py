"""Cloudflare samples a busy tail: watch says so, exports it, and still counts what it sees (simulator, tail
WebSocket read directly)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
from rich.console import Console

from rollout.guards import LogRate
from rollout.journal import Journal
from rollout.metrics import Metrics
from rollout.monitor import Source
from rollout.sim import Simulator, load_scenario
from rollout.target import Target
from rollout.watch import Watcher, WatchOptions
from rollout.wstail import WebSocketTailSource


async def test_a_sampled_spell_is_reported_and_exported(workdir: Path) -> None:
    """The simulator samples the tail (overload ... overload-stop, 1 event in 5 kept) from 2 s for 3 s: the
    summary gives the sampled time and says its counts are lower bounds; Prometheus has the sampled share."""
    scenario = load_scenario("healthy")
    scenario = replace(scenario, tail=replace(scenario.tail, sampling_after=2.0, sampling_for=3.0,
                                              sampling_keep=0.2))
    metrics = Metrics()
    async with Simulator(scenario, traffic_rate=50) as sim, Journal(workdir / "j.sqlite") as journal:

        def factory(worker: str) -> Source:
            return WebSocketTailSource(worker=worker, env=sim.env(), clock=sim.clock.now)

        options = WatchOptions(workers=["cf-ssai"], duration_s=8, baseline_s=0, tick_s=0.05, tty=False,
                               journal_path=journal.path,
                               console=Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None))
        watcher = Watcher(options, Target.simulator(sim.env()), journal=journal, clock=sim.clock,
                          guards=[LogRate(pattern="do_churn", max_per_hour=50, action="rollback")],
                          source_factory=factory, metrics=metrics)
        with anyio.fail_after(30):
            result = await watcher.run()
        withheld = sim.tail_stats().withheld
    (summary,) = result.workers
    assert 2.0 <= summary.sampled_s <= 4.0, summary
    assert summary.requests > 0 and withheld > 50  # ~120 of the ~150 requests while sampled were not sent
    assert any("tail sampled for" in line and "lower bounds" in line for line in result.lines())
    ratio = metrics.registry.get_sample_value("rollout_tail_sampled_ratio", {"worker": "cf-ssai"})
    assert ratio is not None and 0.2 < ratio < 0.6
