"""A live run's recording replays to the same breach at the same event (real wrangler against the simulator)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from rollout.cli import main
from rollout.runner import RunOptions, run_plan
from rollout.tailfile import ReplayContext

from .conftest import write_plan

pytestmark = pytest.mark.wrangler


def test_replay_of_a_recorded_bad_release_breaches_at_the_live_event(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rollout run --record-tail` saves each worker's tail and context; `rollout replay --json` on it reports
    the rollback breach with the guard, event index and event time the live run reported."""
    plan = write_plan(workdir, 'Deploy(manifest), Watch("40s")')
    tails = workdir / "tails"
    console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
    options = RunOptions(plan_path=plan, sim=True, scenario="bad-release", yes=True, tty=False, console=console,
                         report_dir=workdir / "reports", journal_path=workdir / ".rollout" / "journal.sqlite",
                         record_dir=tails)
    outcome = anyio.run(run_plan, options)
    assert outcome.result.exit_code == 1
    report = json.loads((workdir / "reports" / "report.json").read_text())
    (live,) = [b for b in report["breaches"] if b["action"] == "rollback"]
    assert live["worker"] == "cf-ssai"
    assert live["event_index"] is not None and live["event_index"] > 0

    tail = tails / "cf-ssai.tail.json"
    context = ReplayContext.read(tails / "cf-ssai.context.json")
    assert context.dropped_chunks == 0
    assert context.armed_ms is not None and context.baseline is not None and context.baseline.requests > 0
    assert [b.event_index for b in context.breaches if b.action == "rollback"] == [live["event_index"]]

    capsys.readouterr()
    journal = str(workdir / "replay-journal.sqlite")
    assert main(["replay", str(tail), "--plan", str(plan), "--json", "--no-tty", "--journal", journal]) == 1
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["context"] == "cf-ssai"
    first = next(b for b in replayed["breaches"] if b["action"] == "rollback")
    assert (first["guard"], first["worker"], first["event_index"], first["event_timestamp"]) == \
        (live["guard"], live["worker"], live["event_index"], live["event_timestamp"])

    assert main(["replay", str(tail), "--plan", str(plan), "--no-tty", "--journal", journal]) == 1
    text = capsys.readouterr().out
    assert f"tripped at event #{live['event_index']}: replay agrees" in text

    # Without the context, a baseline given by hand (the recording up to the deploy, where the live run was
    # armed) still rolls it back: the baseline window and the arming point are close to, not exactly, the
    # live run's.  (A fixed "2s" assumed how much of the recording came before the deploy: with the
    # baseline's own uncertainty counted, a thin baseline and clean pre-deploy traffic in the windows could
    # leave the short bad stretch below significance.)
    assert context.baseline is not None
    before_deploy = (context.armed_ms - context.baseline.start_ms) / 1000
    assert main(["replay", str(tail), "--plan", str(plan), "--json", "--baseline", f"{before_deploy:.3f}s",
                 "--no-tty", "--journal", journal]) == 1
    assert json.loads(capsys.readouterr().out)["context"] is None


def test_replay_rejects_a_broken_context(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A context file that is not one is named, with the field that is wrong; exit 2."""
    plan = write_plan(workdir, "")
    tail = workdir / "w.tail.json"
    tail.write_bytes(b"")
    (workdir / "w.context.json").write_text('{"worker": "cf-ssai"}')
    assert main(["replay", str(tail), "--plan", str(plan), "--no-tty",
                 "--journal", str(workdir / "j.sqlite")]) == 2
    out = capsys.readouterr().out
    assert "w.context.json" in out and "baseline" in out
