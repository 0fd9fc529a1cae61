"""`rollout pause|resume|promote|abort` steering a real running rollout (CLI, simulator, real wrangler)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .failsafe import ROLLOUT, active, run_env, running, wait_for, write_plan, write_scenario

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]


def control(workdir: Path, sim: Any, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROLLOUT, command, "--no-tty"], cwd=workdir, env=run_env(workdir, sim.env),
                          capture_output=True, text=True, timeout=60)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def test_abort_rolls_back_a_running_rollout_and_verifies(workdir: Path, sim_process: Callable[..., Any]) -> None:
    plan = write_plan(workdir, 'Deploy(app), Watch("10m")')
    sim = sim_process(str(write_scenario(workdir)))
    before = active(sim.env)
    with running(workdir, sim, plan) as proc:
        wait_for(lambda: active(sim.env) != before, 90, "the deploy")
        done = control(workdir, sim, "abort")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "abort: ok — aborting: rolling back what this run changed" in done.stdout
        out = finish(proc)
    assert proc.returncode == 1, out
    assert "aborted by `rollout abort`" in out and "verified" in out
    assert json.loads((workdir / "reports" / "report.json").read_text())["outcome"] == "aborted"
    assert active(sim.env) == before


def test_pause_holds_a_bake_until_resume_and_promote_ends_it_early(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """pause: the next phase does not start (or the 2 s bake does not end) for as long as it is paused;
    resume lets it go on; in the 60 s bake, promote ends the minimum time at once (the evidence is there)."""
    plan = write_plan(workdir, 'Deploy(app), Watch("2s"), Watch("60s")')
    sim = sim_process(str(write_scenario(workdir)))
    before = active(sim.env)
    with running(workdir, sim, plan) as proc:
        wait_for(lambda: active(sim.env) != before, 90, "the deploy")
        paused = control(workdir, sim, "pause")
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stdout + paused.stderr
        time.sleep(8)
        assert proc.poll() is None
        status = control(workdir, sim, "pause")  # still held: before phase 2 starts, or in its bake
        assert "— paused: phase" in status.stdout and "phase 3/3" not in status.stdout, status.stdout
        assert control(workdir, sim, "resume").returncode == 0
        deadline = time.monotonic() + 60
        while True:
            promoted = control(workdir, sim, "promote")
            if "phase 3/3" in promoted.stdout and "bake time skipped" in promoted.stdout:
                break
            assert time.monotonic() < deadline, promoted.stdout
            time.sleep(1)
        started = time.monotonic()
        out = finish(proc)
    assert proc.returncode == 0, out
    assert time.monotonic() - started < 40
    assert "paused by `rollout pause`" in out and "promoted by `rollout promote`" in out


def test_control_without_a_running_rollout_is_a_usage_error(workdir: Path) -> None:
    done = subprocess.run([*ROLLOUT, "abort", "--no-tty"], cwd=workdir, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "no journal" in done.stdout + done.stderr
