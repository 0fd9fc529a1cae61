"""`rollout report --since D`: the hours that overlap the last D, and every breach in it with the action taken.

The journal is written through the real Journal API, as watch and run write it: hourly rows when an hour
closes (the hour in progress has none), Breach and RollbackDone events as they happen.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import pytest

from rollout.bus import Breach, RollbackDone
from rollout.cli import main
from rollout.hourly import HOUR_S, window_report
from rollout.journal import Journal

ALERT_ONLY = "watch-alert-only"
ROLLS_BACK = "watch-rolls-back"
RUN = "run-1"


def _breach(at: float, worker: str, guard: str = "error_rate", value: float = 0.118,
            will_roll_back: bool | None = None) -> Breach:
    return Breach(at=at, guard=guard, worker=worker, action="rollback", value=value, baseline=0.0, threshold=0.05,
                  samples=152, window_s=60.0, detail=f"error rate {value * 100:.1f}%", event_time=at,
                  will_roll_back=will_roll_back)


async def _fill(path: Path, now: float) -> None:
    """Hours of two watches and a run; breaches three minutes before ``now`` and one two hours before.

    ``now`` is 90 s into its hour, so the breaches of three minutes ago are in the previous hour, which
    started more than an hour ago (and closed, so it has its row); the hour in progress has no row.
    """
    hour = now - now % HOUR_S
    async with Journal(path) as journal:
        await journal.start_rollout(ALERT_ONLY, "watch: cf-ssai", None, "simulator", None, None, hour - 3 * HOUR_S,
                                    os.getpid(), mode="watch")
        await journal.start_rollout(ROLLS_BACK, "watch: cf-ssai-decision", None, "simulator", None, None,
                                    hour - 3 * HOUR_S, os.getpid(), mode="watch")
        await journal.start_rollout(RUN, "test plan", None, "simulator", None, None, now - 600, os.getpid())
        for start, breaches in ((hour - 2 * HOUR_S, 1), (hour - HOUR_S, 1)):
            await journal.record_hour(ALERT_ONLY, "cf-ssai", start, 72_000, 36 if breaches else 0,
                                      {"churn": 9, "breaches": breaches, "reconnects": 1, "blind_s": 2.0})
        await journal.record_hour(ROLLS_BACK, "cf-ssai-decision", hour - HOUR_S, 70_000, 700,
                                  {"churn": 0, "breaches": 1, "reconnects": 0, "blind_s": 0.0})
        await journal.append(ALERT_ONLY, [_breach(now - 2 * HOUR_S, "cf-ssai", value=0.09, will_roll_back=False)])
        await journal.append(ALERT_ONLY, [_breach(now - 180, "cf-ssai", value=0.118, will_roll_back=False)])
        await journal.append(ROLLS_BACK, [
            _breach(now - 175, "cf-ssai-decision", value=0.25, will_roll_back=True),
            RollbackDone(at=now - 170, worker="cf-ssai-decision", from_version="v2", to_version="v1", attempts=1,
                         verified=True, detail="verified"),
        ])
        await journal.append(RUN, [
            _breach(now - 160, "cf-ssai-beacon", guard="do_churn_per_hour", value=900.0),
            RollbackDone(at=now - 150, worker="cf-ssai-beacon", from_version="v8", to_version="v7", attempts=4,
                         verified=False, detail="still serving v8"),
        ])
        await journal.finish(RUN, now - 140, "rollback_failed", 3)


@pytest.mark.parametrize("since", [HOUR_S, 600.0])
async def test_since_1h_and_10m_see_the_breaches_of_three_minutes_ago(workdir: Path, since: float) -> None:
    """--since 1h and --since 10m, three minutes after the breaches: the hour that holds them (it started
    more than 1 h ago) is in, the hour before it is not, and each breach is listed with what was done."""
    path = workdir / "journal.sqlite"
    now = 1_795_356_000.0 + 90  # 90 s into an hour
    hour = now - now % HOUR_S
    await _fill(path, now)
    async with Journal(path) as journal:
        assert await journal.hours(now - since) == []  # what `report` read before: none of these hours
        report = await window_report(journal, since, now)
    assert sorted((r["worker"], r["hour_start"]) for r in report.hours) == [
        ("cf-ssai", hour - HOUR_S), ("cf-ssai-decision", hour - HOUR_S)]
    listed = [(b.guard, b.worker, b.value, b.taken, b.run_id) for b in report.breaches]
    assert listed == [
        ("error_rate", "cf-ssai", 0.118, "alert — not rolled back", ALERT_ONLY),
        ("error_rate", "cf-ssai-decision", 0.25, "rolled back (verified)", ROLLS_BACK),
        ("do_churn_per_hour", "cf-ssai-beacon", 900.0, "rollback failed", RUN),
    ]
    assert [b.at for b in report.breaches] == [now - 180, now - 175, now - 160]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", *args, "--no-tty"]) == 0
    return capsys.readouterr().out


def test_report_lists_each_breach_with_time_guard_worker_value_and_action(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command, on the clock of now: the markdown lists the breaches of the last 10 minutes (and 1 h),
    each with its time, guard, worker, value and the action taken; the count is theirs."""
    path = workdir / "journal.sqlite"
    now = time.time()
    anyio.run(_fill, path, now)
    for since in ("1h", "10m"):
        out = _cli(capsys, "--since", since, "--journal", str(path))
        assert "3 breaches in this period" in out, out
        assert "## Breaches" in out
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now - 180))
        assert f"| {stamp} | error_rate | cf-ssai | 0.118 | 0.05 | alert — not rolled back | {ALERT_ONLY} |" in out
        assert "| error_rate | cf-ssai-decision | 0.25 | 0.05 | rolled back (verified) | " in out
        assert "| do_churn_per_hour | cf-ssai-beacon | 900 | 0.05 | rollback failed | run-1 |" in out
        if since == "1h":  # the previous hour always overlaps the last hour
            assert "## cf-ssai" in out and "## cf-ssai-decision" in out
    out = _cli(capsys, "--since", "24h", "--journal", str(path))
    assert "4 breaches in this period" in out  # and the one of two hours ago


