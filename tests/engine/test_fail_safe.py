"""Every way a rollout stops ends in a verified rollback, or changes nothing (issue 13).

Each test drives the CLI against a `rollout sim` process with real wrangler 4.164.0, on a worker and a
scenario of our own (see failsafe.py), and asserts the exit code, the words, the report, and which
version is live at the end.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from terminal import read_fd

from .failsafe import (
    ROLLOUT,
    active,
    line_of,
    rollout,
    run_env,
    running,
    versions,
    wait_for,
    write_plan,
    write_scenario,
)

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]

BAD_V2 = "onset_after = 2\nerror_rate = 0.5\nerror_status = 500"


def report(workdir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((workdir / "reports" / "report.json").read_text())
    return data


def test_exception_in_plan_code_after_a_deploy_rolls_back_and_names_the_line(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """A custom phase calling a helper that does not exist: the phase fails, v2 is rolled back and
    verified, the error names plan.py and the line, and no traceback of ours is shown."""
    plan = write_plan(workdir, "Deploy(app), check_it", prelude='''
async def check_it(ctx):
    ctx.no_such_helper()
''')
    sim = sim_process(str(write_scenario(workdir)))
    before = active(sim.env)
    done = rollout(workdir, sim, "run", str(plan), "--yes")
    assert done.returncode == 1, done.stdout
    assert f"plan.py:{line_of(plan, 'no_such_helper')}: AttributeError" in done.stdout
    assert "Traceback" not in done.stdout
    assert report(workdir)["outcome"] == "rolled_back"
    assert active(sim.env) == before


def test_sigterm_during_a_bake_rolls_back_verifies_and_reports(workdir: Path, sim_process: Callable[..., Any]) -> None:
    """A cancelled CI job (SIGTERM) mid-bake: rollback, verified, report written, exit 1, v1 live."""
    plan = write_plan(workdir, 'Deploy(app), Watch("10m")')
    sim = sim_process(str(write_scenario(workdir)))
    before = active(sim.env)
    with running(workdir, sim, plan) as proc:
        wait_for(lambda: active(sim.env) != before, 90, "the deploy")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, out
    assert "SIGTERM received: rolling back" in out
    assert "verified" in out
    assert report(workdir)["outcome"] == "interrupted"
    assert active(sim.env) == before


def test_a_second_signal_exits_at_once_naming_what_is_live(workdir: Path, sim_process: Callable[..., Any]) -> None:
    """SIGINT, then SIGINT again while the (slow) rollback runs: exit 130 at once, and stderr names the
    live version and the exact command that undoes it."""
    plan = write_plan(workdir, 'Deploy(app), Watch("10m")')
    slow = '[[faults.api]]\ncall = "rollback"\ndelay = 60.0\n'
    sim = sim_process(str(write_scenario(workdir, extra=slow)))
    before = active(sim.env)
    with running(workdir, sim, plan, stderr=subprocess.PIPE) as proc:
        wait_for(lambda: active(sim.env) != before, 90, "the deploy")
        proc.send_signal(signal.SIGINT)
        time.sleep(3.0)  # the rollback is now waiting on the slow API
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, out + err
    assert "second SIGINT: exiting now" in err
    assert f"wrangler rollback {before[0]} --name greeter -y" in err


def test_a_watch_does_not_pass_while_a_guard_is_inconclusive_above_its_threshold(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """v2 erring 9% at 5 req/s against a clean v1: never significant within the bake, never ok either.
    The Watch must not promote: it waits for evidence, then fails and rolls back."""
    plan = write_plan(workdir, 'Deploy(app), Watch("10s")', plan_args='\n    evidence_wait="10s",')
    sim = sim_process(str(write_scenario(workdir, rate=5.0, v2="error_rate = 0.09\nerror_status = 500")))
    before = active(sim.env)
    done = rollout(workdir, sim, "run", str(plan), "--yes")
    assert done.returncode == 1, done.stdout
    assert "waiting for evidence" in done.stdout
    assert "succeeded (exit 0)" not in done.stdout
    assert report(workdir)["outcome"] in ("rolled_back",)
    assert active(sim.env) == before


def test_a_worker_without_traffic_has_no_baseline_said_so_and_is_not_promoted(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """No traffic at all: the baseline is stated as absent (never a silent 0%), and the bake cannot be
    judged ok, so the deploy is rolled back rather than promoted."""
    plan = write_plan(workdir, 'Deploy(app), Watch("2s")', plan_args='\n    evidence_wait="3s", baseline_max="3s",')
    sim = sim_process(str(write_scenario(workdir, rate=0.0)))
    before = active(sim.env)
    done = rollout(workdir, sim, "run", str(plan), "--yes")
    assert done.returncode == 1, done.stdout
    assert "no baseline for greeter: 0 requests" in done.stdout
    assert "not promoting without evidence" in done.stdout
    assert active(sim.env) == before


def test_a_gate_without_a_terminal_or_yes_is_refused_before_anything_changes(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    plan = write_plan(workdir, 'Deploy(app), Gate("ship?"), Watch("1s")')
    sim = sim_process(str(write_scenario(workdir)))
    count = versions(sim.env)
    done = rollout(workdir, sim, "run", str(plan), timeout=60)
    assert done.returncode == 2, done.stdout
    assert "pass --yes" in done.stdout and "nothing was changed" in done.stdout
    assert f"plan.py:{line_of(plan, 'Gate(')}" in done.stdout
    assert versions(sim.env) == count


def test_mistakes_in_the_plan_are_caught_before_anything_changes(workdir: Path, sim_process: Callable[..., Any],
                                                                 ) -> None:
    """A typo'd config path and a worker that does not exist: one refusal listing both, exit 2, in
    seconds (no baseline waited out), and no wrangler rollback of an untouched worker."""
    plan = write_plan(workdir, 'Deploy(app), Deploy(ghost), Watch("1s")', prelude='''
ghost = Worker("greeter-typo", config="greeter/wrangler.toml")
app = Worker("greeter", config="greeter/wrangler.tmol")
''')
    plan.write_text(plan.read_text().replace("workers=[app]", "workers=[app, ghost]"))
    sim = sim_process(str(write_scenario(workdir)))
    count = versions(sim.env)
    started = time.monotonic()
    done = rollout(workdir, sim, "run", str(plan), "--yes", timeout=60)
    assert done.returncode == 2, done.stdout
    assert time.monotonic() - started < 45
    assert "wrangler.tmol" in done.stdout and "cannot read the wrangler config" in done.stdout
    assert f"plan.py:{line_of(plan, 'wrangler.tmol')}" in done.stdout
    assert "worker greeter-typo does not exist" in done.stdout and "new=True" in done.stdout
    assert "nothing was changed" in done.stdout
    assert versions(sim.env) == count
    assert "wrangler rollback" not in (workdir / ".rollout" / "rollout.log").read_text()


def test_bad_option_values_are_usage_errors_before_anything_runs(workdir: Path) -> None:
    plan = write_plan(workdir, 'Deploy(app), Watch("1s")')
    for scale in ("-1", "0", "nan", "inf"):
        done = subprocess.run([*ROLLOUT, "run", str(plan), "--sim", "--time-scale", scale, "--no-tty"], cwd=workdir,
                              env={**os.environ, "ROLLOUT_LOCK_DIR": str(workdir / "locks")},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (scale, done.stdout, done.stderr)
        assert "time scale must be a finite number > 0" in done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr


# -- gates, in a real pseudo-terminal ------------------------------------------------------------------

class Terminal:
    """`rollout run` with a pseudo-terminal for stdin/stdout (a person at a keyboard, or not)."""

    def __init__(self, workdir: Path, sim: Any, plan: Path) -> None:
        self.main, child = pty.openpty()
        self.proc = subprocess.Popen([*ROLLOUT, "run", str(plan), "--api-base", sim.api_base, "--no-tty"],
                                     cwd=workdir, env=run_env(workdir, sim.env), stdin=child, stdout=child,
                                     stderr=child, close_fds=True)
        os.close(child)
        self.seen = b""

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"never saw {text!r}: {self.seen[-3000:]!r}"
            assert self.proc.poll() is None or read_fd(self.main, 0.2), f"exited: {self.seen[-3000:]!r}"
            self.seen += read_fd(self.main, 0.3)

    def type(self, text: str) -> None:
        os.write(self.main, text.encode())

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.seen += read_fd(self.main, 0.3)
        self.seen += read_fd(self.main, 0.3)
        code = self.proc.wait(timeout=10)
        return code, self.seen.decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.main)


def test_a_breach_while_a_gate_waits_rolls_back_without_an_answer(workdir: Path,
                                                                  sim_process: Callable[..., Any]) -> None:
    """Nobody answers; v2 starts failing while the question waits: the breach cancels the question and
    the rollback runs at once."""
    plan = write_plan(workdir, 'Deploy(app), Gate("Ship greeter?"), Watch("5s")')
    sim = sim_process(str(write_scenario(workdir, v2=BAD_V2)))
    before = active(sim.env)
    term = Terminal(workdir, sim, plan)
    try:
        term.wait_for("Ship greeter?")
        asked = time.monotonic()
        code, out = term.finish()
    finally:
        term.close()
    assert code == 1, out[-3000:]
    assert time.monotonic() - asked < 60
    assert "no longer waiting for an answer" in out
    assert "BREACH error_rate on greeter" in out
    assert active(sim.env) == before


def test_an_unanswered_gate_rolls_back_at_its_timeout(workdir: Path, sim_process: Callable[..., Any]) -> None:
    plan = write_plan(workdir, 'Deploy(app), Gate("Ship greeter?", timeout="4s"), Watch("1s")')
    sim = sim_process(str(write_scenario(workdir)))
    before = active(sim.env)
    term = Terminal(workdir, sim, plan)
    try:
        term.wait_for("Ship greeter?")
        code, out = term.finish()
    finally:
        term.close()
    assert code == 1, out[-3000:]
    assert "no answer within 4.0s" in out and "on_timeout='rollback'" in out
    assert active(sim.env) == before


def test_a_gate_asks_again_on_an_unknown_answer_and_says_what_no_does(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    plan = write_plan(workdir, 'Deploy(app), Gate("Ship greeter?"), Watch("2s")')
    sim = sim_process(str(write_scenario(workdir)))
    before = active(sim.env)
    term = Terminal(workdir, sim, plan)
    try:
        term.wait_for("Ship greeter?")
        assert "no: roll back what this rollout changed" in term.seen.decode("utf-8", "replace")
        term.type("maybe\n")
        term.wait_for("please answer y (yes) or n (no)")
        term.type("y\n")
        code, out = term.finish()
    finally:
        term.close()
    assert code == 0, out[-3000:]
    assert active(sim.env) != before


def test_sigterm_before_any_change_stops_with_143_and_changes_nothing(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """SIGTERM while the baseline is measured: nothing was deployed, nothing is rolled back, exit 143."""
    plan = write_plan(workdir, 'Deploy(app), Watch("1s")')
    plan.write_text(plan.read_text().replace('baseline="2s"', 'baseline="60s"'))
    sim = sim_process(str(write_scenario(workdir)))
    count = versions(sim.env)
    with running(workdir, sim, plan) as proc:
        assert proc.stdout is not None
        seen = ""
        while "measuring baseline" not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, seen + out
    assert "nothing was changed" in out
    assert "wrangler rollback" not in (workdir / ".rollout" / "rollout.log").read_text()
    assert versions(sim.env) == count


def test_a_release_inside_the_line_is_not_rolled_back_by_a_thin_baseline(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """v1 errs 4%, v2 7.5% (inside baseline + 5 points) and a short baseline: the baseline waits for its
    tail and its requests, a breach must clear the baseline's own upper bound, so there is no (false)
    breach; evidence of health accumulates over the bake."""
    plan = write_plan(workdir, 'Deploy(app), Watch("20s")', plan_args='\n    evidence_wait="60s",')
    plan.write_text(plan.read_text().replace('baseline="2s"', 'baseline="3s"'))
    scenario = write_scenario(workdir, rate=60.0, v2="error_rate = 0.075\nerror_status = 500")
    scenario.write_text(scenario.read_text().replace('''[[workers.greeter.routes]]''', '''[workers.greeter.behaviour]
error_rate = 0.04
error_status = 500

[[workers.greeter.routes]]''', 1))
    sim = sim_process(str(scenario))
    done = rollout(workdir, sim, "run", str(plan), "--yes")
    requests = [int(line.split(": ")[1].split()[0]) for line in done.stdout.splitlines() if "baseline greeter:" in line]
    assert requests and requests[0] >= 30, done.stdout
    assert "BREACH" not in done.stdout, done.stdout
    assert done.returncode in (0, 1), done.stdout


def test_github_actions_gets_groups_annotations_and_the_step_summary(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """GITHUB_ACTIONS=true: a ::group:: per phase, ::error:: for the breach, and summary.md appended to
    $GITHUB_STEP_SUMMARY."""
    plan = write_plan(workdir, 'Deploy(app), Watch("20s")')
    sim = sim_process(str(write_scenario(workdir, v2=BAD_V2)))
    summary = workdir / "step-summary.md"
    summary.write_text("# earlier step\n")
    env = {**run_env(workdir, sim.env), "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    done = subprocess.run([*ROLLOUT, "run", str(plan), "--api-base", sim.api_base, "--yes"], cwd=workdir, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    assert "::group::phase 1: deploy greeter" in lines
    assert lines.count("::endgroup::") == 2
    assert any(line.startswith("::error title=breach%3A error_rate on greeter::error rate") for line in lines)
    text = summary.read_text()
    assert text.startswith("# earlier step\n") and "greeter rollout" in text and "rolled back" in text


def test_a_deploy_that_fails_changes_nothing_and_nothing_is_rolled_back(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """The deploy is refused by the API (code 10021): the worker is verified unchanged, no `wrangler rollback`
    runs, and the outcome says it failed with nothing changed, not "rolled back"."""
    plan = write_plan(workdir, 'Deploy(app), Watch("2s")')
    refuse = ('[[faults.api]]\ncall = "deploy"\nstatus = 400\ncode = 10021\n'
              'message = "Binding type \'Images\' is not valid"\n')
    sim = sim_process(str(write_scenario(workdir, extra=refuse)))
    before = active(sim.env)
    done = rollout(workdir, sim, "run", str(plan), "--yes")
    assert done.returncode == 1, done.stdout
    assert "nothing was changed (verified" in done.stdout
    assert "wrangler rollback" not in (workdir / ".rollout" / "rollout.log").read_text()
    data = report(workdir)
    assert data["outcome"] == "failed" and data["rollbacks"] == []
    assert "rolled back (verified)" not in (workdir / "reports" / "summary.md").read_text()
    assert active(sim.env) == before
