"""Reports: ``report.json`` for machines, ``report.md`` (the runbook's failure-tracking format) for people,
``summary.md`` in the runbook's communication-template shape, ready to paste, and a timeline picture per
changed worker (``timeline-WORKER.svg`` beside report.md, ``timeline-WORKER.png`` for chat).

``report.json`` carries ``schema_version`` (:data:`SCHEMA_VERSION`): 2 added the command line, scenario, time
scale, git commit, fault-onset-to-verified time, gate answers, every guard's final state, the impact in failed
requests, the per-second series and the timeline marks (1, unnumbered, had none of them).  Fields are only
ever added within a version.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .bus import (
    BaselineMeasured,
    Breach,
    Diagnosis,
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
    RolloutStarted,
    WorkerChanged,
)
from .durations import format_duration

logger = logging.getLogger("rollout.report")

SCHEMA_VERSION = 2
NEVER_JUDGED = "never judged"


@dataclass(frozen=True)
class GuardSpec:
    """A plan's guard, as the report lists it (so a guard that never judged anything shows too).

    Attributes:
        kind: the guard's class name (``ErrorRate``, ``LogRate``, ...); the timeline draws the threshold of
            the first ``ErrorRate``.
        workers: the workers it is restricted to; empty: every watched worker.
    """

    name: str
    action: str
    kind: str = ""
    workers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportInput:
    """What a report is made of: the run's result, its engine events, and what the runner knows besides.

    Attributes:
        series: ``{worker: {version: [[t, requests, errors], ...]}}`` (:func:`rollout.series.series_from_signals`),
            ``t`` in seconds since ``series_start`` (epoch seconds).
        watched: the plan's watched workers (each guard's final state is listed for each of them).
    """

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
    command: str = ""
    plan_path: str | None = None
    scenario: str | None = None
    time_scale: float = 1.0
    git_commit: str | None = None
    fault_to_verified_s: float | None = None
    series: Mapping[str, Mapping[str, Sequence[Sequence[float]]]] = field(default_factory=dict)
    series_start: float | None = None
    guards: Sequence[GuardSpec] = ()
    watched: Sequence[str] = ()


def guard_specs(guards: Iterable[Any]) -> list[GuardSpec]:
    """A plan's guards as the report lists them."""
    return [GuardSpec(name=str(g.name), action=str(g.action), kind=type(g).__name__,
                      workers=tuple(getattr(g, "workers", ()) or ())) for g in guards]


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran, as it can be typed again (``rollout ...`` when it was the rollout script)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "rollout":
        argv[0] = "rollout"
    return shlex.join(argv)


