"""`rollout rollback --last` after the runner was SIGKILLed mid-watch, and `rollout status`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import write_plan

pytestmark = pytest.mark.wrangler

ROLLOUT = [sys.executable, "-m", "rollout.cli"]


def active(env: dict[str, str], worker: str) -> list[tuple[str, float]]:
    url = (f"{env['CLOUDFLARE_API_BASE_URL']}/accounts/{env['CLOUDFLARE_ACCOUNT_ID']}/workers/scripts/"
           f"{worker}/deployments")
    data = httpx.get(url, headers={"Authorization": f"Bearer {env['CLOUDFLARE_API_TOKEN']}"}, trust_env=False).json()
    newest = data["result"]["deployments"][0]
    return [(v["version_id"], float(v["percentage"])) for v in newest["versions"]]


def wait_for_change(journal: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.exists():
            with sqlite3.connect(journal) as db:
                try:
                    if db.execute("SELECT count(*) FROM changes WHERE state='done'").fetchone()[0]:
                        return
                except sqlite3.OperationalError:
                    pass
        time.sleep(0.3)
    raise AssertionError("the rollout never recorded a deploy")


def test_rollback_last_after_sigkill(workdir: Path, sim_process: Callable[..., Any]) -> None:
    """The journal written before SIGKILL is enough to roll back what the killed run deployed."""
    sim = sim_process()
    env = sim.env
    before = active(env, "cf-ssai")
    plan = write_plan(workdir, 'Deploy(manifest), Watch("10m")', baseline="1s")
    runner_env = {**os.environ, **env}
    run = subprocess.Popen([*ROLLOUT, "run", str(plan), "--api-base", env["CLOUDFLARE_API_BASE_URL"], "--no-tty"],
                           cwd=workdir, env=runner_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = workdir / ".rollout" / "journal.sqlite"
    try:
        wait_for_change(journal)
        time.sleep(1.0)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert active(env, "cf-ssai") != before
    status = subprocess.run([*ROLLOUT, "status", "--no-tty"], cwd=workdir, env=runner_env, capture_output=True,
                            text=True, check=True)
    assert f"killed (pid {run.pid} gone)" in status.stdout
    result = subprocess.run([*ROLLOUT, "rollback", "--last", "--yes", "--no-tty", "--api-base",
                             env["CLOUDFLARE_API_BASE_URL"]], cwd=workdir, env=runner_env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout
    assert active(env, "cf-ssai") == before
