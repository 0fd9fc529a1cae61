"""Hourly summaries: per worker and hour of event time, requests, errors, churn, breaches, blind time.

:class:`HourlyRecorder` closes an hour once the clock is ``grace_s`` past its end (late events have had
their chance) and reads the counts from the worker's signals, which keep two hours of buckets.  Tail
reconnects and blind seconds are attributed by the clock at closing time.  ``render_markdown`` turns the
journal's rows into the morning-after table of ``rollout report``.

``window_report`` is what ``rollout report --since D`` shows: every hour that overlaps the last D (an hour is
written when it closes, so the hour in progress is not among them) and every breach of the last D, read from
the journal's events, with what rollout did about it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from .journal import Journal, RolloutRecord
from .signals import WorkerSignals
from .sources import SourceStatus

__all__ = ["BreachEntry", "HourSummary", "HourlyRecorder", "WindowReport", "action_taken", "render_markdown",
           "window_report"]

HOUR_S: Final = 3600.0


@dataclass(frozen=True, slots=True)
class HourSummary:
    """One worker's hour (``hour_start`` in epoch seconds; ``partial`` when the watch covered part of it)."""

    worker: str
    hour_start: float
    requests: int
    errors: int
    churn: int
    young: int
    created: int
    breaches: int
    reconnects: int
    blind_s: float
    sampled: bool
    partial: bool = False

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def data(self) -> dict[str, Any]:
        """The journal's free-form column (everything but worker, hour, requests and errors)."""
        return {"churn": self.churn, "young": self.young, "created": self.created, "breaches": self.breaches,
                "reconnects": self.reconnects, "blind_s": round(self.blind_s, 1), "sampled": self.sampled,
                "partial": self.partial}

    def line(self) -> str:
        rate = f"{self.error_rate * 100:.2f}%" if self.error_rate is not None else "–"
        clock = time.strftime("%Y-%m-%d %H:00", time.localtime(self.hour_start))
        part = " (partial)" if self.partial else ""
        return (f"hour {clock}{part} {self.worker}: {self.requests} requests, {self.errors} errors ({rate}), "
                f"churn {self.churn}, young {self.young}, breaches {self.breaches}, reconnects {self.reconnects}, "
                f"blind {self.blind_s:.0f}s")


@dataclass(slots=True)
class _Open:
    start: float
    partial: bool
    reconnects_at_start: int
    blind_at_start: float