def build_report(data: ReportInput) -> dict[str, Any]:
    """The machine-readable report (see the README for the fields)."""
    events = list(data.events)
    phases: dict[int, dict[str, Any]] = {}
    for event in events:
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
    for event in events:
        if isinstance(event, RollbackAttempt):
            attempts[event.worker] = max(attempts.get(event.worker, 0), event.attempt)
    migrated = {worker for worker, _, _ in data.migrations}
    changes = [e for e in events if isinstance(e, WorkerChanged)]
    origin = data.series_start if data.series_start is not None else data.started
    during = _running_phases(events)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "rollout_id": data.rollout_id,
        "plan": data.plan,
        "plan_path": data.plan_path,
        "command": data.command,
        "target": data.target,
        "scenario": data.scenario,
        "time_scale": data.time_scale,
        "git_commit": data.git_commit,
        "outcome": data.outcome,
        "exit_code": data.exit_code,
        "detail": data.detail,
        "started": _iso(data.started),
        "ended": _iso(data.ended),
        "seconds": round(data.ended - data.started, 3),
        "fault_to_verified_s": None if data.fault_to_verified_s is None else round(data.fault_to_verified_s, 3),
        "phases": [phases[i] for i in sorted(phases)],
        "changes": [
            {"worker": e.worker, "before": e.before, "after": e.after, "phase": e.phase, "time": _iso(e.at)}
            for e in changes
        ],
        "breaches": [
            {"guard": e.guard, "worker": e.worker, "action": e.action, "value": e.value, "baseline": e.baseline,
             "threshold": e.threshold, "samples": e.samples, "window_s": e.window_s, "p_value": e.p_value,
             "detail": e.detail, "time": _iso(e.at),
             "event_time": _iso(e.event_time) if e.event_time else None,
             "event_index": e.event_index, "event_timestamp": e.event_timestamp,
             "phase": _changing_phase(changes, e.worker, e.at) or during.get(id(e)),
             "during": during.get(id(e))}
            for e in events if isinstance(e, Breach)
        ],
        "rollbacks": [
            {"worker": e.worker, "from_version": e.from_version, "to_version": e.to_version,
             "attempts": e.attempts or attempts.get(e.worker, 0), "verified": e.verified,
             "recovered": e.recovered, "detail": e.detail, "time": _iso(e.at),
             "verified_time": _iso(_verified_at(events, e)),
             "migrations_not_rolled_back": sorted(n for w, _, n in data.migrations if w == e.worker)
             if e.worker in migrated else []}
            for e in events if isinstance(e, RollbackDone)
        ],
        "probes": [
            {"phase": e.phase, "worker": e.worker, "probe": e.probe, "ok": e.ok, "saw": e.saw, "time": _iso(e.at)}
            for e in events if isinstance(e, ProbeChecked)
        ],
        "gates": [
            {"phase": e.phase, "question": e.question, "answer": e.answer, "by": e.by, "time": _iso(e.at)}
            for e in events if isinstance(e, GateAnswered)
        ],
        "guards": _guard_states(events, data.guards, data.watched, changes),
        "diagnoses": [
            {"phase": e.phase, "command": e.command, "code": e.code, "message": e.message, "cause": e.cause,
             "fix": e.fix}
            for e in events if isinstance(e, Diagnosis)
        ],
        "migrations": [{"worker": w, "binding": b, "name": n} for w, b, n in data.migrations],
        "impact": [],
        "series": {
            "start": _iso(origin), "start_epoch": round(origin, 3), "bucket_s": 1,
            "columns": ["t", "requests", "errors"],
            "workers": {worker: {version: [list(row) for row in rows] for version, rows in by_version.items()}
                        for worker, by_version in data.series.items()},
        },
        "timelines": {},
        "pictures": {},
        "warnings": [],
    }
    end_t = data.ended - origin
    for worker in dict.fromkeys(c.worker for c in changes):
        mine = [c for c in changes if c.worker == worker]
        series = report["series"]["workers"].get(worker)
        live_t = _live_from(events, mine, series, origin)
        report["timelines"][worker] = _timeline(events, data.guards, worker, mine, origin, end_t, live_t, series)
        report["impact"].append(_impact(events, worker, mine, series, origin, end_t, live_t))
    return report


# -- pieces of the report --------------------------------------------------------------------------------
def _running_phases(events: Sequence[EngineEvent]) -> dict[int, str]:
    """For each Breach (by id): the phase that was running when it tripped."""
    running: str | None = None
    out: dict[int, str] = {}
    for event in events:
        if isinstance(event, PhaseStarted):
            running = event.phase
        elif isinstance(event, PhaseFinished) and event.phase == running:
            running = None
        elif isinstance(event, Breach) and running is not None:
            out[id(event)] = running
    return out


def _changing_phase(changes: Sequence[WorkerChanged], worker: str, at: float) -> str | None:
    """The phase that changed ``worker`` last before ``at`` (the first change, if all came later)."""
    mine = [c for c in changes if c.worker == worker]
    before = [c for c in mine if c.at <= at]
    chosen = before[-1] if before else (mine[0] if mine else None)
    return chosen.phase if chosen else None


def _verified_at(events: Sequence[EngineEvent], done: RollbackDone) -> float | None:
    """When a verified rollback was verified: its last attempt (each attempt reads the deployment back)."""
    if not done.verified:
        return None
    tries = [e.at for e in events if isinstance(e, RollbackAttempt) and e.worker == done.worker and e.at <= done.at]
    return tries[-1] if tries else done.at


