"""A real Prometheus server scrapes ``rollout watch`` against the simulator: the series exist and move."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from rich.console import Console

from rollout.guards import ErrorRate, LogRate
from rollout.metrics import METRIC_NAMES
from rollout.sim import Simulator
from rollout.watch import WatchOptions, WatchResult, run_watch
from rollout.wrangler import terminate

from .helpers import deploy_new_version, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

pytestmark = [
    pytest.mark.wrangler,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(),
                       reason="the prometheus binary is absent (Debian package `prometheus`; .ci/run installs it)"),
]


async def query(client: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/query", params={"query": expr})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def value(client: httpx.AsyncClient, expr: str) -> float | None:
    result = await query(client, expr)
    return float(result[0]["value"][1]) if result else None


async def ready(client: httpx.AsyncClient, within: float) -> None:
    """Wait until Prometheus answers ``/-/ready``."""
    with anyio.fail_after(within):
        while True:
            try:
                if (await client.get("/-/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.2)


async def wait_for(client: httpx.AsyncClient, expr: str, ok: Any, within: float) -> float:
    """Poll Prometheus until ``ok(value)``; returns the value."""
    with anyio.fail_after(within):
        while True:
            got = await value(client, expr)
            if got is not None and ok(got):
                return got
            await anyio.sleep(0.5)


async def test_prometheus_scrapes_watch(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests grow, a churn storm raises the churn rate, and the churn guard flips from ok to breach."""
    metrics_port, prom_port = free_port(), free_port()
    config = workdir / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: rollout
            static_configs:
              - targets: ["127.0.0.1:{metrics_port}"]
    """))
    argv = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"]
    results: list[WatchResult] = []
    async with Simulator(scenario="churn-storm", traffic_rate=20) as sim, anyio.create_task_group() as tg:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        monkeypatch.setenv("ROLLOUT_EDGE_URL", sim.edge_url)
        options = WatchOptions(
            workers=["cf-ssai", "cf-ssai-decision"], duration_s=40, api_base=sim.api_base_url,
            metrics_port=metrics_port, baseline_s=6, tty=False,
            guards=[LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback"),
                    ErrorRate(above_baseline_by=0.05, window_s=60, action="rollback")],
            console=Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None),
            journal_path=workdir / ".rollout" / "journal.sqlite")

        async def watch() -> None:
            results.append(await run_watch(options))

        tg.start_soon(watch)
        prometheus = await anyio.open_process(argv, stdout=None, stderr=(workdir / "prom.log").open("wb"))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prom_port}", trust_env=False) as client:
                await ready(client, 20)
                # the watch is up and healthy: requests grow, the churn guard is ok
                first = await wait_for(client, 'rollout_requests_total{worker="cf-ssai"}', lambda v: v > 0, 25)
                await wait_for(client, 'rollout_guard_state{worker="cf-ssai",guard="do_churn_per_hour",state="ok"}',
                               lambda v: v == 1, 15)
                await wait_for(client, 'rollout_requests_total{worker="cf-ssai"}', lambda v: v > first + 20, 10)
                calm = await value(client, 'rollout_log_pattern_per_hour{worker="cf-ssai",pattern="do_churn"}') or 0.0
                # a bad deploy: DO churn ~4/s
                deploy_new_version(sim, "cf-ssai")
                storm = await wait_for(client, 'rollout_log_pattern_per_hour{worker="cf-ssai",pattern="do_churn"}',
                                       lambda v: v > 1000, 15)
                await wait_for(client, 'rollout_guard_state{worker="cf-ssai",guard="do_churn_per_hour",state="breach"}',
                               lambda v: v == 1, 10)
                await wait_for(client, 'sum(rollout_breaches_total{worker="cf-ssai",guard="do_churn_per_hour"})',
                               lambda v: v >= 1, 5)
                await wait_for(client, 'rate(rollout_log_pattern_matches_total{worker="cf-ssai",pattern="do_churn"}'
                                       '[5s])', lambda v: v > 1, 10)
                assert await value(
                    client, 'rollout_guard_state{worker="cf-ssai-decision",guard="do_churn_per_hour",state="ok"}') == 1
                assert await value(client, 'rollout_tail_connected{worker="cf-ssai"}') == 1
                assert await value(client, 'rollout_guard_threshold{worker="cf-ssai",guard="do_churn_per_hour"}') == 50
                await wait_for(client, 'rollout_baseline_error_ratio{worker="cf-ssai"}', lambda v: v >= 0, 10)
                names = {r["metric"]["__name__"] for r in await query(client, '{__name__=~"rollout_.+"}')}
        finally:
            with anyio.CancelScope(shield=True):
                await terminate(prometheus)
        tg.cancel_scope.cancel()
    assert storm > calm + 1000
    expected = {"rollout_requests_total", "rollout_errors_total", "rollout_log_pattern_matches_total",
                "rollout_log_pattern_per_hour", "rollout_guard_state", "rollout_guard_threshold",
                "rollout_tail_connected", "rollout_tail_reconnects_total", "rollout_tail_blind_seconds_total",
                "rollout_tail_sampled_ratio", "rollout_error_ratio", "rollout_baseline_error_ratio"}
    assert expected <= names, expected - names
    own = {n for n in names if not n.endswith("_created")}  # prometheus-client's counter creation times
    assert own <= set(METRIC_NAMES), own - set(METRIC_NAMES)
