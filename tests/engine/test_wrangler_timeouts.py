"""Every wrangler call has a timeout; a timeout is transient, so a rollback retries it within its attempts.

Measured bug: with the rollback API call delayed 200 s, an uncaught TimeoutError came out of
``Wrangler.run`` after 180 s (traceback, exit 1, no retry, no report).  The slow API is the simulator's
``[[faults.api]] delay``; the tests use a rollback timeout of a few seconds so they run in seconds.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import psutil  # type: ignore[import-untyped]
import pytest
from rich.console import Console

from rollout._node import bundled_wrangler_cli, wrangler_command
from rollout.bus import Diagnosis, EventBus, RollbackAttempt
from rollout.engine import EngineOptions
from rollout.errors import UsageError, WranglerError, WranglerTimeout
from rollout.rollback import manual_command, rollback_and_verify
from rollout.runner import RunOptions, run_plan
from rollout.sim import Simulator
from rollout.wrangler import (
    DEFAULT_TIMEOUT_S,
    DeploymentState,
    Wrangler,
    WranglerResult,
    command_key,
    parse_timeouts,
)

from .conftest import write_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cf_ssai" / "workers"
PARSER = "cf-ssai-vast-parser"


# -- limits -----------------------------------------------------------------------------------------------

def test_timeouts_per_command_and_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defaults per command, then Wrangler.timeouts, then ROLLOUT_WRANGLER_TIMEOUTS (default= for the rest)."""
    assert command_key(["versions", "deploy", "v@100%", "-y"]) == "versions deploy"
    assert command_key(["rollback", "0b1c", "--name", "w"]) == "rollback"
    assert command_key(["d1", "migrations", "apply", "DB"]) == "d1 migrations"
    plain = Wrangler(command=["wrangler"])
    assert plain.timeout_for(["rollback", "v"]) == 60
    assert plain.timeout_for(["deployments", "status", "--name", "w", "--json"]) == 60
    assert plain.timeout_for(["deploy"]) == 300
    assert plain.timeout_for(["d1", "migrations", "apply"]) == DEFAULT_TIMEOUT_S
    assert Wrangler(command=["w"], timeouts={"rollback": 7}).timeout_for(["rollback", "v"]) == 7
    assert parse_timeouts(" rollback=30, versions-upload=600 ,default=90") == {
        "rollback": 30.0, "versions upload": 600.0, "default": 90.0}
    with pytest.raises(UsageError, match="COMMAND=SECONDS"):
        parse_timeouts("rollback=soon")
    monkeypatch.setenv("ROLLOUT_WRANGLER_TIMEOUTS", "rollback=5,default=20")
    configured = Wrangler.for_project(None, {}, tmp_path)
    assert configured.timeout_for(["rollback", "v"]) == 5
    assert configured.timeout_for(["r2", "bucket", "list"]) == 20
    assert configured.timeout_for(["deploy"]) == 300


HANGS = textwrap.dedent('''
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    open(sys.argv[1], "w").write(str(child.pid))
    print("started", flush=True)
    time.sleep(120)
''')


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A hung command raises WranglerTimeout (transient) in time; it and its children are gone."""
    pid_file = tmp_path / "child.pid"
    wrangler = Wrangler(command=[sys.executable, "-c", HANGS], run_dir=tmp_path / "w")
    started = time.monotonic()
    with pytest.raises(WranglerTimeout) as caught:
        await wrangler.run(str(pid_file), timeout_s=1.5)
    assert time.monotonic() - started < 8
    error = caught.value
    assert isinstance(error, WranglerError) and error.transient and error.timeout_s == 1.5
    assert "did not finish within 1.5 s" in str(error) and "ROLLOUT_WRANGLER_TIMEOUTS" in str(error)
    child = int(pid_file.read_text())

    def gone() -> bool:
        try:
            psutil.Process(child).wait(timeout=5)  # not our child: psutil polls until it has exited
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return bool(psutil.Process(child).status() == psutil.STATUS_ZOMBIE)
        return True

    assert await anyio.to_thread.run_sync(gone)
    assert list((tmp_path / "w").glob("out-*.jsonl")) == []


# -- rollback_and_verify without wrangler --------------------------------------------------------------------

class FakeWrangler:
    """Each rollback does what ``plan`` says: "timeout", "10013" (a failed exit with that code) or "ok"."""

    def __init__(self, plan: Sequence[str], live: str, target: str) -> None:
        self.plan = list(plan)
        self.live, self.target = live, target
        self.calls: list[str] = []

    async def rollback(self, worker: str, version: str, message: str) -> WranglerResult:
        step = self.plan.pop(0)
        self.calls.append(step)
        argv = ("rollback", version, "--name", worker, "--message", message, "-y")
        if step == "timeout":
            raise WranglerTimeout("wrangler rollback did not finish within 2 s and was stopped", argv=argv,
                                  timeout_s=2)
        if step == "ok":
            self.live = version
            return WranglerResult(argv=argv, returncode=0, stdout="", stderr="")
        stderr = ("✘ [ERROR] A request to the Cloudflare API failed.\n\n"
                  f"  An unknown error has occurred [code: {step}]\n")
        return WranglerResult(argv=argv, returncode=1, stdout="", stderr=stderr,
                              records=({"type": "command-failed", "code": int(step), "message": "failed"},))

    async def deployment_status(self, worker: str) -> DeploymentState:
        return DeploymentState(worker=worker, versions=((self.live, 100.0),))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff sleeps rollback_and_verify asks for (not slept)."""
    asked: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr("rollout.rollback.anyio.sleep", fake_sleep)
    return asked