def _guard_states(events: Sequence[EngineEvent], guards: Sequence[GuardSpec], watched: Sequence[str],
                  changes: Sequence[WorkerChanged]) -> list[dict[str, Any]]:
    """Every guard's last state per worker; a guard that never judged a worker says so."""
    last: dict[tuple[str, str], GuardState] = {}
    for event in events:
        if isinstance(event, GuardState):
            last[(event.guard, event.worker)] = event
    changed = {c.worker for c in changes}
    workers = list(dict.fromkeys([*watched, *(c.worker for c in changes), *(w for _, w in last)]))
    specs = list(guards) or [GuardSpec(name, state.action) for (name, _), state in last.items()]
    specs = list({spec.name: spec for spec in specs}.values())
    rows: list[dict[str, Any]] = []
    for spec in specs:
        for worker in workers:
            if spec.workers and worker not in spec.workers:
                continue
            state = last.get((spec.name, worker))
            if state is None:
                rows.append({"guard": spec.name, "worker": worker, "action": spec.action, "state": NEVER_JUDGED,
                             "value": None, "baseline": None, "threshold": None, "samples": 0,
                             "detail": "judged nothing: the run changed this worker but no verdict came"
                             if worker in changed else "not changed by this run, so not judged",
                             "time": None, "worker_changed": worker in changed})
                continue
            rows.append({"guard": spec.name, "worker": worker, "action": state.action, "state": state.state,
                         "value": state.value, "baseline": state.baseline, "threshold": state.threshold,
                         "samples": state.samples, "detail": state.detail, "time": _iso(state.at),
                         "worker_changed": worker in changed})
    return rows


def _error_guard(events: Sequence[EngineEvent], guards: Sequence[GuardSpec], worker: str) -> GuardState | None:
    """The last verdict of the worker's ErrorRate guard (by kind, else the one named ``error_rate``)."""
    names = [g.name for g in guards if g.kind == "ErrorRate" and (not g.workers or worker in g.workers)]
    names = names or ["error_rate"]
    found = [e for e in events if isinstance(e, GuardState) and e.worker == worker and e.guard in names]
    return found[-1] if found else None


def _step_label(change: WorkerChanged, first: bool) -> str:
    pct = next((arg.split("@", 1)[1] for arg in change.command
                if change.after and arg.startswith(f"{change.after}@")), None)
    if pct is not None:
        pct = pct.rstrip("%") + "%"
        return f"deploy {pct}" if first else pct
    return "deploy" if first else "change"


