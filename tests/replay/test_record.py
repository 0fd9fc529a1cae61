"""rollout record: saves the raw tail of a worker for replay (real wrangler against the simulator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollout.cli import main

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]


def test_record_from_the_simulator_then_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A few seconds of the simulator's tail are saved as wrangler printed them, and replay reads them all."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cf-ssai.tail.json"
    journal = str(tmp_path / "run" / "journal.db")
    assert main(["record", "cf-ssai", "--for", "8s", "--sim", "--out", str(out), "--no-tty",
                 "--journal", journal]) == 0
    data = out.read_bytes()
    assert data.startswith(b'{\n    "')
    capsys.readouterr()
    plan = tmp_path / "plan.py"
    plan.write_text('from rollout import Plan, Worker\nplan = Plan(name="p", workers=[Worker("cf-ssai")], '
                    'phases=[], baseline="2s")\n')
    assert main(["replay", str(out), "--plan", str(plan), "--json", "--no-tty", "--journal", journal]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["events"] == data.count(b'\n    "outcome": ')
    assert doc["parse_errors"] == 0


def test_record_bad_duration_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--for must be a duration."""
    assert main(["record", "cf-ssai", "--for", "a while", "--no-tty",
                 "--journal", str(tmp_path / "journal.db")]) == 2
    assert "--for" in capsys.readouterr().out
