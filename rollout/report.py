"""Reports: ``report.json`` for machines, ``report.md`` (the runbook's failure-tracking format) for people,
and ``summary.md`` in the runbook's communication-template shape, ready to paste."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .bus import (
    Breach,
    Diagnosis,
    EngineEvent,
    PhaseFinished,
    PhaseStarted,
    ProbeChecked,
    RollbackAttempt,
    RollbackDone,
    RolloutStarted,
    WorkerChanged,
)


@dataclass(frozen=True)
class ReportInput:
    rollout_id: str
    plan: str
    target: str
    outcome: str
    exit_code: int
    detail: str
    started: float
    ended: float
    events: Sequence[EngineEvent]
    migrations: Sequence[tuple[str, str, str]] = ()


def build_report(data: ReportInput) -> dict[str, Any]:
    """The machine-readable report (see the README for the fields)."""
    phases: dict[int, dict[str, Any]] = {}
    for event in data.events:
        if isinstance(event, RolloutStarted):
            for index, name in enumerate(event.phases):
                phases[index] = {"name": name, "status": "pending", "started": None, "ended": None, "seconds": None}
        elif isinstance(event, PhaseStarted):
            phases.setdefault(event.index, {"name": event.phase})
            phases[event.index].update(status="running", started=_iso(event.at))
        elif isinstance(event, PhaseFinished):
            phases.setdefault(event.index, {"name": event.phase})
            phases[event.index].update(status=event.status, ended=_iso(event.at), seconds=round(event.seconds, 3),
                                       detail=event.detail)
    attempts: dict[str, int] = {}
    for event in data.events:
        if isinstance(event, RollbackAttempt):
            attempts[event.worker] = max(attempts.get(event.worker, 0), event.attempt)
    migrated = {worker for worker, _, _ in data.migrations}
    return {
        "rollout_id": data.rollout_id,
        "plan": data.plan,
        "target": data.target,
        "outcome": data.outcome,
        "exit_code": data.exit_code,
        "detail": data.detail,
        "started": _iso(data.started),
        "ended": _iso(data.ended),
        "seconds": round(data.ended - data.started, 3),
        "phases": [phases[i] for i in sorted(phases)],
        "changes": [
            {"worker": e.worker, "before": e.before, "after": e.after, "phase": e.phase, "time": _iso(e.at)}
            for e in data.events if isinstance(e, WorkerChanged)
        ],
        "breaches": [
            {"guard": e.guard, "worker": e.worker, "action": e.action, "value": e.value, "baseline": e.baseline,
             "threshold": e.threshold, "samples": e.samples, "window_s": e.window_s, "p_value": e.p_value,
             "detail": e.detail, "time": _iso(e.at),
             "event_time": _iso(e.event_time) if e.event_time else None,
             "event_index": e.event_index, "event_timestamp": e.event_timestamp}
            for e in data.events if isinstance(e, Breach)
        ],
        "rollbacks": [
            {"worker": e.worker, "from_version": e.from_version, "to_version": e.to_version,
             "attempts": e.attempts or attempts.get(e.worker, 0), "verified": e.verified,
             "recovered": e.recovered, "detail": e.detail, "time": _iso(e.at),
             "migrations_not_rolled_back": sorted(n for w, _, n in data.migrations if w == e.worker)
             if e.worker in migrated else []}
            for e in data.events if isinstance(e, RollbackDone)
        ],
        "probes": [
            {"phase": e.phase, "worker": e.worker, "probe": e.probe, "ok": e.ok, "saw": e.saw}
            for e in data.events if isinstance(e, ProbeChecked)
        ],
        "diagnoses": [
            {"phase": e.phase, "command": e.command, "code": e.code, "message": e.message, "cause": e.cause,
             "fix": e.fix}
            for e in data.events if isinstance(e, Diagnosis)
        ],
        "migrations": [{"worker": w, "binding": b, "name": n} for w, b, n in data.migrations],
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The runbook's failure-tracking entry: number, date, time, component, step, error, cause, resolution,
    status, lessons — or a success record when nothing failed."""
    started = report["started"] or ""
    date, _, clock = started.partition("T")
    lines = [f"# Rollout {report['rollout_id']}: {report['plan']}", ""]
    lines += [f"- **Target:** {report['target']}", f"- **Outcome:** {report['outcome']} (exit {report['exit_code']})",
              f"- **Duration:** {report['seconds']:.1f} s", ""]
    failures = _failures(report)
    if not failures:
        lines += ["No failures: every phase succeeded.", ""]
    for number, failure in enumerate(failures, start=1):
        lines += [  # the runbook's failure-tracking format (runbook 003)
            f"### Failure #{number}: {failure['brief']}",
            f"- **Date**: {date}",
            f"- **Time**: {clock[:5]} UTC",
            f"- **Component**: {failure['component']}",
            f"- **Deployment Step**: {failure['step']}",
            f"- **Error Message**: `{failure['error']}`",
            f"- **Root Cause**: {failure['cause']}",
            f"- **Resolution**: {failure['resolution']}",
            f"- **Status**: {failure['status']}",
            f"- **Lessons Learned**: {failure['lessons']}",
            "",
        ]
    lines += ["## Phases", "", "| # | phase | status | seconds | detail |", "|---|---|---|---|---|"]
    for index, phase in enumerate(report["phases"], start=1):
        seconds = phase.get("seconds")
        lines.append(f"| {index} | {phase['name']} | {phase['status']} | "
                     f"{'' if seconds is None else f'{seconds:.1f}'} | {phase.get('detail', '') or ''} |")
    if report["rollbacks"]:
        lines += ["", "## Rollbacks", "", "| worker | from | to | attempts | verified | recovered |",
                  "|---|---|---|---|---|---|"]
        for rb in report["rollbacks"]:
            lines.append(f"| {rb['worker']} | {rb['from_version']} | {rb['to_version']} | {rb['attempts']} | "
                         f"{rb['verified']} | {rb['recovered']} |")
            if rb.get("migrations_not_rolled_back"):
                lines.append(f"\n> D1 data is never rolled back: migrations applied by this rollout to "
                             f"{rb['worker']} stay applied: {', '.join(rb['migrations_not_rolled_back'])}.\n")
    return "\n".join(lines) + "\n"


