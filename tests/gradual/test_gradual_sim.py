"""Gradual rollouts against the simulator with real wrangler: canary judged against stable, by version."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from rollout.engine import EngineOptions
from rollout.runner import RunOptions, run_plan

MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "cf_ssai" / "workers" / "manifest" / "wrangler.toml"

pytestmark = pytest.mark.wrangler

SCENARIO = """
name = "{name}"
base = "healthy"
[traffic]
rate = 300.0
[workers.cf-ssai.behaviour]
latency_ms = 5
[workers.cf-ssai.versions.1]
error_rate = {old}
error_status = 500
[workers.cf-ssai.versions.2]
error_rate = {new}
error_status = 500
"""

PLAN = """
from phases import Gradual
from probes import Status
from rollout import Plan, Worker
from rollout.guards import ErrorRate

manifest = Worker("cf-ssai", config={config!r})
plan = Plan(
    name="gradual test",
    workers=[manifest],
    baseline="1s",
    recovery="2s",
    guards=[ErrorRate(above_baseline_by=0.05, action="rollback")],
    phases=[Gradual(manifest, steps=[10, 50, 100], bake="10s", max_bake="150s", final_bake="2s",
                    smoke=[Status("/health")])],
)
"""


def run_options(tmp_path: Path, old: float, new: float) -> RunOptions:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(textwrap.dedent(SCENARIO.format(name="gradual", old=old, new=new)))
    plan = tmp_path / "plan.py"
    plan.write_text(textwrap.dedent(PLAN.format(config=str(MANIFEST))))
    console = Console(file=(tmp_path / "out.txt").open("w"), width=200, color_system=None)
    return RunOptions(plan_path=plan, sim=True, scenario=str(scenario), yes=False, report_dir=tmp_path / "reports",
                      journal_path=tmp_path / ".rollout" / "journal.sqlite", tty=False, console=console,
                      engine=EngineOptions(rollback_backoff_s=0.2))


async def test_bad_canary_stops_at_10_percent(tmp_path: Path) -> None:
    """New version errs 3% against 0.5%: rolled back at the 10% step, before promoting, with the comparison."""
    outcome = await run_plan(run_options(tmp_path, old=0.005, new=0.03))
    assert outcome.result.exit_code == 1, outcome.result.detail
    report = outcome.report
    (breach,) = [b for b in report["breaches"] if b["guard"] == "canary_vs_stable"]  # type: ignore[union-attr]
    assert "new" in breach["detail"] and "old" in breach["detail"]
    assert breach["value"] > breach["baseline"]
    out = (tmp_path / "out.txt").read_text()
    assert "at 10%" in out
    assert "at 50%" not in out
    assert report["rollbacks"][0]["verified"] is True  # type: ignore[index]


async def test_equal_canary_promotes(tmp_path: Path) -> None:
    """Both versions err 2%: the canary passes every step and ends at 100%."""
    outcome = await run_plan(run_options(tmp_path, old=0.02, new=0.02))
    out = (tmp_path / "out.txt").read_text()
    assert outcome.result.exit_code == 0, outcome.result.detail + out[-2000:]
    assert "at 100%" in out
    assert "step 10%: pass" in out


async def test_each_step_expects_its_share_of_the_durable_object_wave(tmp_path: Path) -> None:
    """do-reset restarts the Durable Objects of the share each step moves (4, then 16, then 20 of 40): a churn
    guard with wave=40 expects each step's part and the rollout promotes; the same guard without the
    allowance takes the steps' restarts for a crash loop and rolls back before 100%."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('name = "gradual-do"\nbase = "do-reset"\n[traffic]\nrate = 300.0\n'
                        "[workers.cf-ssai.behaviour]\nlatency_ms = 5\n")
    churn = 'LogRate(pattern="do_churn", max_per_hour=50, {wave}action="rollback")'
    for wave, exit_code in (("wave=40, wave_s=60, ", 0), ("", 1)):
        run = tmp_path / ("with" if wave else "without")
        run.mkdir()
        plan = run / "plan.py"
        plan.write_text(textwrap.dedent(PLAN.format(config=str(MANIFEST))).replace(
            'guards=[ErrorRate(above_baseline_by=0.05, action="rollback")]',
            f'guards=[ErrorRate(above_baseline_by=0.05, action="rollback"), {churn.format(wave=wave)}]').replace(
            "from rollout.guards import ErrorRate", "from rollout.guards import ErrorRate, LogRate"))
        console = Console(file=(run / "out.txt").open("w"), width=200, color_system=None)
        outcome = await run_plan(RunOptions(
            plan_path=plan, sim=True, scenario=str(scenario), yes=False, report_dir=run / "reports",
            journal_path=run / ".rollout" / "journal.sqlite", tty=False, console=console,
            engine=EngineOptions(rollback_backoff_s=0.2)))
        out = (run / "out.txt").read_text()
        assert outcome.result.exit_code == exit_code, outcome.result.detail + out[-2000:]
        if exit_code == 0:
            assert "at 100%" in out
        else:
            (breach,) = [b for b in outcome.report["breaches"]  # type: ignore[union-attr]
                         if b["action"] == "rollback"]
            assert breach["guard"] == "do_churn_per_hour"
            assert "at 100%" not in out  # rolled back mid-way (at 10% or 50%: when 4 restarts are in)
