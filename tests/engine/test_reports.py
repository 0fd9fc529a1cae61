"""The reports read right: a breach filed under the deploy that caused it, a summary that says what happened,
the impact in failed requests, every guard's final state, the gates, the series, and the timeline picture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from rollout import timeline
from rollout.bus import (
    BaselineMeasured,
    Breach,
    EngineEvent,
    GateAnswered,
    GuardState,
    Message,
    MonitorState,
    PhaseFinished,
    PhaseStarted,
    ProbeChecked,
    RollbackAttempt,
    RollbackDone,
    RolloutFinished,
    RolloutStarted,
    WorkerChanged,
)
from rollout.events import TailEvent, parse_event
from rollout.report import (
    NEVER_JUDGED,
    SCHEMA_VERSION,
    GuardSpec,
    ReportInput,
    build_report,
    command_line,
    render_markdown,
    render_summary,
    write_reports,
)
from rollout.series import NO_VERSION, series_from_signals
from rollout.signals import WorkerSignals

T0 = 1_796_000_000.0  # the baseline starts here: t = 0 of the series
PHASES = ("deploy cf-ssai", "gate", "watch 3m")


def _events() -> list[EngineEvent]:
    """A deploy of v2 over v1 in "deploy cf-ssai", a gate, a breach during "watch 3m", a verified rollback."""
    threshold = {"threshold": 0.05, "baseline": 0.0, "samples": 80, "window_s": 60.0}
    return [
        RolloutStarted(at=T0 - 2, rollout_id="r-17", plan="cf-ssai release", target="simulator",
                       workers=("cf-ssai", "cf-ssai-decision"), phases=PHASES),
        MonitorState(at=T0 - 1, worker="cf-ssai", connected=True, reconnects=0, blind_s=0.0),
        BaselineMeasured(at=T0 + 8, worker="cf-ssai", requests=80, errors=0, seconds=8.0),
        PhaseStarted(at=T0 + 10, index=0, phase="deploy cf-ssai"),
        WorkerChanged(at=T0 + 12.4, worker="cf-ssai", before="v1", after="v2", phase="deploy cf-ssai",
                      command=("wrangler", "deploy")),
        ProbeChecked(at=T0 + 12.6, phase="deploy cf-ssai", worker="cf-ssai", probe="Status GET /health", ok=True,
                     saw="HTTP 200", seconds=0.1),
        PhaseFinished(at=T0 + 12.7, index=0, phase="deploy cf-ssai", status="succeeded", seconds=2.7),
        PhaseStarted(at=T0 + 12.8, index=1, phase="gate"),
        GateAnswered(at=T0 + 12.9, phase="gate", question="promote cf-ssai?", answer="yes", by="--yes"),
        PhaseFinished(at=T0 + 13.0, index=1, phase="gate", status="succeeded", seconds=0.2),
        PhaseStarted(at=T0 + 13.1, index=2, phase="watch 3m"),
        GuardState(at=T0 + 14, guard="error_rate", worker="cf-ssai", action="rollback", state="ok", value=0.0,
                   detail="error rate 0.0%", **threshold),
        MonitorState(at=T0 + 15, worker="cf-ssai", connected=False, reconnects=1, blind_s=0.0),
        MonitorState(at=T0 + 17.8, worker="cf-ssai", connected=True, reconnects=1, blind_s=2.8),  # a tick late
        GuardState(at=T0 + 20, guard="error_rate", worker="cf-ssai", action="rollback", state="breach", value=0.3,
                   detail="error rate 30.0% (24/80)", **threshold),
        Breach(at=T0 + 20, guard="error_rate", worker="cf-ssai", action="rollback", value=0.3,
               detail="error rate 30.0% (24/80)", **threshold),
        PhaseFinished(at=T0 + 20.05, index=2, phase="watch 3m", status="cancelled", seconds=0.0,
                      detail="cancelled: breach of error_rate on cf-ssai"),
        Message(at=T0 + 20.1, level="warn", text="rolling back 1 worker(s): error_rate error rate 30.0%"),
        RollbackAttempt(at=T0 + 22.0, worker="cf-ssai", from_version="v2", to_version="v1", attempt=1, ok=True,
                        detail="ok"),
        RollbackDone(at=T0 + 27, worker="cf-ssai", from_version="v2", to_version="v1", attempts=1, verified=True,
                     detail="v1 serves 100% (verified with deployments status)", recovered=True),
        RolloutFinished(at=T0 + 28, outcome="rolled_back", exit_code=1, detail="error_rate on cf-ssai"),
    ]


def _series() -> dict[str, list[list[float]]]:
    """v1 serves 10 requests a second but while v2 does (12 s to 22 s); v2 fails 3 a second from 14 s on; the
    tail is blind from 15 s to 17 s (no events): 6 s × 3 = 18 failed requests (of 80) between the deploy and
    the verified rollback."""
    def blind(t: int) -> bool:
        return 15 <= t < 17

    v1 = [[t, 0 if 12 <= t < 22 or blind(t) else 10, 0] for t in range(30)]
    v2 = [[t, 10 if 12 <= t < 22 and not blind(t) else 0, 3 if 14 <= t < 22 and not blind(t) else 0]
          for t in range(30)]
    return {"v1": v1, "v2": v2}


def _input(**extra: Any) -> ReportInput:
    fields: dict[str, Any] = {
        "rollout_id": "r-17", "plan": "cf-ssai release", "target": "simulator", "outcome": "rolled_back",
        "exit_code": 1, "detail": "error_rate on cf-ssai", "started": T0 - 2, "ended": T0 + 28,
        "events": _events(), "command": "rollout run plan.py --sim --scenario bad-release --yes",
        "plan_path": "plan.py", "scenario": "bad-release", "time_scale": 0.05, "git_commit": "abc123def456",
        "fault_to_verified_s": 8.0, "series": {"cf-ssai": _series()}, "series_start": T0,
        "guards": [GuardSpec("error_rate", "rollback", "ErrorRate"),
                   GuardSpec("do_churn_per_hour", "rollback", "LogRate")],
        "watched": ["cf-ssai", "cf-ssai-decision"],
    }
    fields.update(extra)
    return ReportInput(**fields)


def test_breach_is_filed_under_the_phase_that_changed_the_worker() -> None:
    report = build_report(_input())
    (breach,) = report["breaches"]
    assert breach["phase"] == "deploy cf-ssai"
    assert breach["during"] == "watch 3m"
    markdown = render_markdown(report)
    assert "- **Deployment Step**: deploy cf-ssai\n" in markdown
    assert "tripped during watch 3m" in markdown


def test_summary_says_rolled_back_and_does_not_offer_it_again() -> None:
    summary = render_summary(build_report(_input()))
    assert "rolled back (verified) to v1" in summary.splitlines()[0]
    assert "wrangler rollback v1" not in summary
    after = summary.split("Rollback Available:", 1)[1]
    assert "nothing live to roll back" in after
    assert "deploy again: `rollout run plan.py --sim --scenario bad-release --yes`" in summary


def test_summary_gives_the_exact_rollback_only_for_what_is_still_live() -> None:
    events = [e for e in _events() if not isinstance(e, RollbackDone | RollbackAttempt)]
    events.append(RollbackDone(at=T0 + 27, worker="cf-ssai", from_version="v2", to_version="v1", attempts=5,
                               verified=False, detail="NOT verified"))
    summary = render_summary(build_report(_input(events=events, outcome="rollback_failed", exit_code=3)))
    after = summary.split("Rollback Available:", 1)[1]
    assert "wrangler rollback v1 --name cf-ssai -y" in after
    assert "rolled back (NOT verified) to v1" in summary


def test_impact_counts_failed_requests_from_deploy_to_verified_rollback() -> None:
    report = build_report(_input())
    (impact,) = report["impact"]
    assert impact["failed_requests"] == 18
    assert impact["requests"] == 80
    assert impact["until"] == "verified rollback"
    assert impact["from_t"] == 12 and impact["to_t"] == 22
    assert impact["text"].startswith("≈ 18 failed requests over 10s")
    assert "≈ 18 failed requests over 10s" in render_summary(report)
    assert "≈ 18 failed requests over 10s" in render_markdown(report)


def test_every_guard_final_state_is_listed_including_never_judged() -> None:
    report = build_report(_input())
    states = {(g["guard"], g["worker"]): g["state"] for g in report["guards"]}
    assert states == {
        ("error_rate", "cf-ssai"): "breach", ("error_rate", "cf-ssai-decision"): NEVER_JUDGED,
        ("do_churn_per_hour", "cf-ssai"): NEVER_JUDGED, ("do_churn_per_hour", "cf-ssai-decision"): NEVER_JUDGED,
    }
    markdown = render_markdown(report)
    assert "| do_churn_per_hour | cf-ssai | rollback | never judged |" in markdown
    assert "| error_rate | cf-ssai | rollback | breach |" in markdown
    assert "do_churn_per_hour never judged on cf-ssai" in render_summary(report)


def test_gates_probes_and_run_facts_are_in_every_report() -> None:
    report = build_report(_input())
    assert report["gates"] == [{"phase": "gate", "question": "promote cf-ssai?", "answer": "yes", "by": "--yes",
                                "time": report["gates"][0]["time"]}]
    assert report["schema_version"] == SCHEMA_VERSION == 2
    assert report["command"].startswith("rollout run plan.py")
    assert report["git_commit"] == "abc123def456"
    assert report["scenario"] == "bad-release"
    assert report["time_scale"] == 0.05
    assert report["fault_to_verified_s"] == 8.0
    assert report["rollout_id"] == "r-17"
    assert report["started"].endswith("Z")
    markdown = render_markdown(report)
    for text in ("| gate | promote cf-ssai? | yes | --yes |", "Status GET /health", "abc123def456", "r-17",
                 "`rollout run plan.py --sim --scenario bad-release --yes`", "scenario bad-release",
                 "time scale 0.05", "Fault onset → rollback verified:** 8.0 s", report["started"]):
        assert text in markdown, text
    assert "promote cf-ssai?" in render_summary(report)


def test_series_and_timeline_marks_are_in_report_json() -> None:
    report = build_report(_input())
    series = report["series"]
    assert series["start"] == report["series"]["start"] and series["columns"] == ["t", "requests", "errors"]
    assert series["workers"]["cf-ssai"]["v2"][14] == [14, 10, 3]
    line = report["timelines"]["cf-ssai"]
    assert [m["kind"] for m in line["marks"]] == ["deploy", "breach", "rollback", "verified"]
    assert [m["t"] for m in line["marks"]] == [12, 20.0, 20.1, 22.0]
    assert line["blind"] == [[15.0, 17]]  # it saw requests again from 17 s on
    assert line["threshold_rate"] == 0.05 and line["baseline_rate"] == 0.0
    assert line["roles"] == {"v1": "old", "v2": "new"}


async def test_reports_write_the_timeline_svg_and_png(tmp_path: Path) -> None:
    report = build_report(_input())
    files = await write_reports(report, tmp_path)
    names = sorted(p.name for p in files)
    assert names == ["report.json", "report.md", "summary.md", "timeline-cf-ssai.png", "timeline-cf-ssai.svg"]
    svg = (tmp_path / "timeline-cf-ssai.svg").read_text()
    for label in ("deploy", "breach error_rate", "rollback", "verified", "threshold 5.0%", "baseline 0.0%",
                  "old v1", "new v2", "blind (tail disconnected)"):
        assert f">{label}</text>" in svg, label
    assert (tmp_path / "timeline-cf-ssai.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "![timeline of cf-ssai](timeline-cf-ssai.svg)" in (tmp_path / "report.md").read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["pictures"] == {"cf-ssai": {"svg": "timeline-cf-ssai.svg", "png": "timeline-cf-ssai.png"}}
    assert data["series"]["workers"]["cf-ssai"]["v2"][14] == [14, 10, 3]
    assert data["warnings"] == []


async def test_a_drawing_failure_is_a_warning_and_the_reports_are_still_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("no ink")

    monkeypatch.setattr(timeline, "write_timeline", broken)
    files = await write_reports(build_report(_input()), tmp_path)
    assert sorted(p.name for p in files) == ["report.json", "report.md", "summary.md"]
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["warnings"] == ["the timeline of cf-ssai could not be drawn: RuntimeError: no ink"]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Warnings" in markdown and "RuntimeError: no ink" in markdown
    assert "![timeline" not in markdown


async def test_a_png_failure_keeps_the_svg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise ImportError("No module named 'PIL'")

    monkeypatch.setattr(timeline, "write_png", broken)
    files = await write_reports(build_report(_input()), tmp_path)
    assert "timeline-cf-ssai.svg" in {p.name for p in files} and "timeline-cf-ssai.png" not in {p.name for p in files}
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["warnings"] == ["the timeline of cf-ssai: no PNG: Pillow is not installed (the SVG is there)"]


def test_old_reports_inputs_still_build() -> None:
    """The positional ReportInput of before (test_migrate's) still builds, with empty new parts."""
    report = build_report(ReportInput("r1", "p", "simulator", "succeeded", 0, "ok", 0.0, 10.0, []))
    assert report["impact"] == [] and report["series"]["workers"] == {} and report["guards"] == []
    assert "(nothing to roll back)" in render_summary(report)


def _request(t_ms: int, version: str | None, status: int) -> TailEvent:
    item: dict[str, Any] = {"outcome": "ok", "scriptName": "my-worker", "eventTimestamp": t_ms, "logs": [],
                            "exceptions": [], "event": {"request": {"url": "https://w.example/", "method": "GET"},
                                                        "response": {"status": status}}}
    if version is not None:
        item["scriptVersion"] = {"id": version}
    return parse_event(json.dumps(item))


def test_series_from_signals_counts_each_second_by_version() -> None:
    signals = WorkerSignals("my-worker")
    start = 1_795_353_860_000
    for t, version, status in [(0, "a", 200), (300, "a", 500), (1200, "b", 200), (1900, "b", 503),
                               (1950, None, 200), (3500, "a", 200)]:
        signals.add(_request(start + t, version, status))
    series = series_from_signals(signals, start, start + 4000)
    assert series == {
        "a": [[0, 2, 1], [1, 0, 0], [2, 0, 0], [3, 1, 0]],
        "b": [[0, 0, 0], [1, 2, 1], [2, 0, 0], [3, 0, 0]],
        NO_VERSION: [[0, 0, 0], [1, 1, 0], [2, 0, 0], [3, 0, 0]],
    }


def test_command_line_names_the_rollout_script() -> None:
    assert command_line(["/x/.venv/bin/rollout", "run", "my plan.py", "--yes"]) == "rollout run 'my plan.py' --yes"


@pytest.mark.wrangler
async def test_demo_writes_schema_2_with_series_and_timeline(workdir: Path) -> None:
    """End to end: `rollout demo --no-tty` (bad-release) writes schema 2, the new version's errors, the pictures."""
    script = Path(sys.executable).parent / "rollout"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "rollout.cli"]
    proc = await anyio.run_process([*argv, "demo", "--no-tty"], cwd=workdir, check=False,
                                   stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 1, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    reports = workdir / "reports"
    data = json.loads((reports / "report.json").read_text())
    assert data["schema_version"] == 2
    assert data["command"] == "rollout demo --no-tty"
    assert data["scenario"] == "bad-release"
    new = data["changes"][0]["after"]
    assert sum(row[2] for row in data["series"]["workers"]["cf-ssai"][new]) > 0
    assert data["impact"][0]["failed_requests"] > 0
    assert data["breaches"][0]["phase"] == data["changes"][0]["phase"]
    assert (reports / "timeline-cf-ssai.svg").stat().st_size > 0
    assert (reports / "timeline-cf-ssai.png").stat().st_size > 0
    assert "rolled back (verified) to" in (reports / "summary.md").read_text().splitlines()[0]
