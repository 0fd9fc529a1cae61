"""The engine end to end: real wrangler against the in-process simulator."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from rollout.engine import EngineOptions
from rollout.runner import RunOptions, run_plan

from .conftest import write_plan

pytestmark = pytest.mark.wrangler


def options(workdir: Path, plan: Path, scenario: str, **engine: float) -> RunOptions:
    console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
    return RunOptions(plan_path=plan, sim=True, scenario=scenario, yes=True, report_dir=workdir / "reports",
                      journal_path=workdir / ".rollout" / "journal.sqlite", tty=False, console=console,
                      engine=EngineOptions(**engine) if engine else None)


async def test_bad_release_rolls_back_and_verifies(workdir: Path) -> None:
    """An error burst on the new version breaches the error guard; the rollback is verified; exit 1."""
    plan = write_plan(workdir, 'Deploy(manifest), Smoke(manifest, [Status("/health")]), Watch("40s")')
    outcome = await run_plan(options(workdir, plan, "bad-release"))
    assert outcome.result.exit_code == 1
    report = json.loads((workdir / "reports" / "report.json").read_text())
    assert report["outcome"] == "rolled_back"
    (breach,) = [b for b in report["breaches"] if b["action"] == "rollback"]
    assert breach["guard"] == "error_rate"
    assert breach["worker"] == "cf-ssai"
    assert breach["samples"] >= 30
    assert breach["value"] > breach["threshold"]
    (rollback,) = report["rollbacks"]
    assert rollback["verified"] is True
    assert rollback["to_version"] == report["changes"][0]["before"]
    assert [p["status"] for p in report["phases"]] == ["succeeded", "succeeded", "cancelled"]
    assert outcome.fault_to_verified_s is not None
    assert 0 < outcome.fault_to_verified_s < 30
    markdown = (workdir / "reports" / "report.md").read_text()
    assert "Root Cause" in markdown
    assert "error_rate" in markdown


async def test_healthy_release_completes(workdir: Path) -> None:
    """With healthy versions every phase succeeds and the new version stays; exit 0."""
    plan = write_plan(workdir, 'Deploy(manifest), Watch("6s"), Deploy(decision), Watch("3s")')
    outcome = await run_plan(options(workdir, plan, "healthy"))
    assert outcome.result.exit_code == 0, outcome.result.detail
    report = outcome.report
    assert report["outcome"] == "succeeded"
    assert [c["worker"] for c in report["changes"]] == ["cf-ssai", "cf-ssai-decision"]  # type: ignore[index]
    assert report["rollbacks"] == []


async def test_rollback_retries_transient_failures(workdir: Path) -> None:
    """flaky-api: the first two rollbacks fail with 5xx, the third works and is verified."""
    plan = write_plan(workdir, 'Deploy(manifest), Watch("40s")')
    outcome = await run_plan(options(workdir, plan, "flaky-api", rollback_backoff_s=0.2))
    assert outcome.result.exit_code == 1, outcome.result.detail
    (rollback,) = outcome.report["rollbacks"]  # type: ignore[misc]
    assert rollback["attempts"] == 3
    assert rollback["verified"] is True


async def test_unverified_rollback_exits_3(workdir: Path) -> None:
    """When every rollback attempt fails, the run says so loudly and exits 3."""
    scenario = workdir / "broken-rollback.toml"
    scenario.write_text(textwrap.dedent('''
        name = "broken-rollback"
        base = "bad-release"
        [[faults.api]]
        call = "rollback"
        times = 50
        status = 503
        code = 10013
        message = "Service temporarily unavailable"
    '''))
    plan = write_plan(workdir, 'Deploy(manifest), Watch("40s")')
    outcome = await run_plan(options(workdir, plan, str(scenario), rollback_backoff_s=0.1, rollback_attempts=3))
    assert outcome.result.exit_code == 3
    assert outcome.result.outcome == "rollback_failed"
    (rollback,) = outcome.report["rollbacks"]  # type: ignore[misc]
    assert rollback["verified"] is False
    assert rollback["attempts"] == 3


async def test_failed_smoke_rolls_back(workdir: Path) -> None:
    """A failing probe after a deploy rolls the deploy back (the runbook: any failure → roll back)."""
    plan = write_plan(workdir, 'Deploy(manifest), Smoke(manifest, [Status("/no-such-page")], attempts=1)')
    outcome = await run_plan(options(workdir, plan, "healthy"))
    assert outcome.result.exit_code == 1
    assert outcome.report["rollbacks"][0]["verified"] is True  # type: ignore[index]
    probes = outcome.report["probes"]
    assert probes[0]["ok"] is False  # type: ignore[index]
    assert "HTTP" in probes[0]["saw"]  # type: ignore[index]
