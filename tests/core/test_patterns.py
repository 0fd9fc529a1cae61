"""Plans name their own log patterns: ``LogRate(pattern=...)`` is a default name, a substring or a regular
expression, and every monitor (engine, watch, replay, metrics) counts the plan's patterns besides the defaults."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from rollout.board import GuardBoard
from rollout.bus import EventBus
from rollout.cli import main
from rollout.errors import PlanError
from rollout.guards import ErrorRate, Guard, LogRate, NewExceptions
from rollout.metrics import Totals, TotalsCollector
from rollout.monitor import Monitor
from rollout.patterns import DEFAULT_PATTERNS, describe_pattern, pattern_key, patterns_for
from rollout.replay import replay_bytes, replay_file
from rollout.signals import WorkerSignals
from rollout.sources import SourceStatus

from .helpers import T0, ev, pretty, trace

KEY = re.compile(r"[a-z0-9_]{1,47}")


def counts(guards: list[Guard], logs: list[str]) -> dict[str, int]:
    """What signals built with ``patterns_for(guards)`` count for one event per line of ``logs``."""
    signals = WorkerSignals("my-worker", patterns=patterns_for(guards))
    for i, line in enumerate(logs):
        signals.add(ev(t=T0 + i, logs=[[line]]))
    return dict(signals.window(T0, T0 + len(logs) + 1).pattern_counts)


# -- what a pattern is ---------------------------------------------------------------------------------------


def test_a_default_name_is_its_own_key_and_rule() -> None:
    """LogRate("do_churn") works as before: key do_churn, name do_churn_per_hour, the runbook's substring."""
    guard = LogRate(pattern="do_churn")
    assert (guard.key, guard.name) == ("do_churn", "do_churn_per_hour")
    assert patterns_for([guard]) == dict(DEFAULT_PATTERNS)
    got = counts([guard], ["⚠️  DO Instance Churn: id=1", "nothing", "DO Instance Churn again"])
    assert got["do_churn"] == 2


def test_a_substring_is_counted_under_a_sanitised_name() -> None:
    """Any other str is a substring; its key and the guard's name are made of [a-z0-9_]."""
    guard = LogRate(pattern="greet failed", max_per_hour=10)
    assert (guard.key, guard.name) == ("greet_failed", "greet_failed_per_hour")
    assert patterns_for([guard])["greet_failed"] == "greet failed"
    got = counts([guard], ["greet failed: upstream 502", "Greet failed", "greet  failed", "x greet failed y"])
    assert got["greet_failed"] == 2
    assert {k: got[k] for k in DEFAULT_PATTERNS} == dict.fromkeys(DEFAULT_PATTERNS, 0)  # defaults still there


def test_a_regular_expression_is_searched() -> None:
    """A compiled re.Pattern is searched in each line; its key carries a hash of the expression."""
    guard = LogRate(pattern=re.compile(r"greet (failed|timed out)"))
    assert re.fullmatch(r"greet_failed_timed_out_[0-9a-f]{6}", guard.key), guard.key
    assert guard.name == f"{guard.key}_per_hour"
    got = counts([guard], ["greet failed", "greet timed out after 3 s", "greet ok", "GREET FAILED"])
    assert got[guard.key] == 2
    flags = LogRate(pattern=re.compile(r"greet failed", re.IGNORECASE))
    assert counts([flags], ["GREET FAILED", "greet failed", "greet"])[flags.key] == 2
    assert flags.key != LogRate(pattern=re.compile(r"greet failed")).key != "greet_failed"


def test_a_substring_that_starts_with_re_colon_is_still_a_substring() -> None:
    """The signals read ``re:...`` as an expression; a plan's substring that starts so is matched literally."""
    guard = LogRate(pattern="re:a.c x")
    got = counts([guard], ["re:a.c x", "re:abc x", "abc x"])
    assert got[guard.key] == 1


