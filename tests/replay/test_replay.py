"""rollout replay: the sans-IO core, and the command's output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollout.cli import main
from rollout.guards import ErrorRate, Guard, LogRate, NewExceptions, default_guards
from rollout.replay import replay_bytes

from .helpers import T0, bad_release_items, compact, pretty, write_plan

GUARDS: list[Guard] = [ErrorRate(action="rollback"), LogRate(pattern="do_churn", max_per_hour=50), NewExceptions()]


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.fixture(scope="module")
def bad_release() -> bytes:
    return pretty(bad_release_items())


def test_bad_release_trips_the_error_rate_guard(bad_release: bytes) -> None:
    """The 30% 500s of version 2 trip the rollback guard a few seconds after the onset, with the evidence."""
    result = replay_bytes([bad_release], GUARDS, baseline_ms=30_000)
    assert result.events == 1600
    assert result.parse_errors == 0
    assert result.rolled_back
    breach = next(b for b in result.breaches if b.guard == "error_rate")
    assert breach.action == "rollback"
    assert breach.worker == "cf-ssai"
    onset_index = int(45 * 20)  # version 2 from 40 s, faulty 5 s later, 20 requests a second
    assert onset_index <= breach.event_index < onset_index + 20 * 20
    assert breach.event_timestamp == int((T0 + breach.event_index / 20) * 1000)
    assert "error rate" in breach.detail and "binomial" in breach.detail
    assert result.baselines["cf-ssai"].requests == 600


def test_same_breach_whatever_the_chunking_or_format(bad_release: bytes) -> None:
    """The event index does not depend on how the file was read, nor on pretty vs compact JSON."""
    first = replay_bytes([bad_release], GUARDS, baseline_ms=30_000)
    key = [(b.guard, b.event_index, b.event_timestamp) for b in first.breaches]
    for size in (97, 4096):
        again = replay_bytes(_chunks(bad_release, size), GUARDS, baseline_ms=30_000)
        assert [(b.guard, b.event_index, b.event_timestamp) for b in again.breaches] == key
    flat = replay_bytes(_chunks(compact(bad_release_items()), 1000), GUARDS, baseline_ms=30_000)
    assert [(b.guard, b.event_index, b.event_timestamp) for b in flat.breaches] == key


def test_healthy_recording_trips_nothing() -> None:
    """The healthy scenario's version 2 behaves like version 1: no guard trips."""
    result = replay_bytes([pretty(bad_release_items(scenario="healthy"))], default_guards(), baseline_ms=30_000)
    assert result.events == 1600
    assert result.breaches == ()
    assert not result.rolled_back
    assert result.evaluations > 0


def test_bad_input_is_counted_not_fatal() -> None:
    """Garbage lines, an undecodable object and a truncated object are counted; the events around them count."""
    items = bad_release_items(before_s=2, after_s=0)
    good = pretty(items)
    broken = (b"npm WARN something\n" + pretty(items[:5]) + b'{\n    "outcome": 12\n}\n'
              + b'{\n    "wallTime": 3,\n    "outcome": "o' + b"\n" + good[good.index(b"{"):]
              + b"not json at all\n" + b"{\n    \"cut\": ")
    result = replay_bytes(_chunks(broken, 333), GUARDS, baseline_ms=0)
    assert result.events == 5 + len(items)
    assert result.parse_errors == 5


def test_no_events() -> None:
    """An empty recording is not an error."""
    result = replay_bytes([b""], GUARDS)
    assert (result.events, result.parse_errors, result.breaches, result.armed_ms) == (0, 0, (), None)


# -- the command -------------------------------------------------------------------------------------------


def _run(tmp_path: Path, *args: str) -> int:
    return main(["replay", *args, "--no-tty", "--journal", str(tmp_path / "run" / "journal.db")])


def test_cli_json_shape_and_exit_1(tmp_path: Path, bad_release: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object with events, parse_errors and breaches; a rollback breach exits 1."""
    tail = tmp_path / "bad.tail.json"
    tail.write_bytes(b"garbage\n" + bad_release)
    code = _run(tmp_path, str(tail), "--plan", str(write_plan(tmp_path)), "--json")
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert code == 1
    assert doc["events"] == 1600
    assert doc["parse_errors"] == 1
    breach = next(b for b in doc["breaches"] if b["guard"] == "error_rate")
    assert {"guard", "action", "worker", "event_index", "event_timestamp"} <= set(breach)
    assert breach["action"] == "rollback"
    assert breach["worker"] == "cf-ssai"
    assert isinstance(breach["event_index"], int)


def test_cli_text_and_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a breach the text output says so and the exit code is 0; --baseline overrides the plan's."""
    tail = tmp_path / "ok.tail.json"
    tail.write_bytes(pretty(bad_release_items(scenario="healthy")))
    code = _run(tmp_path, str(tail), "--plan", str(write_plan(tmp_path)), "--baseline", "20s")
    out = capsys.readouterr().out
    assert code == 0
    assert "1600 events" in out
    assert "first 20 s, 400 requests" in out
    assert "no guard would have tripped" in out


def test_cli_text_shows_the_evidence(tmp_path: Path, bad_release: bytes,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The text output names the guard, what it would have done, and its verdict."""
    tail = tmp_path / "bad.tail.json"
    tail.write_bytes(bad_release)
    assert _run(tmp_path, str(tail), "--plan", str(write_plan(tmp_path))) == 1
    out = capsys.readouterr().out
    assert "error_rate on cf-ssai would have ROLLED BACK: error rate" in out


def test_cli_missing_file_and_bad_plan_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing tail file, a broken plan or a bad --baseline exit 2 with a message."""

    def said() -> str:  # the CLI's error line may wrap at the console width
        return " ".join(capsys.readouterr().out.split())

    plan = write_plan(tmp_path)
    assert _run(tmp_path, str(tmp_path / "nope.json"), "--plan", str(plan)) == 2
    assert "no such tail file" in said()
    tail = tmp_path / "t.json"
    tail.write_bytes(b"")
    broken = tmp_path / "broken.py"
    broken.write_text("plan = ")
    assert _run(tmp_path, str(tail), "--plan", str(broken)) == 2
    assert "syntax error" in said()
    assert _run(tmp_path, str(tail), "--plan", str(tmp_path / "missing.py")) == 2
    assert "no such plan file" in said()
    assert _run(tmp_path, str(tail), "--plan", str(plan), "--baseline", "soon") == 2
    assert "--baseline" in said()
