"""`rollout prometheus-rules` and `rollout grafana` against a real Prometheus (and promtool)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import httpx
import pytest
from rich.console import Console

from rollout.dashboards import PANELS, grafana_dashboard, prometheus_rules
from rollout.guards import ErrorRate, LogRate
from rollout.sim import Simulator
from rollout.watch import WatchOptions, run_watch
from rollout.wrangler import terminate

from .helpers import deploy_new_version, free_port
from .test_prometheus import PROMETHEUS, query, ready, wait_for

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(not Path(PROMTOOL).exists() or not Path(PROMETHEUS).exists(),
                                reason="prometheus/promtool absent (Debian package `prometheus`; scripts/test "
                                       "installs it as root)")

GUARDS = [LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback"),
          ErrorRate(above_baseline_by=0.05, window_s=60, action="rollback")]


def test_promtool_accepts_the_rules_of_the_example_plan(tmp_path: Path) -> None:
    """The CLI writes the rules; promtool checks them (JSON is YAML); one rule per guard plus four."""
    out = tmp_path / "rules.yml"
    done = subprocess.run([sys.executable, "-m", "rollout.cli", "prometheus-rules", "examples/cf_ssai/plan.py",
                           "-o", str(out)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stdout + done.stderr
    checked = subprocess.run([PROMTOOL, "check", "rules", str(out)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    names = [r["alert"] for r in json.loads(out.read_text())["groups"][0]["rules"]]
    assert names[:3] == ["RolloutGuardBreachErrorRate", "RolloutGuardBreachDoChurnPerHour",
                         "RolloutGuardBreachDoYoungPerHour"]


def test_the_dashboard_has_one_panel_per_expression() -> None:
    dashboard = grafana_dashboard()
    assert [p["targets"][0]["expr"] for p in dashboard["panels"]] == [p.expr for p in PANELS]
    assert len({p["id"] for p in dashboard["panels"]}) == len(PANELS)


@pytest.mark.wrangler
async def test_every_panel_evaluates_and_a_rule_fires_while_prometheus_scrapes_a_watch(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch of a churn storm: every dashboard expression evaluates (with data where the watch has it)
    and the generated churn rule fires for the failing worker only."""
    metrics_port, prom_port = free_port(), free_port()
    rules = workdir / "rules.yml"
    rules.write_text(json.dumps(prometheus_rules(GUARDS)))
    config = workdir / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        rule_files: ["{rules}"]
        scrape_configs:
          - job_name: rollout
            static_configs:
              - targets: ["127.0.0.1:{metrics_port}"]
    """))
    argv = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"]
    async with Simulator(scenario="churn-storm", traffic_rate=20) as sim, anyio.create_task_group() as tg:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        monkeypatch.setenv("ROLLOUT_EDGE_URL", sim.edge_url)
        options = WatchOptions(
            workers=["cf-ssai", "cf-ssai-decision"], duration_s=60, api_base=sim.api_base_url,
            metrics_port=metrics_port, baseline_s=5, tty=False, guards=GUARDS,
            console=Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None),
            journal_path=workdir / ".rollout" / "journal.sqlite")

        async def watch() -> None:
            await run_watch(options)

        tg.start_soon(watch)
        prometheus = await anyio.open_process(argv, stdout=None, stderr=(workdir / "prom.log").open("wb"))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prom_port}", trust_env=False) as client:
                await ready(client, 20)
                await wait_for(client, 'rollout_guard_state{worker="cf-ssai",guard="do_churn_per_hour",state="ok"}',
                               lambda v: v == 1, 30)
                deploy_new_version(sim, "cf-ssai")
                await wait_for(client, 'rollout_guard_state{worker="cf-ssai",guard="do_churn_per_hour",'
                                       'state="breach"}', lambda v: v == 1, 20)
                with anyio.fail_after(20):
                    while True:
                        body = (await client.get("/api/v1/alerts")).json()
                        firing = [a for a in body["data"]["alerts"] if a["state"] == "firing"]
                        if any(a["labels"]["alertname"] == "RolloutGuardBreachDoChurnPerHour" for a in firing):
                            break
                        await anyio.sleep(0.5)
                empty = []
                for panel in PANELS:
                    result = await query(client, panel.expr)  # raises unless Prometheus evaluated it
                    if not result:
                        empty.append(panel.title)
        finally:
            with anyio.CancelScope(shield=True):
                await terminate(prometheus)
        tg.cancel_scope.cancel()
    churn = [a for a in firing if a["labels"]["alertname"] == "RolloutGuardBreachDoChurnPerHour"]
    assert {a["labels"]["worker"] for a in churn} == {"cf-ssai"}
    assert churn[0]["labels"]["severity"] == "critical"
    # series a healthy watch has not produced yet (no rollback ran, no sampling notice): nothing else
    assert set(empty) <= {"Rollbacks (24h)", "Tail sampled share"}, empty
