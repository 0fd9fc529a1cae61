"""Watch exit codes (rollout/exits.py) and the lock of a watch that may roll back.

* a rollback guard breaching without --rollback-on-breach alerts "alert — not rolled back" with the exact
  `wrangler rollback` command and exits 6 (EXIT_ALERTED);
* `watch --rollback-on-breach` holds the lock of its workers (refused while a rollout holds one); a watch
  without it changes nothing and takes no lock;
* `--for nan`, `inf`, `-1s` and `0` are usage errors (exit 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from rollout.cli import build_parser
from rollout.clock import ManualClock
from rollout.commands import cmd_watch
from rollout.errors import LockHeld
from rollout.exits import EXIT_ALERTED, EXIT_USAGE
from rollout.guards import LogRate
from rollout.journal import Journal
from rollout.lock import Holder, LocalLock, lock_scope
from rollout.monitor import Source
from rollout.sim import Simulator
from rollout.sources import ChunkSource
from rollout.target import Target
from rollout.watch import Watcher, WatchOptions, WatchResult

from .helpers import Receiver, deploy_new_version

T0 = 1_795_353_600.0


@pytest.mark.wrangler
async def test_alert_only_breach_exits_6_and_gives_the_rollback_command(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bad-release without --rollback-on-breach: the error-rate guard breaches, the webhook and the output say
    "alert — not rolled back" with `wrangler rollback <previous> --name cf-ssai -y`, nothing is rolled back,
    no lock is taken, and `rollout watch` exits 6."""
    receiver = Receiver()
    out = workdir / "out.txt"
    codes: list[int] = []
    async with Simulator(scenario="bad-release", traffic_rate=25) as sim, anyio.create_task_group() as tg:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        monkeypatch.setenv("ROLLOUT_EDGE_URL", sim.edge_url)
        before = sim.active_versions("cf-ssai")[0][0]
        await tg.start(receiver.serve)
        args = build_parser().parse_args([
            "watch", "cf-ssai", "--for", "20s", "--baseline", "0", "--api-base", sim.api_base_url, "--no-tty",
            "--webhook", receiver.url, "--journal", str(workdir / ".rollout" / "journal.sqlite")])
        done = anyio.Event()

        async def run() -> None:
            with out.open("w") as file:
                codes.append(await cmd_watch(args, Console(file=file, width=400, color_system=None)))
            done.set()

        tg.start_soon(run)
        with anyio.fail_after(20):
            while True:
                if sim.tail_stats().open:
                    break
                await anyio.sleep(0.1)
        new = deploy_new_version(sim, "cf-ssai")  # the 2nd version: 30% 500s from 5 s on
        with anyio.fail_after(60):
            await done.wait()
        tg.cancel_scope.cancel()
    text = out.read_text()
    command = f"wrangler rollback {before} --name cf-ssai -y"
    assert codes == [EXIT_ALERTED], text
    assert "alert — not rolled back" in text and command in text, text
    assert "(exit 6)" in text
    breaches = [b for b in receiver.bodies if b.get("kind") == "breach" and b.get("action") == "rollback"]
    assert breaches, receiver.bodies
    for body in breaches:
        assert "alert — not rolled back" in body["text"] and command in body["text"], body
        assert "(rollback)" not in body["text"]
    assert not [b for b in receiver.bodies if b.get("kind") == "rollback"]
    assert sim.active_versions("cf-ssai") == [(new, 100.0)]  # alert only: nothing changed
    locks = anyio.Path(os.environ["ROLLOUT_LOCK_DIR"])
    assert not await locks.exists() or not [p async for p in locks.glob("*.lock")], \
        "a watch without --rollback-on-breach took a lock"


def _watcher(workdir: Path, journal: Journal, rollback: bool) -> tuple[Watcher, ManualClock]:
    clock = ManualClock(T0)

    def factory(worker: str) -> Source:
        return ChunkSource()

    options = WatchOptions(workers=["w"], duration_s=5, rollback_on_breach=rollback, baseline_s=0, tick_s=0.005,
                           stats_interval_s=0.01, journal_path=journal.path, tty=False)
    guards = [LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback")]
    return Watcher(options, Target(name="test"), guards=guards, journal=journal, clock=clock,
                   source_factory=factory), clock


async def _run_to_the_end(watcher: Watcher, clock: ManualClock, during: list[str]) -> WatchResult:
    results: list[WatchResult] = []

    async def run() -> None:
        results.append(await watcher.run())

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while True:
                if watcher.monitors:
                    break
                await anyio.sleep(0.01)
            try:  # while it watches: can a rollout take the lock of "w"?
                LocalLock(lock_scope(watcher.target.env), "w").acquire(
                    Holder(os.getpid(), "here", "a rollout", None, time.time(), "w"))
                during.append("free")
            except LockHeld as exc:
                during.append(str(exc))
            clock.advance(10)
    return results[0]


async def test_rollback_on_breach_watch_holds_the_lock_and_an_alert_only_watch_takes_none(workdir: Path) -> None:
    """A rollout holds "w": `watch --rollback-on-breach w` is refused naming it; a watch without the flag runs.
    Once free, the rollback watch holds the lock while it runs (a rollout is refused, naming the watch)."""
    lock = LocalLock(lock_scope({}), "w")
    lock.acquire(Holder(4242, "ci-1", "cf-ssai v1.5.0", None, time.time() - 30, "w"))
    async with Journal(workdir / "journal.sqlite") as journal:
        try:
            watcher, _ = _watcher(workdir, journal, rollback=True)
            with pytest.raises(LockHeld, match=r"pid 4242 on ci-1 \(plan 'cf-ssai v1.5.0'\) since"):
                await watcher.run()
            watcher, clock = _watcher(workdir, journal, rollback=False)
            during: list[str] = []
            assert (await _run_to_the_end(watcher, clock, during)).exit_code != EXIT_USAGE
            assert "pid 4242 on ci-1" in during[0]  # untouched: still the rollout's
        finally:
            lock.release()
        watcher, clock = _watcher(workdir, journal, rollback=True)
        during = []
        await _run_to_the_end(watcher, clock, during)
        assert f"pid {os.getpid()} on " in during[0] and "watch --rollback-on-breach: w" in during[0], during
        after = LocalLock(lock_scope({}), "w")
        after.acquire(Holder(os.getpid(), "here", "next", None, time.time(), "w"))  # released at the end
        after.release()


@pytest.mark.parametrize("value", ["nan", "inf", "-1s", "0"])
def test_watch_for_a_bad_duration_exits_2(workdir: Path, value: str) -> None:
    """`rollout watch W --for nan|inf|-1s|0`: one error line, exit 2, nothing watched."""
    result = subprocess.run([sys.executable, "-m", "rollout.cli", "watch", "cf-ssai", f"--for={value}", "--no-tty"],
                            cwd=workdir, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "400"})
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert result.stdout.startswith("error: ") and len(result.stdout.strip().splitlines()) == 1, result.stdout
    assert "Traceback" not in result.stderr