async def test_timeouts_are_retried_and_no_sleep_after_the_last_attempt(sleeps: list[float]) -> None:
    """Timeouts then success: verified at attempt 3; the backoff doubles and stops when the attempts do."""
    bus = EventBus()
    fake = FakeWrangler(["timeout", "timeout", "ok"], live="v2", target="v1")
    outcome = await rollback_and_verify(fake, bus, "w", "v2", "v1", "m", attempts=5, backoff_s=1.0)  # type: ignore[arg-type]
    assert (outcome.attempts, outcome.verified) == (3, True)
    assert sleeps == [1.0, 2.0]
    attempts = [e for e in bus.history if isinstance(e, RollbackAttempt)]
    assert [a.ok for a in attempts] == [False, False, True]
    assert "did not finish within" in attempts[0].detail

    sleeps.clear()
    fake = FakeWrangler(["timeout"] * 4, live="v2", target="v1")
    outcome = await rollback_and_verify(fake, EventBus(), "w", "v2", "v1", "m", attempts=4, backoff_s=4.0)  # type: ignore[arg-type]
    assert (outcome.attempts, outcome.verified) == (4, False)
    assert sleeps == [4.0, 8.0, 16.0]  # and none after the 4th attempt


async def test_failure_names_worker_version_command_and_code(sleeps: list[float]) -> None:
    """Not verified: the detail names the real worker, version, code and command; the code is diagnosed."""
    bus = EventBus()
    fake = FakeWrangler(["10013", "10013", "timeout"], live="v-new", target="v-old")
    outcome = await rollback_and_verify(fake, bus, "cf-ssai", "v-new", "v-old", "m", attempts=3,  # type: ignore[arg-type]
                                        backoff_s=0.5)
    assert not outcome.verified and outcome.attempts == 3
    assert outcome.codes == (10013,)
    assert outcome.command == manual_command("cf-ssai", "v-old") == "wrangler rollback v-old --name cf-ssai -y"
    detail = outcome.detail
    assert "cf-ssai" in detail and "v-old" in detail and "`wrangler rollback v-old --name cf-ssai -y`" in detail
    assert "10013" in detail and "internal error" in detail and "v-new at 100%" in detail
    assert "WORKER" not in detail and "VERSION" not in detail
    (diagnosis,) = [e for e in bus.history if isinstance(e, Diagnosis)]
    assert diagnosis.code == 10013 and diagnosis.phase == "rollback" and diagnosis.fix
    assert "An unknown error has occurred [code: 10013]" in diagnosis.message
    assert sleeps == [0.5, 1.0]


# -- real wrangler against a slow simulator -------------------------------------------------------------------

def slow_rollback_scenario(directory: Path, times: int, base: str = "healthy", rate: float = 0) -> Path:
    """Every matching rollback deployment POST waits 60 s (0 times = forever); nothing fails outright."""
    path = directory / "slow-rollback.toml"
    path.write_text(textwrap.dedent(f'''
        name = "slow-rollback"
        base = "{base}"
        [traffic]
        rate = {rate}
        [[faults.api]]
        call = "rollback"
        delay = 60
        times = {times}
    '''))
    return path