def _timeline(events: Sequence[EngineEvent], guards: Sequence[GuardSpec], worker: str,
              changes: Sequence[WorkerChanged], origin: float, end_t: float, live_t: float,
              series: Mapping[str, Sequence[Sequence[float]]] | None) -> dict[str, Any]:
    """The marks of one worker's timeline (seconds since the series' start), its blind spans, baseline and
    threshold, and which version is old and which new.  The deploy is marked when it went live.

    A blind span runs from a MonitorState that says disconnected to the next that says connected; those come
    with the stats ticks, up to a tick late, so a span ends no later than the first second after its start in
    which the tail saw a request."""

    def at(epoch: float) -> float:
        return round(epoch - origin, 3)

    marks: list[dict[str, Any]] = []
    for index, change in enumerate(changes):
        t = live_t if index == 0 else at(change.at)
        marks.append({"t": t, "kind": "deploy" if index == 0 else "step", "label": _step_label(change, index == 0),
                      "time": _iso(origin + t)})
    for breach in (e for e in events if isinstance(e, Breach) and e.worker == worker):
        word = "breach" if breach.action == "rollback" else breach.action
        marks.append({"t": at(breach.at), "kind": "breach", "label": f"{word} {breach.guard}",
                      "time": _iso(breach.at)})
    tries = [e for e in events if isinstance(e, RollbackAttempt) and e.worker == worker]
    done = next((e for e in events if isinstance(e, RollbackDone) and e.worker == worker), None)
    if tries or done is not None:
        first = tries[0].at if tries else done.at if done else 0.0
        starting = [e.at for e in events if isinstance(e, Message) and e.text.startswith("rolling back ")
                    and e.at <= first]
        begun = starting[-1] if starting else first
        marks.append({"t": at(begun), "kind": "rollback", "label": "rollback", "time": _iso(begun)})
        if done is not None:
            verified = _verified_at(events, done)
            if verified is not None:
                marks.append({"t": at(verified), "kind": "verified", "label": "verified", "time": _iso(verified)})
            else:
                marks.append({"t": at(done.at), "kind": "unverified", "label": "rollback NOT verified",
                              "time": _iso(done.at)})
    blind: list[list[float]] = []
    since: float | None = None
    for state in (e for e in events if isinstance(e, MonitorState) and e.worker == worker):
        if not state.connected and since is None:
            since = state.at
        elif state.connected and since is not None:
            blind.append([at(since), at(state.at)])
            since = None
    if since is not None:
        blind.append([at(since), round(end_t, 3)])
    served = sorted({row[0] for rows in (series or {}).values() for row in rows if row[1]})
    for span in blind:
        seen = next((t for t in served if t >= span[0]), None)
        if seen is not None and seen < span[1]:
            span[1] = max(span[0], seen)
    blind = [span for span in blind if span[1] > span[0]]
    verdict = _error_guard(events, guards, worker)
    baseline = verdict.baseline if verdict is not None else None
    threshold = verdict.threshold if verdict is not None else None
    if baseline is None:
        measured = [e for e in events if isinstance(e, BaselineMeasured) and e.worker == worker and e.requests]
        baseline = measured[-1].errors / measured[-1].requests if measured else None
    roles: dict[str, str] = {}
    if changes[0].before:
        roles[changes[0].before] = "old"
    for change in changes:
        if change.after and change.after not in roles:
            roles[change.after] = "new"
    return {"marks": sorted(marks, key=lambda m: m["t"]), "blind": blind, "baseline_rate": baseline,
            "threshold_rate": threshold, "roles": roles, "end_t": round(end_t, 3)}


def _new_versions(changes: Sequence[WorkerChanged]) -> list[str]:
    old = changes[0].before
    return [v for v in dict.fromkeys(c.after for c in changes) if v and v != old]


def _live_from(events: Sequence[EngineEvent], changes: Sequence[WorkerChanged],
               series: Mapping[str, Sequence[Sequence[float]]] | None, origin: float) -> float:
    """When the worker's first change went live (seconds since ``origin``): the first second its new version
    served a request after the deploy's phase began (the edge switches while ``wrangler deploy`` still runs),
    or the change's report, whichever came first."""
    changed_t = changes[0].at - origin
    phase_t = max((e.at - origin for e in events if isinstance(e, PhaseStarted) and e.phase == changes[0].phase
                   and e.at <= changes[0].at), default=changed_t)
    rows = [row for v in _new_versions(changes) for row in (series or {}).get(v, ())]
    first_served = min((row[0] for row in rows if row[1] and row[0] >= phase_t - 1), default=changed_t)
    return round(min(changed_t, first_served), 3)


def _impact(events: Sequence[EngineEvent], worker: str, changes: Sequence[WorkerChanged],
            series: Mapping[str, Sequence[Sequence[float]]] | None, origin: float, end_t: float, live_t: float
            ) -> dict[str, Any]:
    """Failed requests of the new version(s) from when it went live to its verified rollback (or the end)."""
    new = _new_versions(changes)
    out: dict[str, Any] = {"worker": worker, "versions": new, "failed_requests": None, "requests": None,
                           "seconds": None, "from_t": None, "to_t": None, "until": None, "text": ""}
    if not new:
        out["text"] = "no new version went live"
        return out
    if not series:
        out["text"] = "not measured (no tail series for this worker)"
        return out
    done = next((e for e in events if isinstance(e, RollbackDone) and e.worker == worker), None)
    verified = _verified_at(events, done) if done is not None else None
    to_t, until = (verified - origin, "verified rollback") if verified is not None else (end_t, "end of the run")
    rows = [row for v in new for row in series.get(v, ())]
    window = [row for row in rows if live_t - 1 < row[0] < to_t]
    failed, served = int(sum(row[2] for row in window)), int(sum(row[1] for row in window))
    seconds = max(0.0, to_t - live_t)
    share = f", {failed / served:.1%}" if served else ""
    out.update(failed_requests=failed, requests=served, seconds=round(seconds, 3), from_t=live_t,
               to_t=round(to_t, 3), until=until,
               text=f"≈ {failed} failed requests over {format_duration(seconds)} "
                    f"(of {served} served by {', '.join(new)}{share}; from the deploy to the {until})")
    return out