def _failures(report: dict[str, Any]) -> list[dict[str, str]]:
    failures = []
    resolution_base = _resolution(report)
    for breach in report["breaches"]:
        if breach["action"] != "rollback":
            continue
        failures.append({
            "brief": f"{breach['guard']} breached on {breach['worker']}",
            "component": f"Backend (Cloudflare Worker {breach['worker']})", "step": _running_phase(report) or "watch",
            "error": f"guard {breach['guard']} breached: {breach['detail']}",
            "cause": f"the new version of {breach['worker']} exceeded the {breach['guard']} threshold "
                     f"({breach['threshold']}) over {breach['samples']} samples",
            "resolution": resolution_base, "status": _status(report),
            "lessons": "rehearse the release against the simulator with this scenario before production",
        })
    for phase in report["phases"]:
        if phase.get("status") != "failed":
            continue
        diag = next((d for d in report["diagnoses"] if d["phase"] == phase["name"]), None)
        failures.append({
            "brief": f"{phase['name']} failed" + (f" (code {diag['code']})" if diag and diag["code"] else ""),
            "component": "Backend (Cloudflare Worker)", "step": phase["name"],
            "error": (f"{diag['message']} [code: {diag['code']}]" if diag and diag["code"] else
                      phase.get("detail", "")),
            "cause": (f"code {diag['code']}: {diag['cause']}" if diag and diag["cause"] else
                      (diag["message"] if diag else "see the exact error")),
            "resolution": (diag["fix"] if diag and diag["fix"] else resolution_base),
            "status": _status(report),
            "lessons": "caught by the plan; add a preflight check so it fails before any deploy",
        })
    return failures