def test_report_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json: one object with the window, the totals, the overlapping hours and the breaches."""
    path = workdir / "journal.sqlite"
    now = time.time()
    anyio.run(_fill, path, now)
    data = json.loads(_cli(capsys, "--since", "10m", "--json", "--journal", str(path)))
    assert data["since"] == "10m"
    assert data["end"] - data["start"] == pytest.approx(600)
    assert data["totals"]["breaches"] == 3
    for row in data["hours"]:  # each overlaps the window (the previous hour does while now is < 10 min into this)
        assert row["hour_start"] < data["end"] and row["hour_end"] > data["start"]
    hour = now - now % HOUR_S
    assert {r["hour_start"] for r in data["hours"]} == ({hour - HOUR_S} if now - hour < 600 else set())
    first = data["breaches"][0]
    assert first["guard"] == "error_rate" and first["worker"] == "cf-ssai" and first["value"] == 0.118
    assert first["action"] == "alert — not rolled back" and first["run"] == ALERT_ONLY
    assert first["at"] == pytest.approx(now - 180) and first["time"]
    assert [b["action"] for b in data["breaches"]] == [
        "alert — not rolled back", "rolled back (verified)", "rollback failed"]
    empty = json.loads(_cli(capsys, "--since", "1h", "--json", "--journal", str(workdir / "none.sqlite")))
    assert empty["breaches"] == [] and empty["hours"] == []


def test_report_refuses_a_window_of_nothing(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--since", "0s", "--no-tty", "--journal", str(workdir / "j.sqlite")]) == 2
    assert "--since 0s" in capsys.readouterr().out
