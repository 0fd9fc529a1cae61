"""Exit codes and refusals of `rollout rollback`, `rollout status` and `rollout unlock` (rollout/exits.py).

* a rollback of a worker that a live runner holds is refused (exit 2, naming the holder) and changes nothing;
* `rollout status` tells a running rollout from a killed one;
* `rollback --last` passes over runs already rolled back and verified, and says so;
* without a terminal and without --yes, `rollback` and `unlock` exit 2 with one line (no EOFError traceback).
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from terminal import read_fd

from rollout.journal import Change, Journal
from rollout.lock import Holder, LocalLock, lock_scope

from .conftest import write_plan
from .test_crash_recovery import active, wait_for_change

ROLLOUT = [sys.executable, "-m", "rollout.cli"]
API = "http://127.0.0.1:9/client/v4"  # never reached: these runs stop before any wrangler call


def rollout(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
            stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROLLOUT, *args], cwd=cwd, env={**os.environ, "COLUMNS": "400", **(env or {})},
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.mark.wrangler
def test_rollback_is_refused_while_the_runner_lives_then_status_says_killed(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """During a run's Watch, `rollback --last --yes` exits 2 naming the runner and leaves the new version live;
    status says "running (pid N)"; after SIGKILL it says "killed (pid N gone)", the rollback runs and is
    verified, and a second `rollback --last` passes over that run."""
    sim = sim_process()
    env = sim.env
    before = active(env, "cf-ssai")
    plan = write_plan(workdir, 'Deploy(manifest), Watch("10m")', baseline="1s")
    run = subprocess.Popen([*ROLLOUT, "run", str(plan), "--api-base", sim.api_base, "--no-tty"], cwd=workdir,
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = workdir / ".rollout" / "journal.sqlite"
    try:
        wait_for_change(journal)
        deployed = active(env, "cf-ssai")
        assert deployed != before

        status = rollout("status", "--no-tty", cwd=workdir, env=env)
        assert f"running (pid {run.pid})" in status.stdout, status.stdout

        refused = rollout("rollback", "--last", "--yes", "--no-tty", "--api-base", sim.api_base, cwd=workdir,
                          env=env)
        said = refused.stdout + refused.stderr
        assert refused.returncode == 2, said
        assert "not rolling back" in said and f"pid {run.pid} on " in said, said
        assert "plan 'test plan'" in said and " since " in said, said
        assert "Traceback" not in said
        assert active(env, "cf-ssai") == deployed, "a refused rollback changed the worker"
        assert run.poll() is None, "the runner stopped"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()

    status = rollout("status", "--no-tty", cwd=workdir, env=env)
    assert f"killed (pid {run.pid} gone): run `rollout rollback --last` to undo what it changed" in status.stdout

    undone = rollout("rollback", "--last", "--yes", "--no-tty", "--api-base", sim.api_base, cwd=workdir, env=env)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert "picked rollout" in undone.stdout and "verified" in undone.stdout
    assert active(env, "cf-ssai") == before

    again = rollout("rollback", "--last", "--yes", "--no-tty", "--api-base", sim.api_base, cwd=workdir, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "rolled back and verified" in again.stdout and "skipped rollout" in again.stdout
    assert "nothing to do" in again.stdout
    status = rollout("status", "--no-tty", cwd=workdir, env=env)
    assert f"killed (pid {run.pid} gone); rolled back and verified since" in status.stdout


async def _journal(path: Path, runs: list[tuple[str, str | None, list[tuple[str, str, str]]]], *,
                   pid: int | None = None) -> None:
    """Runs ``(id, outcome or None for no end, [(worker, before, after)])``, oldest first."""
    async with Journal(path) as journal:
        for index, (rollout_id, outcome, changes) in enumerate(runs):
            started = time.time() + index  # after the runner (a pid) started: not a reused pid
            await journal.start_rollout(rollout_id, f"plan {rollout_id}", None, "simulator", API, None, started,
                                        pid if pid is not None else os.getpid())
            for worker, before, after in changes:
                await journal.record_change(Change(rollout_id, worker, before, after, "deploy", started, "done"))
            if outcome is not None:
                await journal.finish(rollout_id, started + 1, outcome, 1 if outcome == "rolled_back" else 0)


async def test_rollback_without_a_terminal_exits_2_in_one_line_naming_what_it_picked(workdir: Path) -> None:
    """No tty, no --yes: exit 2 with one error line, no EOFError traceback; it names the run it picked (the
    newest whose changes are not rolled back) and the run it passed over (rolled back and verified)."""
    await _journal(workdir / ".rollout" / "journal.sqlite", [
        ("run-a", "succeeded", [("cf-ssai", "v1", "v2")]),
        ("run-b", "rolled_back", [("cf-ssai", "v2", "v3")]),
    ])
    result = rollout("rollback", "--last", "--no-tty", "--api-base", API, cwd=workdir, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "EOFError" not in result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert errors == ["error: stdin is not a terminal: pass --yes to roll back without asking"], result.stdout
    assert "skipped rollout run-b (plan run-b): rolled back and verified" in result.stdout
    assert "picked rollout run-a" in result.stdout and "cf-ssai: v1 → v2" in result.stdout


def _spawn() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


async def test_status_tells_a_live_runner_from_a_dead_one_and_a_zombie(workdir: Path) -> None:
    """Without an end: "running (pid N)" while the pid lives; "killed (pid N gone)" once it died, also before
    its parent reaped it (a zombie answers kill(pid, 0))."""
    journal = workdir / ".rollout" / "journal.sqlite"
    alive, dead = _spawn(), _spawn()
    try:
        await _journal(journal, [("run-live", None, [("cf-ssai", "v1", "v2")])], pid=alive.pid)
        await _journal(journal, [("run-dead", None, [("cf-ssai-decision", "v1", "v2")])], pid=dead.pid)
        dead.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:  # killed, not yet reaped: a zombie
            if (await anyio.Path(f"/proc/{dead.pid}/stat").read_text()).split(") ")[1][0] == "Z":
                break
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)
        status = rollout("status", "--no-tty", cwd=workdir, timeout=60)
        lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.startswith("run-")}
        assert f"running (pid {alive.pid})" in lines["run-live"], status.stdout
        assert f"killed (pid {dead.pid} gone): run `rollout rollback --last`" in lines["run-dead"], status.stdout
        dead.wait()
        alive.kill()
        alive.wait()
        status = rollout("status", "--no-tty", cwd=workdir, timeout=60)
        lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.startswith("run-")}
        assert f"killed (pid {alive.pid} gone)" in lines["run-live"], status.stdout
    finally:
        for proc in (alive, dead):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_unlock_asks_on_a_terminal_and_refuses_without_one(workdir: Path) -> None:
    """`rollout unlock W`: on a terminal it asks and `n` keeps the lock; without one (and without --yes) it
    exits 2 with one line and keeps the lock."""
    lock = LocalLock(lock_scope({"CLOUDFLARE_API_BASE_URL": "x", "CLOUDFLARE_ACCOUNT_ID": "0" * 32}), "w")
    lock.acquire(Holder(4242, "ci-1", "p", None, time.time(), "w"))
    try:
        refused = rollout("unlock", "w", "--sim", cwd=workdir, timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr
        errors = [line for line in refused.stdout.splitlines() if line.startswith("error:")]
        assert errors == ["error: stdin is not a terminal: pass --yes to remove the lock without asking"]
        assert lock.path.exists()

        main, child = pty.openpty()
        env = {**os.environ, "TERM": "dumb", "COLUMNS": "400"}
        proc = subprocess.Popen([*ROLLOUT, "unlock", "w", "--sim"], cwd=workdir, env=env, stdin=child, stdout=child,
                                stderr=child, close_fds=True)
        os.close(child)
        try:
            seen = read_fd(main, 30, until=b"[y/N]")
            assert b"pid 4242 on ci-1" in seen and b"remove the lock of w? [y/N] " in seen, seen
            os.write(main, b"n\n")
            seen += read_fd(main, 30, until=b"nothing done")
            assert proc.wait(timeout=30) == 2
            assert b"nothing done" in seen
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(main)
        assert lock.path.exists()
    finally:
        lock.release()


async def test_a_journal_from_before_hosts_were_recorded_opens_and_reads(workdir: Path) -> None:
    """A journal without the `host` column gains it on open; its old rows read with host None."""
    import sqlite3

    path = workdir / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rollouts (id TEXT PRIMARY KEY, plan TEXT NOT NULL, plan_path TEXT, target TEXT, "
                   "api_base TEXT, edge_url TEXT, started REAL NOT NULL, ended REAL, outcome TEXT, exit_code INTEGER, "
                   "pid INTEGER, mode TEXT DEFAULT 'run')")
        db.execute("INSERT INTO rollouts (id, plan, started, pid) VALUES ('old', 'p', 1.0, 7)")
    db.close()
    async with Journal(path) as journal:
        await journal.start_rollout("new", "p", None, "simulator", API, None, 2.0, os.getpid())
        old, new = sorted(await journal.rollouts(), key=lambda r: r.started)
    assert (old.id, old.host, old.pid) == ("old", None, 7)
    assert new.host is not None and new.pid == os.getpid()