@dataclass
class HourlyRecorder:
    """Cuts each watched worker's stream into hours of event time.

    Call ``start(now, statuses)`` once, ``note_breach`` on every breach, ``due(now, ...)`` on every tick
    (returns the hours that just closed) and ``flush(now, ...)`` at the end (the hour in progress).
    """

    workers: Sequence[str]
    grace_s: float = 30.0
    _open: dict[str, _Open] = field(default_factory=dict)
    _breaches: dict[tuple[str, int], int] = field(default_factory=dict)

    def start(self, now: float, statuses: Mapping[str, SourceStatus]) -> None:
        start = now - now % HOUR_S
        for worker in self.workers:
            status = statuses.get(worker)
            self._open[worker] = _Open(start, partial=now > start, reconnects_at_start=status.reconnects if status
                                       else 0, blind_at_start=status.blind_s(now) if status else 0.0)

    def note_breach(self, worker: str, at: float) -> None:
        key = (worker, int(at // HOUR_S))
        self._breaches[key] = self._breaches.get(key, 0) + 1

    def due(self, now: float, signals: Mapping[str, WorkerSignals],
            statuses: Mapping[str, SourceStatus]) -> list[HourSummary]:
        out = []
        for worker, hour in self._open.items():
            # an hour closes when the clock *and* the worker's own event time are past it (plus grace), so
            # events still in flight after a tail reconnect land in their hour
            sig = signals.get(worker)
            while now >= hour.start + HOUR_S + self.grace_s and (
                    sig is None or sig.latest_ms / 1000 >= hour.start + HOUR_S + self.grace_s
                    or now >= hour.start + HOUR_S + 10 * self.grace_s):
                out.append(self._close(worker, hour, hour.start + HOUR_S, now, signals, statuses, hour.partial))
        return out

    def flush(self, now: float, signals: Mapping[str, WorkerSignals],
              statuses: Mapping[str, SourceStatus]) -> list[HourSummary]:
        out = []
        for worker, hour in self._open.items():
            sig = signals.get(worker)
            latest = max(now, sig.latest_ms / 1000 + 0.001 if sig is not None else now)
            while latest > hour.start:
                end = min(latest, hour.start + HOUR_S)
                out.append(self._close(worker, hour, end, now, signals, statuses, end < hour.start + HOUR_S))
        return out

    def _close(self, worker: str, hour: _Open, end: float, now: float, signals: Mapping[str, WorkerSignals],
               statuses: Mapping[str, SourceStatus], partial: bool) -> HourSummary:
        sig = signals.get(worker)
        status = statuses.get(worker)
        start_ms, end_ms = int(hour.start * 1000), int(end * 1000)
        if sig is not None:
            w = sig.window(start_ms, end_ms)
            requests, errors, counts, sampled = w.requests, w.errors, w.pattern_counts, w.sampled
        else:
            requests, errors, counts, sampled = 0, 0, {}, False
        reconnects = status.reconnects if status else 0
        blind = status.blind_s(now) if status else 0.0
        summary = HourSummary(
            worker=worker, hour_start=hour.start, requests=requests, errors=errors,
            churn=counts.get("do_churn", 0), young=counts.get("do_young", 0), created=counts.get("do_created", 0),
            breaches=self._breaches.pop((worker, int(hour.start // HOUR_S)), 0),
            reconnects=reconnects - hour.reconnects_at_start, blind_s=max(0.0, blind - hour.blind_at_start),
            sampled=sampled, partial=partial)
        hour.start += HOUR_S
        hour.partial = False
        hour.reconnects_at_start, hour.blind_at_start = reconnects, blind
        return summary


ROLLED_BACK = "rolled back (verified)"
ROLLBACK_FAILED = "rollback failed"
NOT_ROLLED_BACK = "alert — not rolled back"


@dataclass(frozen=True, slots=True)
class BreachEntry:
    """One breach of the window: when (``at``, epoch seconds), which guard on which worker, the value that
    breached, and what rollout did (``taken``: "rolled back (verified)", "alert — not rolled back",
    "rollback failed", "rolling back" while the run is still at it)."""

    at: float
    guard: str
    worker: str
    value: float | None
    threshold: float | None
    guard_action: str
    taken: str
    run_id: str
    detail: str

    def data(self) -> dict[str, Any]:
        return {"at": self.at, "time": _iso(self.at), "guard": self.guard, "worker": self.worker,
                "value": self.value, "threshold": self.threshold, "guard_action": self.guard_action,
                "action": self.taken, "run": self.run_id, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class WindowReport:
    """``rollout report --since``: the window ``[start, end]``, the hourly rows that overlap it, its breaches."""

    start: float
    end: float
    hours: list[dict[str, Any]]
    breaches: list[BreachEntry]

    def data(self, since: str = "") -> dict[str, Any]:
        """The ``--json`` object."""
        hours = [{**row, "hour_end": float(row["hour_start"]) + HOUR_S} for row in self.hours]
        return {
            "since": since, "start": self.start, "end": self.end, "start_time": _iso(self.start),
            "end_time": _iso(self.end),
            "totals": {"worker_hours": len(self.hours), "requests": sum(int(r["requests"]) for r in self.hours),
                       "errors": sum(int(r["errors"]) for r in self.hours), "breaches": len(self.breaches)},
            "hours": hours, "breaches": [b.data() for b in self.breaches],
        }


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at))


def action_taken(breach: Mapping[str, Any], rollbacks: Sequence[Mapping[str, Any]],
                 record: RolloutRecord | None) -> str:
    """What rollout did about one journalled breach, from its run's ``RollbackDone`` events after it
    (``rollbacks``, oldest first; those of ``rollout rollback`` later count too) and the run's record."""
    action = str(breach.get("action", ""))
    if action != "rollback":
        return f"{action} — not rolled back"
    if breach.get("will_roll_back") is False:
        return NOT_ROLLED_BACK
    at = float(breach.get("at", 0.0))
    after = [r for r in rollbacks if float(r.get("at", 0.0)) >= at]
    mine = [r for r in after if r.get("worker") == breach.get("worker")]
    if not mine and (record is None or record.mode != "watch"):
        mine = after  # a rollout rolls back every worker it changed, whichever breached
    last: dict[str, bool] = {}
    for done in mine:
        last[str(done.get("worker"))] = bool(done.get("verified"))
    if last:
        return ROLLED_BACK if all(last.values()) else ROLLBACK_FAILED
    if record is not None and record.outcome == "rolled_back":
        return ROLLED_BACK
    if record is not None and record.ended is None:
        return "rolling back"
    return "no rollback recorded"


async def window_report(journal: Journal, since_s: float, now: float) -> WindowReport:
    """The hours that overlap ``[now - since_s, now]`` and every breach in it, with the action taken."""
    start = now - since_s
    hours = await journal.hours_overlapping(start, now, HOUR_S)
    events = await journal.events_since(start, ("Breach", "RollbackDone"))
    rollbacks: dict[str, list[dict[str, Any]]] = {}
    for run_id, event in events:
        if event.get("kind") == "RollbackDone":
            rollbacks.setdefault(run_id, []).append(event)
    records: dict[str, RolloutRecord | None] = {}
    breaches = []
    for run_id, event in events:
        at = float(event.get("at", 0.0))
        if event.get("kind") != "Breach" or at > now:
            continue
        if run_id not in records:
            records[run_id] = await journal.rollout(run_id)
        value, threshold = event.get("value"), event.get("threshold")
        breaches.append(BreachEntry(
            at=at, guard=str(event.get("guard", "")), worker=str(event.get("worker", "")),
            value=float(value) if isinstance(value, int | float) else None,
            threshold=float(threshold) if isinstance(threshold, int | float) else None,
            guard_action=str(event.get("action", "")),
            taken=action_taken(event, rollbacks.get(run_id, ()), records[run_id]), run_id=run_id,
            detail=str(event.get("detail", ""))))
    breaches.sort(key=lambda b: b.at)
    return WindowReport(start, now, hours, breaches)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def render_breaches(breaches: Sequence[BreachEntry]) -> list[str]:
    """The breaches as a markdown table (time, guard, worker, value, threshold, action taken, run)."""
    head = ["| time | guard | worker | value | threshold | action | run |",
            "| --- | --- | --- | ---: | ---: | --- | --- |"]
    return head + [f"| {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(b.at))} | {b.guard} | {b.worker} | "
                   f"{_number(b.value)} | {_number(b.threshold)} | {b.taken} | {b.run_id} |" for b in breaches]


def render_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "Watch report",
                    breaches: Sequence[BreachEntry] | None = None) -> str:
    """The journal's hourly rows (``Journal.hours``) as a markdown report: one table per worker.

    With ``breaches`` (a :class:`WindowReport`'s), the count is theirs and they are listed after the hours;
    without, the count is the hours' own.
    """
    if not rows and breaches is None:
        return f"# {title}\n\nNo hourly summaries in this period.\n"
    lines = [f"# {title}", ""]
    by_worker: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_worker.setdefault(str(row["worker"]), []).append(row)
    if breaches is None:
        lines += [f"{len(rows)} worker-hours, {sum(int(r['requests']) for r in rows)} requests, "
                  f"{sum(int(r['errors']) for r in rows)} errors, "
                  f"{sum(int(r.get('breaches', 0)) for r in rows)} breaches.", ""]
    else:
        lines += [f"{len(breaches)} breaches in this period; {len(rows)} worker-hours overlap it, with "
                  f"{sum(int(r['requests']) for r in rows)} requests and {sum(int(r['errors']) for r in rows)} "
                  "errors (an hour is summarised when it closes: the hour in progress is not in the tables).", ""]
        if not rows:
            lines += ["No hourly summaries in this period.", ""]
    for worker, items in by_worker.items():
        lines += [f"## {worker}", "",
                  "| hour | requests | errors | error rate | churn | young | breaches | reconnects | blind s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in items:
            requests, errors = int(r["requests"]), int(r["errors"])
            rate = f"{errors / requests * 100:.2f}%" if requests else "–"
            hour = time.strftime("%Y-%m-%d %H:00", time.localtime(float(r["hour_start"])))
            if r.get("partial"):
                hour += " (partial)"
            flag = " **!**" if int(r.get("breaches", 0)) else ""
            lines.append(f"| {hour} | {requests} | {errors} | {rate} | {r.get('churn', 0)} | {r.get('young', 0)} | "
                         f"{r.get('breaches', 0)}{flag} | {r.get('reconnects', 0)} | {r.get('blind_s', 0)} |")
        lines.append("")
    if breaches is not None:
        lines += ["## Breaches", ""]
        lines += render_breaches(breaches) if breaches else ["None."]
        lines.append("")
    return "\n".join(lines)