async def _parser_wrangler(sim: Simulator, tmp_path: Path, rollback_s: float) -> Wrangler:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "vast-parser", project)
    env = {**sim.env(), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    wrangler = Wrangler(command=wrangler_command(bundled_wrangler_cli("4.164.0")), env=env,
                        run_dir=tmp_path / "wrangler", timeouts={"rollback": rollback_s})
    assert (await wrangler.deploy(None, cwd=project)).ok
    return wrangler


@pytest.mark.wrangler
async def test_slow_rollback_is_retried_then_verified(tmp_path: Path) -> None:
    """The first two rollbacks hang past the limit and are killed; the third works and is verified."""
    async with Simulator(str(slow_rollback_scenario(tmp_path, times=2))) as sim:
        wrangler = await _parser_wrangler(sim, tmp_path, rollback_s=6)
        v1, v2 = (v.id for v in sim.versions(PARSER))
        assert sim.active_versions(PARSER) == [(v2, 100.0)]
        bus = EventBus()
        outcome = await rollback_and_verify(wrangler, bus, PARSER, v2, v1, "test", attempts=4, backoff_s=0.1)
        assert (outcome.attempts, outcome.verified) == (3, True), outcome.detail
        assert sim.active_versions(PARSER) == [(v1, 100.0)]
    attempts = [e for e in bus.history if isinstance(e, RollbackAttempt)]
    assert [a.ok for a in attempts] == [False, False, True]
    assert all("did not finish within 6 s" in a.detail for a in attempts[:2])


@pytest.mark.wrangler
async def test_rollback_that_always_times_out_fails_clearly(tmp_path: Path) -> None:
    """Every attempt hangs: a clear, unverified outcome naming worker, version and command; nothing raised."""
    async with Simulator(str(slow_rollback_scenario(tmp_path, times=0))) as sim:
        wrangler = await _parser_wrangler(sim, tmp_path, rollback_s=4)
        v1, v2 = (v.id for v in sim.versions(PARSER))
        started = time.monotonic()
        outcome = await rollback_and_verify(wrangler, EventBus(), PARSER, v2, v1, "test", attempts=2, backoff_s=0.1)
        took = time.monotonic() - started
        assert sim.active_versions(PARSER) == [(v2, 100.0)]
    assert (outcome.attempts, outcome.verified) == (2, False)
    assert took < 2 * (4 + 3 + 10)  # two limits plus the status reads, with room for a loaded machine
    assert f"rollback of {PARSER} to {v1} NOT verified after 2 attempt(s)" in outcome.detail
    assert "did not finish within 4 s" in outcome.detail
    assert f"`wrangler rollback {v1} --name {PARSER} -y`" in outcome.detail
    assert f"{v2} at 100%" in outcome.detail


@pytest.mark.wrangler
@pytest.mark.slow
async def test_engine_run_with_hung_rollback_exits_3_with_the_command(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine (limit from ROLLOUT_WRANGLER_TIMEOUTS): exit 3 with the real command, no traceback."""
    monkeypatch.setenv("ROLLOUT_WRANGLER_TIMEOUTS", "rollback=4")
    scenario = slow_rollback_scenario(workdir, times=0, base="bad-release", rate=20)
    plan = write_plan(workdir, 'Deploy(manifest), Watch("40s")')
    console = Console(file=(workdir / "out.txt").open("w"), width=200, color_system=None)
    outcome = await run_plan(RunOptions(
        plan_path=plan, sim=True, scenario=str(scenario), yes=True, report_dir=workdir / "reports",
        journal_path=workdir / ".rollout" / "journal.sqlite", tty=False, console=console,
        engine=EngineOptions(rollback_attempts=2, rollback_backoff_s=0.1)))
    assert outcome.result.exit_code == 3, outcome.result.detail
    report: dict[str, Any] = outcome.report
    before = report["changes"][0]["before"]
    (rollback,) = report["rollbacks"]
    assert rollback["verified"] is False and rollback["attempts"] == 2
    assert f"`wrangler rollback {before} --name cf-ssai -y`" in outcome.result.detail
    assert "did not finish within 4 s" in rollback["detail"]
