"""A worker of our own ("greeter"), a scenario of our own, and a plan around them, for the off-path tests.

Everything runs through the CLI against a `rollout sim` process with real wrangler, so a test can ask the
simulator afterwards which version is live.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROLLOUT = [sys.executable, "-m", "rollout.cli"]

WORKER = "greeter"


def write_project(directory: Path) -> Path:
    """The greeter worker's project: wrangler.toml and its script.  Returns the config path."""
    (directory / "greeter" / "src").mkdir(parents=True, exist_ok=True)
    (directory / "greeter" / "src" / "index.js").write_text(
        'export default { async fetch(request) { return new Response("hello"); } };\n')
    config = directory / "greeter" / "wrangler.toml"
    config.write_text('name = "greeter"\nmain = "src/index.js"\ncompatibility_date = "2026-11-01"\n')
    return config


def write_scenario(directory: Path, *, rate: float = 20.0, v2: str = "", extra: str = "") -> Path:
    """Greeter pre-seeded at version 1; ``v2`` is the TOML body of version 2's behaviour."""
    text = f'''
name = "greeter"
description = "one small worker of our own"
seed = 11

[traffic]
rate = {rate}

[workers.greeter]
preseed = true

[[workers.greeter.routes]]
path = "/hello"
body = "hello"
weight = 1

[workers.greeter.versions.2]
{v2}
{extra}
'''
    path = directory / "greeter.toml"
    path.write_text(textwrap.dedent(text))
    return path


def write_plan(directory: Path, phases: str, *, prelude: str = "", plan_args: str = "",
               worker_args: str = "") -> Path:
    config = write_project(directory)
    text = f'''
from phases import Deploy, Gate, Smoke, Watch
from probes import Status
from rollout import Plan, Worker
from rollout.guards import ErrorRate

app = Worker("greeter", config={str(config)!r}{worker_args})
{prelude}
plan = Plan(
    name="greeter rollout",
    workers=[app],
    baseline="2s",
    recovery="2s",
    guards=[ErrorRate(above_baseline_by=0.05, min_samples=30)],
    phases=[{phases}],{plan_args}
)
'''
    path = directory / "plan.py"
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of ``path`` holding ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def active(env: dict[str, str], worker: str = WORKER) -> list[str]:
    """The versions of the worker's newest deployment."""
    url = (f"{env['CLOUDFLARE_API_BASE_URL']}/accounts/{env['CLOUDFLARE_ACCOUNT_ID']}/workers/scripts/"
           f"{worker}/deployments")
    data = httpx.get(url, headers={"Authorization": f"Bearer {env['CLOUDFLARE_API_TOKEN']}"}, trust_env=False).json()
    return [v["version_id"] for v in data["result"]["deployments"][0]["versions"]]


def versions(env: dict[str, str], worker: str = WORKER) -> int:
    url = (f"{env['CLOUDFLARE_API_BASE_URL']}/accounts/{env['CLOUDFLARE_ACCOUNT_ID']}/workers/scripts/"
           f"{worker}/versions")
    data = httpx.get(url, headers={"Authorization": f"Bearer {env['CLOUDFLARE_API_TOKEN']}"}, trust_env=False).json()
    return len(data["result"]["items"])


def run_env(workdir: Path, sim_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **sim_env, "ROLLOUT_LOCK_DIR": str(workdir / "locks"), "COLUMNS": "200",
            "XDG_CONFIG_HOME": str(workdir / "xdg")}


def rollout(workdir: Path, sim: Any, *args: str, timeout: float = 180, stdin: Any = subprocess.DEVNULL,
            ) -> subprocess.CompletedProcess[str]:
    """``rollout ARGS --api-base SIM --no-tty`` in ``workdir``; output is stdout and stderr together."""
    return subprocess.run([*ROLLOUT, *args, "--api-base", sim.api_base, "--no-tty"], cwd=workdir,
                          env=run_env(workdir, sim.env), stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextlib.contextmanager
def running(workdir: Path, sim: Any, plan: Path, *extra: str,
            stderr: int = subprocess.STDOUT) -> Iterator[subprocess.Popen[str]]:
    """``rollout run PLAN --api-base SIM --no-tty`` in the background; killed if still running at the end."""
    proc = subprocess.Popen([*ROLLOUT, "run", str(plan), "--api-base", sim.api_base, "--no-tty", *extra],
                            cwd=workdir, env=run_env(workdir, sim.env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