def _resolution(report: dict[str, Any]) -> str:
    if not report["rollbacks"]:
        return "nothing was changed; fix and rerun"
    parts = [f"rolled back {rb['worker']} to {rb['to_version']}" + (" (verified)" if rb["verified"] else
             " (NOT verified: check by hand)") for rb in report["rollbacks"]]
    return "; ".join(parts)


def _status(report: dict[str, Any]) -> str:
    return {"rolled_back": "Workaround (rolled back)", "rollback_failed": "Open (rollback not verified)",
            "failed": "Open", "succeeded": "✅ Resolved"}.get(report["outcome"], str(report["outcome"]))


def _running_phase(report: dict[str, Any]) -> str | None:
    for phase in report["phases"]:
        if phase.get("status") == "cancelled":
            return str(phase["name"])
    return None


def render_summary(report: dict[str, Any]) -> str:
    """The team summary in the runbook's communication-template shape (runbook 004), ready to paste."""
    changed = report["changes"] or []
    mark = {"succeeded": "✅", "rolled_back": "↩️", "rollback_failed": "🚨"}.get(report["outcome"], "❌")
    lines = [f"{mark} {report['plan']}: {report['outcome'].replace('_', ' ')}", "", "Changes:"]
    lines += [f"- {c['worker']}: {c['before'] or '(new)'} → {c['after']}" for c in changed] or ["- nothing deployed"]
    lines += [f"- D1 {m['binding']} of {m['worker']}: applied {m['name']}" for m in report.get("migrations", [])]
    lines += ["", "Impact:"]
    rollback_breaches = [b for b in report["breaches"] if b["action"] == "rollback"]
    lines += [f"- {b['worker']}: {b['guard']} {b['detail']}" for b in report["breaches"]] or \
        ["- no guard breached while watched"]
    lines += ["", "Monitoring:", f"- watched {report['seconds']:.0f} s with live tail guards"]
    lines += [f"- {p['name']}: {p['status']}" for p in report["phases"] if p.get("status") not in ("succeeded",)]
    lines += ["", "Next Steps:"]
    if rollback_breaches or report["outcome"] != "succeeded":
        lines.append("- fix the cause above (see report.md) and rerun the plan")
    else:
        lines.append("- keep monitoring for 24 hours")
    for rb in report["rollbacks"]:
        if rb.get("migrations_not_rolled_back"):
            lines.append(f"- D1 data is never rolled back: {', '.join(rb['migrations_not_rolled_back'])} stay "
                         f"applied for {rb['worker']}")
    lines += ["", "Rollback Available:"]
    commands = [f"wrangler rollback {c['before']} --name {c['worker']} -y" for c in reversed(changed) if c["before"]]
    lines += commands or ["(nothing to roll back)"]
    if report["rollbacks"]:
        lines += ["", "Rolled back:"]
        lines += [f"- {rb['worker']} → {rb['to_version']} ({'verified' if rb['verified'] else 'NOT verified'})"
                  for rb in report["rollbacks"]]
    return "\n".join(lines) + "\n"


async def write_reports(report: dict[str, Any], directory: Path) -> list[Path]:
    """Write report.json, report.md and summary.md; returns their paths."""
    out = anyio.Path(directory)
    await out.mkdir(parents=True, exist_ok=True)
    files = {
        "report.json": json.dumps(report, indent=2) + "\n",
        "report.md": render_markdown(report),
        "summary.md": render_summary(report),
    }
    written = []
    for name, text in files.items():
        await (out / name).write_text(text, encoding="utf-8")
        written.append(Path(directory) / name)
    return written


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int((epoch % 1) * 1000):03d}Z"


def events_of(history: Iterable[EngineEvent]) -> list[EngineEvent]:
    return list(history)
