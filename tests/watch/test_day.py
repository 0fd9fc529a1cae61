"""A simulated day in accelerated time: the churn guard fires in the storm hour and recovers, hourly tail
drops all reconnect, and memory stays flat."""

from __future__ import annotations

import textwrap
from pathlib import Path

import anyio
import psutil  # type: ignore[import-untyped]
import pytest
from rich.console import Console

from rollout.bus import Breach, EventBus, GuardState
from rollout.guards import ErrorRate, Guard, LogRate
from rollout.journal import Journal
from rollout.metrics import Metrics
from rollout.monitor import Source
from rollout.sim import Simulator
from rollout.target import Target
from rollout.watch import Watcher, WatchOptions, WatchResult
from rollout.wstail import WebSocketTailSource

from .helpers import deploy_new_version, deploy_version

HOUR = 3600.0
SPEED = 3600.0  # one simulated hour per real second
STORM_HOUR = 5

SCENARIO = """
    name = "day"
    base = "healthy"
    [traffic]
    rate = 0.3
    [workers.cf-ssai.versions.2]   # the storm: DO churn 1200/h (the runbook's alert line is 50/h)
    onset_after = 3
    fault = true
    [[workers.cf-ssai.versions.2.fault_logs]]
    message = "⚠️  DO Instance Churn: id={id}, name={colo}:demo:{channel}, lifetime=3s"
    level = "warn"
    per_hour = 1200
    [faults.tail]
    drop_every = 3600.0        # every tail socket closes (1011) once a simulated hour
    expire_after = 7200.0
"""


@pytest.mark.slow
async def test_simulated_day(workdir: Path) -> None:
    """24 simulated hours in ~30 s: storm hour breaches then recovers, 23+ reconnects, RSS flat."""
    scenario = workdir / "day.toml"
    scenario.write_text(textwrap.dedent(SCENARIO))
    process = psutil.Process()
    rss: dict[str, int] = {}
    results: list[WatchResult] = []
    bus = EventBus()
    console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
    async with Simulator(scenario=str(scenario), speed=SPEED) as sim, Journal(workdir / "j.sqlite") as journal:
        clock = sim.clock

        def factory(worker: str) -> Source:
            return WebSocketTailSource(worker=worker, env=sim.env(), clock=clock.now, backoff_initial_s=0.005,
                                       backoff_max_s=0.05)

        options = WatchOptions(workers=["cf-ssai"], duration_s=24 * HOUR, baseline_s=0, blind_alert_s=600,
                               tick_s=0.02, stats_interval_s=0.1, hour_grace_s=600, journal_path=journal.path,
                               tty=False, console=console)
        guards: list[Guard] = [LogRate(pattern="do_churn", max_per_hour=50, window_s=600, action="rollback"),
                  ErrorRate(above_baseline_by=0.05, window_s=1800, action="rollback")]
        watcher = Watcher(options, Target.simulator(sim.env()), guards=guards, journal=journal, bus=bus,
                          clock=clock, source_factory=factory, metrics=Metrics())
        start = clock.now()
        old = sim.active_versions("cf-ssai")[0][0]

        done = anyio.Event()

        async def run() -> None:
            results.append(await watcher.run())
            done.set()

        async def at_hour(hour: float) -> None:
            while True:
                if clock.now() >= start + hour * HOUR:
                    break
                await anyio.sleep(0.01)

        async def sample_rss() -> None:
            for hour in range(1, 25):
                await at_hour(hour)
                rss[f"h{hour}"] = process.memory_info().rss

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                tg.start_soon(sample_rss)
                await at_hour(1)
                rss["hour1"] = process.memory_info().rss
                await at_hour(STORM_HOUR)
                storm_start = clock.now()
                deploy_new_version(sim, "cf-ssai")     # a bad deploy: DO churn ~4/s
                await at_hour(STORM_HOUR + 1)
                storm_end = clock.now()
                deploy_version(sim, "cf-ssai", old)    # someone rolls it back by hand an hour later
                await done.wait()
        rss["end"] = process.memory_info().rss
        connections = sim.tail_stats().connections
    (result,) = results
    (worker,) = result.workers
    churn_breaches = [b for b in result.breaches if b.guard == "do_churn_per_hour"]
    assert churn_breaches, "the churn guard never fired"
    for breach in churn_breaches:
        assert breach.event_time is not None
        assert storm_start <= breach.event_time <= storm_end + 600, "a churn breach outside the storm hour"
    states = [e for e in bus.history if isinstance(e, GuardState) and e.guard == "do_churn_per_hour"]
    last_breach = max(i for i, e in enumerate(states) if e.state == "breach")
    assert any(e.state == "ok" for e in states[last_breach:]), "the churn guard did not recover"
    assert not [b for b in result.breaches if b.guard == "error_rate"]
    assert result.exit_code == 6 and result.outcome == "breached"  # alert only: no --rollback-on-breach
    assert not any(isinstance(e, Breach) and e.guard == "error_rate" for e in bus.history)
    # every hourly drop reconnected
    # a tail lives an hour plus the reconnect gap, so a day holds 22-23 drops; each one reconnected
    expected_drops = int(24 * HOUR // (HOUR + worker.blind_s / max(1, worker.reconnects)))
    assert worker.reconnects >= expected_drops - 1 >= 21, worker
    assert connections == worker.reconnects + 1  # every session the simulator ended was opened again
    # blind time is simulated seconds: at 3600x a 50 ms reconnect is three simulated minutes
    assert worker.blind_s / SPEED < 0.25 * (worker.reconnects + 1), "a reconnect took more than 0.25 real s"
    # hourly summaries: the storm shows, the other hours are calm
    hours = [h for h in result.hours if not h.partial]
    assert len(result.hours) >= 24
    assert max(hours, key=lambda h: h.churn).breaches >= 1 or sum(h.breaches for h in result.hours) >= 1
    storm_hours = [h for h in result.hours if h.churn > 50]
    assert 1 <= len(storm_hours) <= 2
    assert sum(h.requests for h in result.hours) == worker.requests
    rows = await _hours(journal.path, start)
    assert len(rows) == len(result.hours)
    print("RSS by simulated hour (MB):", {k: round(v / 2**20, 1) for k, v in rss.items()})
    assert abs(rss["end"] - rss["h12"]) / 2**20 < 2  # flat over the second half of the day
    growth_mb = (rss["end"] - rss["hour1"]) / 2**20
    print(f"RSS hour 1 {rss['hour1'] / 2**20:.1f} MB, end {rss['end'] / 2**20:.1f} MB, growth {growth_mb:.2f} MB; "
          f"requests {worker.requests}, reconnects {worker.reconnects}, blind {worker.blind_s:.0f} s")
    assert growth_mb < 5


async def _hours(path: Path, since: float) -> list[dict[str, object]]:
    async with Journal(path) as journal:
        return await journal.hours(since - HOUR)