# -- report.md -----------------------------------------------------------------------------------------
def render_markdown(report: dict[str, Any]) -> str:
    """The runbook's failure-tracking entry: number, date, time, component, step, error, cause, resolution,
    status, lessons — or a success record when nothing failed; then what the run did, in tables."""
    lines = [f"# Rollout {report['rollout_id']}: {report['plan']}", ""]
    target = report["target"] + (f", scenario {report['scenario']}" if report.get("scenario") else "") + \
        (f", time scale {report['time_scale']:g}" if report.get("time_scale", 1.0) != 1.0 else "")
    lines += [f"- **Started:** {report['started']} (UTC); **ended:** {report['ended']}",
              f"- **Rollout id:** {report['rollout_id']}",
              f"- **Plan:** {report['plan']}" + (f" (`{report['plan_path']}`)" if report.get("plan_path") else ""),
              f"- **Commit:** {report.get('git_commit') or 'unknown (the plan is not in a git checkout)'}",
              f"- **Command:** `{report.get('command') or '(not recorded)'}`",
              f"- **Target:** {target}",
              f"- **Outcome:** {report['outcome']} (exit {report['exit_code']}): {report['detail']}",
              f"- **Duration:** {report['seconds']:.1f} s"]
    if report.get("fault_to_verified_s") is not None:
        lines.append(f"- **Fault onset → rollback verified:** {report['fault_to_verified_s']:.1f} s")
    lines.append("")
    failures = _failures(report)
    if not failures:
        lines += ["No failures: every phase succeeded.", ""]
    for number, failure in enumerate(failures, start=1):
        date, _, clock = (failure["time"] or report["started"] or "").partition("T")
        lines += [  # the runbook's failure-tracking format (runbook 003)
            f"### Failure #{number}: {failure['brief']}",
            f"- **Date**: {date}",
            f"- **Time**: {clock[:8]} UTC",
            f"- **Component**: {failure['component']}",
            f"- **Deployment Step**: {failure['step']}",
            f"- **Error Message**: `{failure['error']}`",
            f"- **Root Cause**: {failure['cause']}",
            f"- **Resolution**: {failure['resolution']}",
            f"- **Status**: {failure['status']}",
            f"- **Lessons Learned**: {failure['lessons']}",
            "",
        ]
    if report.get("impact"):
        lines += ["## Impact", ""]
        lines += [f"- {i['worker']}: {i['text']}" for i in report["impact"]]
        lines.append("")
    pictures = report.get("pictures") or {}
    if pictures:
        lines += ["## Timeline", ""]
        for worker, files in pictures.items():
            if files.get("svg"):
                lines.append(f"![timeline of {worker}]({files['svg']})")
            if files.get("png"):
                lines.append(f"\n[{worker} as PNG]({files['png']})")
            lines.append("")
    lines += ["## Phases", "", "| # | phase | status | seconds | detail |", "|---|---|---|---|---|"]
    for index, phase in enumerate(report["phases"], start=1):
        seconds = phase.get("seconds")
        lines.append(f"| {index} | {_cell(phase['name'])} | {phase['status']} | "
                     f"{'' if seconds is None else f'{seconds:.1f}'} | {_cell(phase.get('detail', '') or '')} |")
    lines += ["", "## Gates", ""]
    if report.get("gates"):
        lines += ["| phase | question | answer | by | time |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(g['phase'])} | {_cell(g['question'])} | {g['answer']} | {g['by']} | {g['time']} |"
                  for g in report["gates"]]
    else:
        lines.append("No gate was asked.")
    lines += ["", "## Probes", ""]
    if report.get("probes"):
        lines += ["| phase | worker | probe | ok | saw |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(p['phase'])} | {p['worker']} | {_cell(p['probe'])} | {'✅' if p['ok'] else '❌'} | "
                  f"{_cell(p['saw'])} |" for p in report["probes"]]
    else:
        lines.append("No probe ran.")
    lines += ["", "## Guards (final state)", ""]
    if report.get("guards"):
        lines += ["| guard | worker | action | state | value | threshold | samples | detail |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {g['guard']} | {g['worker']} | {g['action']} | {g['state']} | {_num(g['value'])} | "
                  f"{_num(g['threshold'])} | {g['samples']} | {_cell(g['detail'])} |" for g in report["guards"]]
    else:
        lines.append("The plan has no guards.")
    if report["rollbacks"]:
        lines += ["", "## Rollbacks", "", "| worker | from | to | attempts | verified | recovered |",
                  "|---|---|---|---|---|---|"]
        for rb in report["rollbacks"]:
            lines.append(f"| {rb['worker']} | {rb['from_version']} | {rb['to_version']} | {rb['attempts']} | "
                         f"{rb['verified']} | {rb['recovered']} |")
            if rb.get("migrations_not_rolled_back"):
                lines.append(f"\n> D1 data is never rolled back: migrations applied by this rollout to "
                             f"{rb['worker']} stay applied: {', '.join(rb['migrations_not_rolled_back'])}.\n")
    if report.get("warnings"):
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _failures(report: dict[str, Any]) -> list[dict[str, str]]:
    failures = []
    resolution_base = _resolution(report)
    for breach in report["breaches"]:
        if breach["action"] != "rollback":
            continue
        step = breach.get("phase") or _running_phase(report) or "watch"
        during = breach.get("during")
        tripped = f", tripped during {during}" if during and during != step else ""
        failures.append({
            "brief": f"{breach['guard']} breached on {breach['worker']}", "time": breach["time"],
            "component": f"Backend (Cloudflare Worker {breach['worker']})", "step": step,
            "error": f"guard {breach['guard']} breached: {breach['detail']}",
            "cause": f"the new version of {breach['worker']} (deployed by {step}{tripped}) exceeded the "
                     f"{breach['guard']} threshold ({_num(breach['threshold'])}) over {breach['samples']} samples",
            "resolution": resolution_base, "status": _status(report),
            "lessons": "rehearse the release against the simulator with this scenario before production",
        })
    for phase in report["phases"]:
        if phase.get("status") != "failed":
            continue
        diag = next((d for d in report["diagnoses"] if d["phase"] == phase["name"]), None)
        failures.append({
            "brief": f"{phase['name']} failed" + (f" (code {diag['code']})" if diag and diag["code"] else ""),
            "time": phase.get("ended") or report["started"],
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


# -- summary.md ----------------------------------------------------------------------------------------
def render_summary(report: dict[str, Any]) -> str:
    """The team summary in the runbook's communication-template shape (runbook 004), ready to paste."""
    changed = report["changes"] or []
    rollbacks = {rb["worker"]: rb for rb in report["rollbacks"]}
    mark = {"succeeded": "✅", "rolled_back": "↩️", "rollback_failed": "🚨"}.get(report["outcome"], "❌")
    lines = [f"{mark} {report['plan']}: {_headline(report)}", ""]
    lines += [f"Rollout {report['rollout_id']}, {report['started']} (UTC)"
              + (f", commit {report['git_commit'][:12]}" if report.get("git_commit") else ""), "", "Changes:"]
    last = {c["worker"]: c for c in changed}
    for worker, change in last.items():
        first = next(c for c in changed if c["worker"] == worker)
        line = f"- {worker}: {first['before'] or '(new)'} → {change['after']} ({change['phase']})"
        rb = rollbacks.get(worker)
        if rb is not None:
            line += f", {_rolled_back_text(rb)}"
        lines.append(line)
    if not changed:
        lines.append("- nothing deployed")
    lines += [f"- D1 {m['binding']} of {m['worker']}: applied {m['name']}" for m in report.get("migrations", [])]
    lines += ["", "Impact:"]
    impact = [f"- {i['worker']}: {i['text']}" for i in report.get("impact", []) if i.get("text")]
    impact += [f"- {b['worker']}: {b['guard']} {'breached' if b['action'] == 'rollback' else b['action']}: "
               f"{b['detail']}" for b in report["breaches"]]
    lines += impact or ["- no guard breached while watched"]
    lines += ["", "Monitoring:", f"- watched {report['seconds']:.0f} s with live tail guards"
              + (f": {_guard_line(report['guards'])}" if report.get("guards") else "")]
    probes = report.get("probes") or []
    if probes:
        bad = [p for p in probes if not p["ok"]]
        lines.append(f"- probes: {len(probes) - len(bad)}/{len(probes)} ok"
                     + "".join(f"; {p['probe']} on {p['worker']}: {p['saw']}" for p in bad))
    lines += [f"- gate {g['question']!r}: {g['answer']} ({g['by']})" for g in report.get("gates", [])]
    lines += [f"- {p['name']}: {p['status']}" for p in report["phases"] if p.get("status") not in ("succeeded",)]
    lines += ["", "Next Steps:"]
    live = _still_live(report)
    if live and report["outcome"] != "succeeded":
        lines.append("- ROLL BACK BY HAND what is still live (below), then check with "
                     "`wrangler deployments status --name WORKER`")
    if report["outcome"] == "succeeded":
        lines.append("- keep monitoring for 24 hours")
    else:
        lines.append(f"- fix the cause (see report.md), then deploy again: `{_run_again(report)}`")
    for rb in report["rollbacks"]:
        if rb.get("migrations_not_rolled_back"):
            lines.append(f"- D1 data is never rolled back: {', '.join(rb['migrations_not_rolled_back'])} stay "
                         f"applied for {rb['worker']}")
    lines += ["", "Rollback Available:"]
    if live:
        lines += [_undo(c) for c in live]
        lines.append(f"(or: rollout rollback {report['rollout_id']} --yes)")
    elif rollbacks:
        lines.append("- nothing live to roll back: " + "; ".join(
            f"{w} was {_rolled_back_text(rb)}" for w, rb in rollbacks.items()))
    else:
        lines.append("(nothing to roll back)")
    return "\n".join(lines) + "\n"


def _rolled_back_text(rb: dict[str, Any]) -> str:
    return f"rolled back ({'verified' if rb['verified'] else 'NOT verified'}) to {rb['to_version']}"


def _headline(report: dict[str, Any]) -> str:
    outcome = str(report["outcome"]).replace("_", " ")
    rollbacks = report["rollbacks"]
    if not rollbacks:
        return outcome if report["changes"] or outcome == "succeeded" else f"{outcome} (nothing was changed)"
    bad = [rb for rb in rollbacks if not rb["verified"]]
    if bad:
        return "ROLLBACK NOT VERIFIED: " + "; ".join(
            f"{rb['worker']} may still serve {rb['from_version']} (the rollback to {rb['to_version']} did not "
            "verify)" for rb in bad)
    if len(rollbacks) == 1:
        done = _rolled_back_text(rollbacks[0])
        return done if report["outcome"] == "rolled_back" else f"{outcome}, {done}"
    parts = ", ".join(f"{rb['worker']} {_rolled_back_text(rb)}" for rb in rollbacks)
    return parts if report["outcome"] == "rolled_back" else f"{outcome}: {parts}"


def _still_live(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The last change of each worker not rolled back and verified, newest first."""
    undone = {rb["worker"] for rb in report["rollbacks"] if rb["verified"]}
    last = {c["worker"]: c for c in report["changes"]}
    first: dict[str, dict[str, Any]] = {}
    for c in report["changes"]:
        first.setdefault(c["worker"], c)
    return [{**c, "before": first[w]["before"]} for w, c in reversed(last.items()) if w not in undone]


def _undo(change: dict[str, Any]) -> str:
    if change["before"] is None:
        return f"{change['worker']} did not exist before: wrangler delete --name {shlex.quote(change['worker'])}"
    return f"wrangler rollback {shlex.quote(change['before'])} --name {shlex.quote(change['worker'])} -y"


def _run_again(report: dict[str, Any]) -> str:
    command = str(report.get("command") or "")
    if command.startswith("rollout run "):
        return command
    plan = report.get("plan_path") or "PLAN"
    return f"rollout run {shlex.quote(plan)}" + (" --sim" if report["target"] == "simulator" else "")


def _guard_line(guards: Sequence[dict[str, Any]]) -> str:
    """``error_rate breach on a, ok on b; ...``, then the workers no guard judged because the run left them
    alone (report.md lists every guard and worker)."""
    by_guard: dict[str, list[str]] = {}
    untouched: dict[str, None] = {}
    for g in guards:
        if g["state"] == NEVER_JUDGED and not g.get("worker_changed", True):
            untouched[g["worker"]] = None
            continue
        by_guard.setdefault(g["guard"], []).append(f"{g['state']} on {g['worker']}")
    text = "; ".join(f"{name} {', '.join(states)}" for name, states in by_guard.items())
    if untouched:
        text += ("; " if text else "") + f"not judged on {', '.join(untouched)} (not changed)"
    return text


# -- writing -------------------------------------------------------------------------------------------
async def write_reports(report: dict[str, Any], directory: Path) -> list[Path]:
    """Draw the timelines, then write report.json, report.md and summary.md; returns the paths written.

    A picture that cannot be drawn is a warning in the reports, never a failed run."""
    out = anyio.Path(directory)
    await out.mkdir(parents=True, exist_ok=True)
    try:
        pictures = await anyio.to_thread.run_sync(draw_timelines, report, Path(directory))
    except Exception as exc:  # a picture must never fail the run
        logger.warning("cannot draw the timelines", exc_info=True)
        report.setdefault("warnings", []).append(f"no timeline drawn: {type(exc).__name__}: {exc}")
        pictures = []
    files = {
        "report.json": dumps(report),
        "report.md": render_markdown(report),
        "summary.md": render_summary(report),
    }
    written = []
    for name, text in files.items():
        await (out / name).write_text(text, encoding="utf-8")
        written.append(Path(directory) / name)
    return written + pictures


def draw_timelines(report: dict[str, Any], directory: Path) -> list[Path]:
    """One timeline per changed worker that has a series; failures become ``report["warnings"]``."""
    written: list[Path] = []
    report.setdefault("warnings", [])
    report.setdefault("pictures", {})
    for worker in report.get("timelines", {}):
        if not report["series"]["workers"].get(worker):
            continue
        try:
            from . import timeline

            paths = timeline.write_timeline(report, worker, directory)
        except Exception as exc:  # a picture must never fail the run
            logger.warning("cannot draw the timeline of %s", worker, exc_info=True)
            report["warnings"].append(f"the timeline of {worker} could not be drawn: {type(exc).__name__}: {exc}")
            continue
        for warning in paths.warnings:
            report["warnings"].append(f"the timeline of {worker}: {warning}")
        report["pictures"][worker] = {kind: path.name for kind, path in paths.files.items()}
        written += paths.files.values()
    return written


def dumps(report: dict[str, Any]) -> str:
    """report.json's text: indented, with each row of a series on one line."""
    rows: dict[str, str] = {}

    def compact(value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
            key = f"\x00rows{len(rows)}\x00"
            rows[key] = "[\n" + ",\n".join(" " * 10 + json.dumps(r) for r in value) + "\n        ]"
            return key
        return value

    shallow = dict(report)
    series = dict(shallow.get("series") or {})
    if isinstance(series.get("workers"), dict):
        series["workers"] = {w: {v: compact(r) for v, r in by.items()} for w, by in series["workers"].items()}
        shallow["series"] = series
    text = json.dumps(shallow, indent=2)
    for key, value in rows.items():
        text = text.replace(json.dumps(key), value)
    return text + "\n"


# -- formatting ----------------------------------------------------------------------------------------
def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int((epoch % 1) * 1000):03d}Z"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")


def events_of(history: Iterable[EngineEvent]) -> list[EngineEvent]:
    return list(history)
