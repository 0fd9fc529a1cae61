"""`rollout rollback ROLLOUT_ID`: roll back what that run changed; `--last` and an id exclude each other.

* against a `rollout sim` process: two runs, the older rolled back by id (the newer's change stays live);
* a simulator run whose simulator is gone is refused (exit 2, one line), by id and with --last, and never
  sent to Cloudflare;
* an unknown id exits 2 naming the last ids; --last with an id, or neither, exits 2; without a terminal an id
  needs --yes like --last.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from rollout.journal import Change, Journal

from .conftest import write_plan
from .test_crash_recovery import active

ROLLOUT = [sys.executable, "-m", "rollout.cli"]
JOURNAL = Path(".rollout") / "journal.sqlite"


def rollout(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ROLLOUT, *args], cwd=cwd, env={**os.environ, "COLUMNS": "400", **(env or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _run_ids(journal: Path) -> list[str]:
    with sqlite3.connect(journal) as db:
        ids = [str(row[0]) for row in db.execute("SELECT id FROM rollouts ORDER BY started")]
    db.close()
    return ids


def _journal(path: Path, runs: list[tuple[str, str, list[tuple[str, str, str]]]]) -> None:
    """Simulator runs ``(id, api_base, [(worker, before, after)])``, oldest first, none ended (killed)."""
    async def fill() -> None:
        async with Journal(path) as journal:
            for index, (rollout_id, api_base, changes) in enumerate(runs):
                started = time.time() + index
                await journal.start_rollout(rollout_id, f"plan {rollout_id}", None, "simulator", api_base, None,
                                            started, os.getpid())
                for worker, before, after in changes:
                    await journal.record_change(Change(rollout_id, worker, before, after, "deploy", started, "done"))

    anyio.run(fill)


@pytest.mark.wrangler
def test_rollback_by_id_rolls_back_that_run_and_leaves_the_newer_one(
        workdir: Path, sim_process: Callable[..., Any]) -> None:
    """Run A deploys cf-ssai-decision, run B cf-ssai; `rollback A --yes` (the simulator from the journal, no
    --api-base) puts decision's version before A back, verified, and leaves B's cf-ssai live; A again has
    nothing left; `--last` then picks B."""
    sim = sim_process()
    env = sim.env
    decision_before, manifest_before = active(env, "cf-ssai-decision"), active(env, "cf-ssai")
    for phases in ("Deploy(decision)", "Deploy(manifest)"):
        plan = write_plan(workdir, phases, baseline="1s")
        run = rollout("run", str(plan), "--api-base", sim.api_base, "--no-tty", cwd=workdir, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
    run_a, run_b = _run_ids(workdir / JOURNAL)
    manifest_b = active(env, "cf-ssai")
    assert active(env, "cf-ssai-decision") != decision_before and manifest_b != manifest_before

    undone = rollout("rollback", run_a, "--yes", "--no-tty", cwd=workdir, env=env)
    said = undone.stdout + undone.stderr
    assert undone.returncode == 0, said
    assert f"rollout {run_a} (test plan" in said and "cf-ssai-decision: " in said
    assert "cf-ssai-decision → " in said and ": verified" in said, said
    assert active(env, "cf-ssai-decision") == decision_before
    assert active(env, "cf-ssai") == manifest_b, "rolling back run A touched run B's worker"

    again = rollout("rollback", run_a, "--yes", "--no-tty", cwd=workdir, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"rollout {run_a} (test plan): rolled back and verified: nothing to do" in again.stdout

    last = rollout("rollback", "--last", "--yes", "--no-tty", cwd=workdir, env=env)
    assert last.returncode == 0, last.stdout + last.stderr
    assert f"picked rollout {run_b}" in last.stdout
    assert active(env, "cf-ssai") == manifest_before


def test_a_run_whose_simulator_is_gone_is_refused(workdir: Path, sim_process: Callable[..., Any]) -> None:
    """The run's simulator stopped: by id and with --last, exit 2 in one line naming its URL, before any
    wrangler call and without turning to Cloudflare (the token is set: it would be used); a dead --api-base
    is refused too."""
    sim = sim_process()
    gone = sim.api_base
    sim.stop()
    _journal(workdir / JOURNAL, [("run-gone", gone, [("cf-ssai", "v1", "v2")])])
    env = {"CLOUDFLARE_API_TOKEN": "must-not-be-used", "CLOUDFLARE_ACCOUNT_ID": "0" * 32}
    expected = (f"error: the simulator this run used ({gone}) is gone: nothing to roll back there; "
                "pass --api-base URL of a running one")
    for which in (["run-gone"], ["--last"]):
        started = time.monotonic()
        result = rollout("rollback", *which, "--yes", "--no-tty", cwd=workdir, env=env, timeout=60)
        said = result.stdout + result.stderr
        assert result.returncode == 2, said
        assert [line for line in result.stdout.splitlines() if line.startswith("error:")] == [expected], said
        assert "Traceback" not in said and "wrangler" not in said
        assert time.monotonic() - started < 30
    dead = "http://127.0.0.1:9/client/v4"
    result = rollout("rollback", "run-gone", "--yes", "--no-tty", "--api-base", dead, cwd=workdir, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: no simulator answers at --api-base {dead} (connection refused)" in result.stdout
    with sqlite3.connect(workdir / JOURNAL) as db:  # nothing was attempted
        assert db.execute("SELECT count(*) FROM events WHERE kind='RollbackDone'").fetchone()[0] == 0
    db.close()


def test_an_unknown_id_exits_2_naming_the_last_ids(workdir: Path) -> None:
    _journal(workdir / JOURNAL, [("run-a", "http://127.0.0.1:9/client/v4", [("cf-ssai", "v1", "v2")]),
                                 ("run-b", "http://127.0.0.1:9/client/v4", [("cf-ssai", "v2", "v3")])])
    result = rollout("rollback", "run-nope", "--yes", "--no-tty", cwd=workdir)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert line.startswith("error: no rollout run-nope in .rollout/journal.sqlite; the last ones, newest first: "
                           "run-b (plan run-b, "), line
    assert "run-a (plan run-a, " in line
    assert "Traceback" not in said


def test_last_and_an_id_exclude_each_other_and_one_is_required(workdir: Path) -> None:
    both = rollout("rollback", "--last", "run-a", "--yes", "--no-tty", cwd=workdir)
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr, both.stderr
    neither = rollout("rollback", "--yes", "--no-tty", cwd=workdir)
    assert neither.returncode == 2
    assert "one of the arguments ROLLOUT_ID --last is required" in neither.stderr, neither.stderr


def test_an_id_without_a_terminal_needs_yes(workdir: Path) -> None:
    """No tty, no --yes: exit 2, one error line, before the simulator is even asked (nobody could say yes).
    A newer run that changed the same worker since is named: going back undoes its change too."""
    _journal(workdir / JOURNAL, [("run-a", "http://127.0.0.1:9/client/v4", [("cf-ssai", "v1", "v2")]),
                                 ("run-b", "http://127.0.0.1:9/client/v4", [("cf-ssai", "v2", "v3")])])
    result = rollout("rollback", "run-a", "--no-tty", cwd=workdir)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert errors == ["error: stdin is not a terminal: pass --yes to roll back without asking"], said
    assert "rollout run-a (plan run-a" in result.stdout and "cf-ssai: v1 → v2" in result.stdout
    assert ("note: rollout run-b changed cf-ssai after this run (v2 → v3); going back to v1 undoes that too"
            in result.stdout), result.stdout
    assert "Traceback" not in said and "EOFError" not in said
