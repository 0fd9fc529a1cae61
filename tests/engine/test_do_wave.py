"""The Durable-Object reset wave end to end: real wrangler deploys to the simulator, whose `do-reset` scenario
restarts cf-ssai's 40 Durable Objects over 20 s after every traffic move."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from rollout.runner import RunOptions, run_plan

from .conftest import write_plan

pytestmark = pytest.mark.wrangler

_ERRORS = 'ErrorRate(above_baseline_by=0.05, action="rollback")'


def _options(workdir: Path, plan: Path, scenario: str) -> RunOptions:
    console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
    return RunOptions(plan_path=plan, sim=True, scenario=scenario, yes=True, tty=False, console=console,
                      report_dir=workdir / "reports", journal_path=workdir / ".rollout" / "journal.sqlite",
                      record_dir=workdir / "tails")


def _wave_lines(workdir: Path) -> int:
    return (workdir / "tails" / "cf-ssai.tail.json").read_text().count("reason=version change")


async def test_a_churn_guard_with_a_wave_allowance_lets_the_deploy_wave_pass(workdir: Path) -> None:
    """The deploy's wave of ~40 churn lines in 20 s is expected (wave=40): the rollout completes."""
    guards = f'{_ERRORS}, LogRate(pattern="do_churn", max_per_hour=50, wave=40, wave_s=60, action="rollback")'
    plan = write_plan(workdir, 'Deploy(manifest), Watch("30s")', guards=guards)
    outcome = await run_plan(_options(workdir, plan, "do-reset"))
    assert outcome.result.exit_code == 0, outcome.result.detail
    assert _wave_lines(workdir) >= 30  # the wave was there, and seen
    assert json.loads((workdir / "reports" / "report.json").read_text())["breaches"] == []


async def test_without_the_allowance_the_same_wave_rolls_back(workdir: Path) -> None:
    """The same deploy under a churn guard that expects no wave is a false rollback: why `wave` exists."""
    guards = f'{_ERRORS}, LogRate(pattern="do_churn", max_per_hour=50, action="rollback")'
    plan = write_plan(workdir, 'Deploy(manifest), Watch("30s")', guards=guards)
    outcome = await run_plan(_options(workdir, plan, "do-reset"))
    assert outcome.result.exit_code == 1
    (breach,) = [b for b in outcome.report["breaches"] if b["action"] == "rollback"]  # type: ignore[union-attr]
    assert breach["guard"] == "do_churn_per_hour"
    assert "DO wave allowance" not in breach["detail"]


async def test_churn_that_outlasts_the_wave_is_a_crash_loop(workdir: Path) -> None:
    """Version 2 keeps churning (3/s) after its deploy wave is over: the allowance does not hide it."""
    scenario = workdir / "crash-loop.toml"
    scenario.write_text('''
name = "crash-loop"
base = "do-reset"

[workers.cf-ssai.versions.2]
onset_after = 20
fault = true

[[workers.cf-ssai.versions.2.fault_logs]]
message = "⚠️  DO Instance Churn: id={id}, name={colo}:demo:{channel}, lifetime=1s"
level = "warn"
per_hour = 10800
''')
    guards = f'{_ERRORS}, LogRate(pattern="do_churn", max_per_hour=50, wave=40, wave_s=60, action="rollback")'
    plan = write_plan(workdir, 'Deploy(manifest), Watch("60s")', guards=guards)
    outcome = await run_plan(_options(workdir, plan, str(scenario)))
    assert outcome.result.exit_code == 1
    (breach,) = [b for b in outcome.report["breaches"] if b["action"] == "rollback"]  # type: ignore[union-attr]
    assert breach["guard"] == "do_churn_per_hour"
    assert "DO wave allowance 40" in breach["detail"]