@pytest.mark.parametrize("typo", ["do_chrun", "do_churns", "timeout", "greet_failed", "x"])
def test_an_identifier_that_is_not_a_default_name_is_refused(typo: str) -> None:
    """A str of only [a-z0-9_] that is not a default name is a plan error at load, naming the plan line, the
    default names, and how to write a substring or an expression instead."""
    with pytest.raises(PlanError) as info:
        LogRate(pattern=typo, max_per_hour=50)
    text = str(info.value)
    assert text.startswith(f"{__file__}:")
    assert f"{typo!r} is not a pattern name" in text
    assert "do_churn, do_young, do_created, persisted" in text
    assert "substring with a space or punctuation" in text and f"re.compile({typo!r})" in text
    assert isinstance(info.value, ValueError)  # as the guards' checks were before


def test_a_typo_of_a_default_name_suggests_it() -> None:
    with pytest.raises(PlanError, match=r"'do_chrun' is not a pattern name \(did you mean 'do_churn'\?\)"):
        LogRate(pattern="do_chrun")


@pytest.mark.parametrize(("pattern", "message"), [
    ("", "must be a pattern name such as 'do_churn', a substring"),
    ("   ", "got the empty str '   '"),
    (42, "got the int 42"),
    (None, "got None"),
    (re.compile(b"greet"), "must be compiled from a str, not bytes"),
])
def test_bad_patterns_are_plan_errors(pattern: Any, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        LogRate(pattern=pattern)


@pytest.mark.parametrize("pattern", ["Timeout", "greet failed", "greet-failed", "5xx!", "größe", "do churn",
                                     re.compile("timeout")])
def test_words_with_capitals_punctuation_or_spaces_and_expressions_are_accepted(pattern: str) -> None:
    assert KEY.fullmatch(LogRate(pattern=pattern).key)


def test_keys_are_safe_bounded_distinct_and_stable() -> None:
    """Keys are [a-z0-9_] of at most 47 characters; distinct patterns get distinct keys, the same pattern the
    same key in every run (a recorded context's baseline counts go by it)."""
    patterns: list[str | re.Pattern[str]] = [
        "greet failed", "Greet failed", "greet failed!", "greet  failed", "do churn", "DO Instance Churn",
        "a" * 40 + " b", "a" * 40 + " c", "x" * 500, "💥 boom", "\"quoted\" {json}", "line\nbreak",
        re.compile("greet failed"), re.compile("greet failed", re.I), "re:greet failed",
    ]
    keys = [pattern_key(p) for p in patterns]
    assert all(KEY.fullmatch(k) for k in keys), keys
    assert len(set(keys)) == len(keys), keys
    assert "do_churn" not in keys  # a substring never takes a default name's key
    assert pattern_key("Greet failed") == "greet_failed_b06735"
    assert pattern_key("💥 boom") == pattern_key("💥 boom")
    assert LogRate(pattern="greet failed").name == "greet_failed_per_hour"


def test_patterns_for_merges_the_defaults_and_every_guard_once() -> None:
    """Two guards on one pattern (warn at 10/h, roll back at 100/h) count it once; other guards add nothing."""
    guards: list[Guard] = [ErrorRate(), NewExceptions(),
                           LogRate(pattern="greet failed", max_per_hour=10, action="warn"),
                           LogRate(pattern="greet failed", max_per_hour=100, name="greet_storm"),
                           LogRate(pattern="do_young", max_per_hour=100)]
    got = patterns_for(guards)
    assert list(got) == [*DEFAULT_PATTERNS, "greet_failed"]
    assert patterns_for(guards, {"only": "this"}) == {"only": "this", "greet_failed": "greet failed", "do_young":
                                                      "Young DO instance"}


def test_a_key_collision_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct patterns with one key (a 24-bit hash collision) cannot share a count: refused, not merged."""
    import rollout.patterns as patterns

    guards = [LogRate(pattern="greet failed"), LogRate(pattern="greet timed out")]
    monkeypatch.setattr(patterns, "pattern_key", lambda p: "same")
    with pytest.raises(ValueError, match="both count as 'same'"):
        patterns.patterns_for(guards)


def test_the_verdict_names_the_pattern() -> None:
    signals = WorkerSignals("my-worker", patterns=patterns_for([LogRate(pattern="greet failed")]))
    for i in range(40):
        signals.add(ev(t=T0 + i * 100, logs=[["greet failed"]] if i % 2 else [["ok"]]))
    verdict = LogRate(pattern="greet failed", max_per_hour=10).evaluate(signals, None, T0 + 4_000)
    assert verdict.state == "breach"
    assert verdict.guard == "greet_failed_per_hour"
    assert verdict.detail.startswith("'greet failed' ")
    assert describe_pattern(re.compile("a|b")) == "re.compile('a|b')"


# -- monitors count the plan's patterns ----------------------------------------------------------------------


class _NoSource:
    status = SourceStatus(connected=True)

    async def run(self, on_chunk: object) -> None:  # pragma: no cover - never run
        return None


def test_a_monitor_counts_its_boards_patterns_and_exports_them() -> None:
    """A monitor built with a board (as the engine and the watch build theirs) counts the board's guards'
    patterns; the exact totals and the metric's pattern label carry the sanitised key."""
    guard = LogRate(pattern="greet failed", max_per_hour=10)
    board = GuardBoard([guard], EventBus())
    monitor = Monitor("my-worker", _NoSource(), board=board, clock=lambda: 0.0)
    assert "greet_failed" in monitor.signals.patterns and "do_churn" in monitor.signals.patterns
    totals = Totals.for_monitor(monitor)
    monitor.on_events = totals.observe
    monitor.feed(pretty(*[trace(t=T0 + i, logs=[["greet failed: 502"]]) for i in range(3)], trace(t=T0 + 9)))
    monitor.feed(pretty(trace(t=T0 + 10)))
    assert totals.patterns_total()["greet_failed"] == 3
    collector = TotalsCollector()
    collector.add(totals)
    family = next(f for f in collector.collect() if f.name == "rollout_log_pattern_matches")
    labels = {s.labels["pattern"]: s.value for s in family.samples}
    assert labels["greet_failed"] == 3
    assert all(KEY.fullmatch(label) for label in labels)
    assert Monitor("my-worker", _NoSource(), clock=lambda: 0.0).signals.patterns == dict(DEFAULT_PATTERNS)


# -- end to end: a recorded tail through replay -------------------------------------------------------------


def greet_tail(*, failing_from_s: float = 40.0, seconds: float = 70.0, rps: int = 20) -> bytes:
    """A recording of my-worker at ``rps``: healthy, then from ``failing_from_s`` one request in four logs
    ``greet failed: upstream 502`` (1,800 lines an hour is 5 a second)."""
    items = []
    for i in range(int(seconds * rps)):
        t = T0 + i * 1000 // rps
        failing = i >= failing_from_s * rps and i % 4 == 0
        items.append(trace(t=t, logs=[["greet failed: upstream 502", {"status": 502}]] if failing else
                           [["greeted", "alice"]]))
    return pretty(*items)


GREET = LogRate(pattern="greet failed", max_per_hour=60, window_s=60, action="rollback")


def test_replay_breaches_a_plan_pattern_guard(tmp_path: Path) -> None:
    """A recorded tail with "greet failed" lines breaches LogRate(pattern="greet failed"); before plans
    could name patterns, this guard stayed ``no_data`` for ever."""
    tail = tmp_path / "my-worker.tail.json"
    tail.write_bytes(greet_tail())
    result = replay_file(tail, [GREET, ErrorRate()], baseline_ms=30_000)
    assert result.parse_errors == 0 and result.parse_warnings == 0
    (breach,) = result.breaches
    assert (breach.guard, breach.action, breach.worker) == ("greet_failed_per_hour", "rollback", "my-worker")
    assert 40 * 20 <= breach.event_index < 45 * 20
    assert "'greet failed'" in breach.detail and "Poisson" in breach.detail
    assert result.rolled_back
    # the same without the lines: nothing trips
    assert replay_bytes([greet_tail(failing_from_s=1e9)], [GREET], baseline_ms=30_000).breaches == ()


def test_replay_command_with_a_plan_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rollout replay --json`` with a plan whose guard names a substring reports that guard, exit 1."""
    tail = tmp_path / "my-worker.tail.json"
    tail.write_bytes(greet_tail())
    plan = tmp_path / "plan.py"
    plan.write_text(textwrap.dedent('''
        import re
        from rollout import Plan, Worker
        from rollout.guards import LogRate

        plan = Plan(
            name="greeter", workers=[Worker("my-worker")], phases=[], baseline="30s",
            guards=[LogRate(pattern="greet failed", max_per_hour=60, window_s=60, action="rollback"),
                    LogRate(pattern=re.compile(r"greet (failed|timed out)"), max_per_hour=60, action="warn")],
        )
    '''))
    code = main(["replay", str(tail), "--plan", str(plan), "--json", "--no-tty", "--journal",
                 str(tmp_path / "run" / "journal.db")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    guards = {b["guard"] for b in doc["breaches"]}
    assert "greet_failed_per_hour" in guards
    assert any(re.fullmatch(r"greet_failed_timed_out_[0-9a-f]{6}_per_hour", g) for g in guards), guards


def test_a_typo_in_a_plan_is_refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rollout replay`` with a plan that says pattern="do_chrun" exits 2 naming the plan's line."""
    plan = tmp_path / "plan.py"
    plan.write_text(textwrap.dedent('''
        from rollout import Plan, Worker
        from rollout.guards import LogRate

        plan = Plan(name="typo", workers=[Worker("my-worker")], phases=[],
                    guards=[LogRate(pattern="do_chrun", max_per_hour=50)])
    '''))
    tail = tmp_path / "t.tail.json"
    tail.write_bytes(greet_tail(seconds=1))
    code = main(["replay", str(tail), "--plan", str(plan), "--no-tty", "--journal",
                 str(tmp_path / "run" / "journal.db")])
    captured = capsys.readouterr()
    assert code == 2
    assert "plan.py:6" in captured.out + captured.err
    assert "did you mean 'do_churn'" in captured.out + captured.err


# -- live: a watch against the simulator ----------------------------------------------------------------------

GREET_SCENARIO = """
name = "greet-failed"
base = "healthy"

[workers.cf-ssai.versions.2]
onset_after = 1
fault = true

[[workers.cf-ssai.versions.2.fault_logs]]
message = "greet failed: upstream 502 for {channel}"
level = "error"
per_hour = 36000
"""


@pytest.mark.wrangler
async def test_a_live_watch_breaches_a_plan_pattern(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rollout watch`` over the tail WebSocket of the simulator: version 2 logs "greet failed" 10 times a
    second and the plan's LogRate(pattern="greet failed") guard breaches (alert-only: nothing rolled back)."""
    from rollout.sim import Simulator
    from rollout.watch import WatchOptions, WatchResult, run_watch

    scenario = workdir / "greet.toml"
    scenario.write_text(GREET_SCENARIO)
    results: list[WatchResult] = []
    async with Simulator(scenario=str(scenario), traffic_rate=20) as sim, anyio.create_task_group() as tg:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        options = WatchOptions(
            workers=["cf-ssai"], duration_s=14, api_base=sim.api_base_url, source="ws", baseline_s=0, tty=False,
            guards=[LogRate(pattern="greet failed", max_per_hour=60, window_s=60, action="alert")],
            console=Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None),
            journal_path=workdir / ".rollout" / "journal.sqlite")

        done = anyio.Event()

        async def watch() -> None:
            results.append(await run_watch(options))
            done.set()

        tg.start_soon(watch)
        await anyio.sleep(5)
        target = sim.state.worker("cf-ssai")  # a deploy: the next version takes all the traffic
        assert target is not None
        version = sim.state.add_version(target, source="api", annotations={}, compatibility_date="2026-04-01",
                                        bindings=[], modules=["index.js"])
        sim.state.deploy(target, [(version.id, 100.0)], source="api")
        with anyio.fail_after(60):
            await done.wait()
        tg.cancel_scope.cancel()
    (result,) = results
    assert [b.guard for b in result.breaches] == ["greet_failed_per_hour"], result.lines()
    assert "'greet failed'" in result.breaches[0].detail
    assert result.rollbacks == ()
