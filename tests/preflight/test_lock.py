"""The rollout lock: across processes on this machine, and across machines through KV."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollout.errors import LockHeld
from rollout.lock import AccountLock, Holder, LocalLock, hold_locks, lock_scope
from rollout.sim import Simulator

from .conftest import VAST_PARSER, rollout_argv, write

PLAN = f'''
from phases import Watch
from rollout import Plan, Worker

plan = Plan(name="lock test", workers=[Worker("cf-ssai-vast-parser", config={str(VAST_PARSER / "wrangler.toml")!r},
                                              watch=False)],
            baseline="0s", phases=[Watch("{{seconds}}s")])
'''


def _wait_for_lock(locks: Path, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while not locks.exists() or sum(1 for p in locks.glob("*.lock") if p.stat().st_size) < count:
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.1)


def test_second_run_on_one_simulator_exits_2_naming_the_holder_then_runs(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """Two `rollout run` of one plan against one simulator: the second exits 2 naming pid and since; after the
    first, it runs."""
    plan = write(workdir / "plan.py", PLAN.replace("{seconds}", "6"))
    sim = sim_process()
    env = {**os.environ, **sim.env, "ROLLOUT_LOCK_DIR": str(workdir / "locks"), "COLUMNS": "400"}
    argv = rollout_argv("run", str(plan), "--api-base", sim.api_base, "--yes", "--no-tty")
    first = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_lock(workdir / "locks")
        second = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        refusal = second.stdout + second.stderr
        assert f"pid {first.pid} on " in refusal
        assert "plan 'lock test'" in refusal and " since " in refusal
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    third = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stdout + third.stderr


def test_two_rehearsals_against_their_own_simulators_both_run(workdir: Path) -> None:
    """`rollout run --sim` twice at once on one machine: each simulator is its own account, so neither is
    refused (a machine-wide lock made one person's rehearsal refuse another's)."""
    plan = write(workdir / "plan.py", PLAN.replace("{seconds}", "6"))
    env = {**os.environ, "ROLLOUT_LOCK_DIR": str(workdir / "locks"), "COLUMNS": "400"}
    argv = rollout_argv("run", str(plan), "--sim", "--yes", "--no-tty")
    runs = [subprocess.Popen(argv, cwd=workdir / name, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for name in ("a", "b") if (workdir / name).mkdir() is None]
    try:
        outputs = [run.communicate(timeout=90)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert len(list((workdir / "locks").glob("sim-*.lock"))) == 2


def test_local_lock_is_exclusive_and_a_stale_one_is_taken_over(workdir: Path) -> None:
    """A held flock refuses a second taker; a file left by a dead runner (no flock) is simply taken."""
    holder = Holder(4242, "ci-1", "p", "abc", time.time() - 60, "w")
    first, second = LocalLock("s", "w"), LocalLock("s", "w")
    first.acquire(holder)
    with pytest.raises(LockHeld, match="pid 4242 on ci-1"):
        second.acquire(holder)
    assert first._fd is not None
    os.close(first._fd)  # the runner died: the kernel drops its flock, the file stays
    first._fd = None
    assert json.loads(first.path.read_text())["pid"] == 4242
    second.acquire(Holder(os.getpid(), "here", "p", None, time.time(), "w"))
    assert second.read_holder() is not None and second.read_holder().host == "here"  # type: ignore[union-attr]
    second.release()


def test_unlock_asks_and_removes(workdir: Path) -> None:
    """`rollout unlock W` shows the holder; without a terminal it does not ask and keeps the lock (exit 2);
    --yes removes it.  (Asking on a terminal: tests/engine/test_exit_codes.py.)"""
    lock = LocalLock(lock_scope({"CLOUDFLARE_API_BASE_URL": "x", "CLOUDFLARE_ACCOUNT_ID": "0" * 32}), "w")
    lock.acquire(Holder(4242, "ci-1", "p", None, time.time(), "w"))
    env = {**os.environ, "ROLLOUT_LOCK_DIR": str(workdir / "locks"), "CLOUDFLARE_ACCOUNT_ID": "0" * 32,
           "COLUMNS": "400"}
    asked = subprocess.run(rollout_argv("unlock", "w", "--sim"), input="n\n", capture_output=True, text=True,
                           env=env, cwd=workdir, timeout=30)
    assert asked.returncode == 2 and "pid 4242 on ci-1" in asked.stdout
    assert "stdin is not a terminal: pass --yes" in asked.stdout and "Traceback" not in asked.stderr
    assert lock.path.exists()
    done = subprocess.run(rollout_argv("unlock", "w", "--sim", "--yes"), capture_output=True, text=True, env=env,
                          cwd=workdir, timeout=30)
    assert done.returncode == 0 and "removed" in done.stdout
    assert not lock.path.exists()
    lock.release()


async def test_account_lock_in_kv(workdir: Path) -> None:
    """lock="account": a KV record; a second runner (other machine) is refused; released at the end."""
    async with Simulator(traffic_rate=0) as sim, httpx.AsyncClient(trust_env=False) as http:
        env = sim.env()
        async with hold_locks(["w"], env=env, plan="p", commit="c0ffee", account=True, http=http, ttl_s=600):
            other = AccountLock(http, sim.api_base_url, sim.account_id, sim.api_token, settle_s=0)
            with pytest.raises(LockHeld, match="commit c0ffee"):
                await other.acquire(Holder(1, "ci-2", "p", None, time.time(), "w", "other", time.time() + 600), 600)
        assert await other.read("w") is None
        stale = Holder(1, "ci-2", "p", None, time.time() - 700, "w", "old", time.time() - 100)
        assert stale.expires is not None
        await other.acquire(Holder(2, "ci-3", "p", None, time.time(), "w", "new", time.time() + 600), 600)
        assert (await other.read("w")).host == "ci-3"  # type: ignore[union-attr]
