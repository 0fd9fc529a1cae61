"""No blindness read as health (issue 14, items 2, 3 and 5).

* a worker that does not exist is refused at once (exit 2), and so is ``--api-base`` without an account;
* a stream is connected only once it carries a tail event: wrangler's bare newline (printed when it cannot
  create a tail) is not one, so the blind-spell alert fires;
* a tail that goes silent with its socket open while the worker has traffic is lost (blind from its last
  event) and restarted by the silence watchdog; its blind time is reported within 10% of the truth;
* the restart backoff resets after a stable session, so frequent drops reconnect fast;
* a watch blind for more than ``--max-blind`` of its time, or that saw no event, ends "blind" (exit 5);
* ``kill -9`` of ``rollout watch`` takes its ``wrangler tail`` along (and 4.164 deletes the tail); the next
  ``--source ws`` deletes the tails a dead runner left behind.

The truth is measured on the simulator's side: the span from the first to the last trace item it sent on
each tail socket; time outside every span is time nobody could see.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil  # type: ignore[import-untyped]
import pytest
from rich.console import Console

from rollout.alerts import AlertSink
from rollout.bus import EventBus
from rollout.cli import build_parser
from rollout.clock import ManualClock
from rollout.commands import cmd_watch
from rollout.errors import UsageError
from rollout.exits import EXIT_BLIND, EXIT_OK, EXIT_USAGE
from rollout.guards import LogRate
from rollout.journal import Journal
from rollout.monitor import Source
from rollout.sim import Simulator
from rollout.sources import PrettyEventCounter, SessionPolicy, SourceStatus, WranglerTailSource, run_sessions
from rollout.target import Target
from rollout.watch import Watcher, WatchOptions, WatchResult, run_watch
from rollout.wrangler import Wrangler
from rollout.wstail import WebSocketTailSource

from .helpers import Receiver

ROLLOUT = [sys.executable, "-m", "rollout.cli"]
T0 = 1_795_353_600.0


# -- helpers ------------------------------------------------------------------------------------------------
class Truth:
    """What the simulator did on its tail sockets: per session, when it was open (``sockets``) and the times of
    its first and last trace item (``spells``)."""

    def __init__(self, sim: Simulator) -> None:
        self.spells: list[list[float]] = []
        self.sockets: list[list[float]] = []
        original = sim.hub.session

        async def session(tail: Any, ws: Any) -> None:
            spell = [math.nan, math.nan]
            self.spells.append(spell)
            socket = [time.time(), math.nan]
            self.sockets.append(socket)
            send = ws.send_text

            async def send_text(text: str) -> None:
                await send(text)
                now = time.time()
                if math.isnan(spell[0]):
                    spell[0] = now
                spell[1] = now

            ws.send_text = send_text
            try:
                await original(tail, ws)
            finally:
                socket[1] = time.time()

        sim.hub.session = session  # type: ignore[method-assign]

    def blind_s(self, start: float, end: float, *, sockets: bool = False) -> float:
        """Seconds of [start, end] outside every span of events (``sockets``: outside every open socket)."""
        spells = [[a, end if math.isnan(b) else b] for a, b in self.sockets] if sockets else self.spells
        spans = sorted((max(a, start), min(b, end)) for a, b in spells if not math.isnan(a))
        seen, reach = 0.0, start
        for a, b in spans:
            if b <= reach:
                continue
            seen += b - max(a, reach)
            reach = b
        return (end - start) - seen


async def until(condition: Callable[[], object], step: float = 0.05) -> None:
    while True:
        if condition():
            return
        await anyio.sleep(step)


def console(workdir: Path) -> Console:
    return Console(file=(workdir / "out.txt").open("w"), width=300, color_system=None)


def scenario(workdir: Path, text: str) -> str:
    path = workdir / "scenario.toml"
    path.write_text('name = "blindness"\nbase = "healthy"\n' + text)
    return str(path)


def wrangler_source(sim: Simulator, workdir: Path, clock: Callable[[], float], **knobs: Any) -> WranglerTailSource:
    env = {**sim.env(), "XDG_CONFIG_HOME": str(workdir / "xdg")}
    wrangler = Wrangler.for_project(None, env, workdir / ".rollout" / "wrangler")
    return WranglerTailSource(argv=wrangler.tail_argv("cf-ssai"), env=wrangler.process_env(), clock=clock, **knobs)


# -- refused at once ----------------------------------------------------------------------------------------
@pytest.mark.wrangler
def test_a_worker_that_does_not_exist_is_refused_at_once(workdir: Path, sim_process: Callable[..., Any]) -> None:
    """`rollout watch cf-ssai-typo --for 40s`: exit 2 in seconds (not "ok" after 40 s of blindness), naming it."""
    sim = sim_process()
    started = time.monotonic()
    result = subprocess.run([*ROLLOUT, "watch", "cf-ssai-typo", "--for", "40s", "--api-base", sim.api_base,
                             "--no-tty"], cwd=workdir, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **sim.env, "COLUMNS": "400"}, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    print(f"refused in {seconds:.1f}s: {result.stdout.strip()}")
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "cf-ssai-typo" in result.stdout and "does not exist" in result.stdout, result.stdout
    assert seconds < 20, "the check must come before the watch, not after it"
    assert "Traceback" not in result.stderr


def test_api_base_without_an_account_is_a_usage_error_naming_the_variable(workdir: Path) -> None:
    """--api-base with no CLOUDFLARE_ACCOUNT_ID: exit 2 naming the variable (a made-up account made every tail
    of a real simulator 404, all night)."""
    with pytest.raises(UsageError, match="CLOUDFLARE_ACCOUNT_ID"):
        Target.from_api_base("http://127.0.0.1:9/client/v4", environ={})
    assert Target.from_api_base("http://x/client/v4", environ={"CLOUDFLARE_ACCOUNT_ID": "a" * 32}).env[
        "CLOUDFLARE_ACCOUNT_ID"] == "a" * 32
    env = {k: v for k, v in os.environ.items() if k not in ("CLOUDFLARE_ACCOUNT_ID", "CF_ACCOUNT_ID")}
    result = subprocess.run([*ROLLOUT, "watch", "cf-ssai", "--for", "10s", "--api-base", "http://127.0.0.1:9/client/v4",
                             "--no-tty"], cwd=workdir, capture_output=True, text=True, timeout=60,
                            env={**env, "COLUMNS": "400"}, stdin=subprocess.DEVNULL)
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert result.stdout.startswith("error: ") and "CLOUDFLARE_ACCOUNT_ID" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["120%", "-1", "x", "nan"])
def test_a_bad_max_blind_is_a_usage_error(workdir: Path, value: str) -> None:
    result = subprocess.run([*ROLLOUT, "watch", "cf-ssai", "--for", "10s", f"--max-blind={value}", "--no-tty"],
                            cwd=workdir, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "400"})
    assert result.returncode == EXIT_USAGE and "--max-blind" in result.stdout, result.stdout + result.stderr


# -- a bare newline is not a stream -------------------------------------------------------------------------
#: What wrangler 4.164 does when it cannot create a tail: a bare newline on stdout, the error on stderr, exit 1
#: ("exits"); and a variant that stays alive printing newlines ("repeats").
FAKE_WRANGLER = {
    "exits": "import sys; print(); sys.stderr.write('X [ERROR] A request to the Cloudflare API (/accounts/a/"
             "workers/scripts/w/tails) failed.\\n'); sys.exit(1)",
    "repeats": "import time\nwhile True:\n    print(flush=True)\n    time.sleep(0.1)",
}


@pytest.mark.parametrize("kind", sorted(FAKE_WRANGLER))
async def test_a_bare_newline_is_not_a_stream_and_the_blind_alert_fires(workdir: Path, kind: str) -> None:
    """A "wrangler" that prints only newlines never connects: blind the whole watch, the blind-spell alert
    fires (it never did: any stdout reset the blind timer), and the watch ends blind (exit 5), not ok."""
    receiver = Receiver()
    sources: list[WranglerTailSource] = []
    connected: list[bool] = []
    exits: set[str] = set()

    def factory(worker: str) -> Source:
        sources.append(WranglerTailSource(argv=[sys.executable, "-c", FAKE_WRANGLER[kind]], clock=time.time,
                                          backoff_initial_s=0.1, backoff_max_s=0.4))
        return sources[-1]

    results: list[WatchResult] = []
    async with anyio.create_task_group() as tg, Journal(workdir / "journal.sqlite") as journal:
        await tg.start(receiver.serve)
        options = WatchOptions(workers=["w"], duration_s=4, baseline_s=0, blind_alert_s=1.5, tick_s=0.05,
                               stats_interval_s=0.2, journal_path=journal.path, tty=False, console=console(workdir))
        watcher = Watcher(options, Target(name="test"), guards=[], journal=journal, source_factory=factory,
                          alerts=AlertSink(receiver.url, attempts=2, backoff_s=0.05))

        async def sample() -> None:
            while True:
                if sources:
                    connected.append(sources[0].status.connected)
                    exits.add(sources[0].status.last_exit)
                await anyio.sleep(0.02)

        tg.start_soon(sample)
        with anyio.fail_after(30):
            results.append(await watcher.run())
        tg.cancel_scope.cancel()
    (result,) = results
    (summary,) = result.workers
    assert not any(connected), "a bare newline counted as a stream"
    assert summary.events == 0 and summary.blind_s == pytest.approx(4, abs=0.3)
    assert result.exit_code == EXIT_BLIND and result.outcome == "blind", result.detail
    assert "w: no tail event" in result.detail
    blind = [b for b in receiver.bodies if b.get("kind") == "blind"]
    assert blind and "w" in blind[0]["text"], receiver.kinds()
    if kind == "exits":
        assert sources[0].status.sessions >= 3
        assert any(e.startswith("exit 1: X [ERROR] A request to the Cloudflare API") for e in exits), exits


@pytest.mark.wrangler
async def test_real_wrangler_that_cannot_create_its_tail_is_blind_alerts_and_exits_5(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tail creation fails (500): wrangler 4.164 prints a bare newline and exits 1, again and again.
    `rollout watch --max-blind 50%` alerts on the blind spell and exits 5 saying why."""
    receiver = Receiver()
    codes: list[int] = []
    text = scenario(workdir, '[[faults.api]]\ncall = "tail-create"\ntimes = 0\nstatus = 500\ncode = 10013\n')
    async with Simulator(scenario=text, traffic_rate=20) as sim, anyio.create_task_group() as tg:
        for name, value in sim.env().items():
            monkeypatch.setenv(name, value)
        await tg.start(receiver.serve)
        args = build_parser().parse_args([
            "watch", "cf-ssai", "--for", "9s", "--baseline", "0", "--blind-alert", "3s", "--max-blind", "50%",
            "--api-base", sim.api_base_url, "--no-tty", "--webhook", receiver.url,
            "--journal", str(workdir / ".rollout" / "journal.sqlite")])
        with anyio.fail_after(60), (workdir / "out.txt").open("w") as file:
            codes.append(await cmd_watch(args, Console(file=file, width=400, color_system=None)))
        tg.cancel_scope.cancel()
        creates = [c for c in sim.api.calls if c.operation == "tail-create"]
    out = (workdir / "out.txt").read_text()
    print(out)
    assert codes == [EXIT_BLIND], out
    assert "blind (exit 5)" in out and "cf-ssai: no tail event" in out, out
    assert re.search(r"blind \d+s \((9\d|100)% of the watch\)", out), out
    assert len(creates) >= 2 and all(c.status == 500 for c in creates)
    blind = [b for b in receiver.bodies if b.get("kind") == "blind"]
    assert blind and "cf-ssai" in blind[0]["text"], receiver.kinds()


# -- a silent tail --------------------------------------------------------------------------------------------
@pytest.mark.wrangler
@pytest.mark.slow
async def test_a_silent_tail_is_lost_restarted_and_its_blind_time_is_true(workdir: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Tails expire 3 s after creation and go silent with their socket open (Cloudflare's do so after an hour).
    With traffic, the watchdog (1.5 s) calls the tail lost within its time, restarts wrangler, the blind alert
    fires, and the blind time reported is within 10% of the time the simulator sent nothing."""
    caplog.set_level(logging.INFO, logger="rollout.sources")
    silence_s = 1.5
    receiver = Receiver()
    sources: list[WranglerTailSource] = []
    lost_at: list[float] = []
    results: list[WatchResult] = []
    async with Simulator(scenario=scenario(workdir, "[faults.tail]\nexpire_after = 3\n"), traffic_rate=50) as sim, \
            anyio.create_task_group() as tg, Journal(workdir / "journal.sqlite") as journal:
        truth = Truth(sim)
        await tg.start(receiver.serve)

        def factory(worker: str) -> Source:
            sources.append(wrangler_source(sim, workdir, time.time, silence_s=silence_s, backoff_initial_s=0.3))
            return sources[-1]

        async def sample() -> None:
            was = False
            while True:
                if sources:
                    now = sources[0].status.connected
                    if was and not now:
                        lost_at.append(time.time())
                    was = now
                await anyio.sleep(0.02)

        tg.start_soon(sample)
        options = WatchOptions(workers=["cf-ssai"], duration_s=20, baseline_s=0, blind_alert_s=2, tick_s=0.05,
                               stats_interval_s=0.2, journal_path=journal.path, tty=False, console=console(workdir),
                               max_blind=0.9, guards=[])
        watcher = Watcher(options, Target.simulator(sim.env()), guards=[], journal=journal, source_factory=factory,
                          alerts=AlertSink(receiver.url, attempts=2, backoff_s=0.05), bus=EventBus())
        with anyio.fail_after(60):
            results.append(await watcher.run())
        tg.cancel_scope.cancel()
    (result,) = results
    (summary,) = result.workers
    status = sources[0].status
    true_blind = truth.blind_s(result.started, result.ended)
    last_sent = max(b for _, b in truth.spells if not math.isnan(b))
    if status.connected:  # a silence the watch ended in before the watchdog could call it is not blind (yet)
        true_blind -= min(silence_s, max(0.0, result.ended - last_sent))
    first = truth.spells[0]
    print(f"reported blind {summary.blind_s:.2f}s, truth {true_blind:.2f}s of {result.ended - result.started:.1f}s; "
          f"{status.silences} silences, {summary.reconnects} reconnects, {len(truth.spells)} tail sessions; "
          f"first loss {lost_at[0] - first[1]:.2f}s after the last event; alerts {receiver.kinds()}")
    assert lost_at and lost_at[0] - first[1] <= silence_s + 0.5, "not lost within the watchdog time"
    assert status.silences >= 2 and summary.reconnects >= 2 and len(truth.spells) >= 3
    assert "tail silent for" in caplog.text
    assert summary.blind_s == pytest.approx(true_blind, rel=0.10), (summary.blind_s, true_blind)
    assert "blind" in receiver.kinds()
    assert summary.events > 0 and result.exit_code == EXIT_OK  # under max_blind=90%: it saw, between silences


# -- backoff ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_ws_drops_every_3s_reconnect_fast_and_the_blind_share_is_true(workdir: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The socket closes (1011) every 3 s for 21 s: each session was stable (up ≥ 2 s, the scaled-down 10 s),
    so the restart delay stays at the initial 0.5 s ± jitter instead of doubling to 28 s, and the blind share
    reported matches the time the simulator had no tail socket open."""
    caplog.set_level(logging.INFO, logger="rollout.sources")
    sources: list[WebSocketTailSource] = []
    results: list[WatchResult] = []
    async with Simulator(scenario=scenario(workdir, "[faults.tail]\ndrop_every = 3\n"), traffic_rate=50) as sim, \
            Journal(workdir / "journal.sqlite") as journal:
        truth = Truth(sim)

        def factory(worker: str) -> Source:
            sources.append(WebSocketTailSource(worker=worker, env=sim.env(), clock=time.time, stable_s=2.0,
                                               state_dir=workdir / ".rollout"))
            return sources[-1]

        options = WatchOptions(workers=["cf-ssai"], duration_s=21, baseline_s=0, tick_s=0.05, stats_interval_s=0.2,
                               journal_path=journal.path, tty=False, console=console(workdir), guards=[])
        watcher = Watcher(options, Target.simulator(sim.env()), guards=[], journal=journal, source_factory=factory)
        with anyio.fail_after(60):
            results.append(await watcher.run())
    (result,) = results
    (summary,) = result.workers
    delays = [float(d) for d in re.findall(r"restarting in ([\d.]+)s", caplog.text)]
    seconds = result.ended - result.started
    true_blind = truth.blind_s(result.started, result.ended, sockets=True)
    print(f"delays {delays}; reported blind {summary.blind_s:.2f}s ({summary.blind_share:.1%}), truth "
          f"{true_blind:.2f}s ({true_blind / seconds:.1%}); {summary.reconnects} reconnects")
    assert len(delays) >= 5 and max(delays) <= 0.75 + 0.05, delays
    assert summary.blind_share == pytest.approx(true_blind / seconds, abs=0.02 + 0.1 * true_blind / seconds)
    assert summary.blind_share < 0.2 and result.exit_code == EXIT_OK, result.detail
    assert not list((workdir / ".rollout" / "tails").glob("*.json")), "a deleted tail is still recorded"


# -- the blind share ---------------------------------------------------------------------------------------------
class ScriptedSource:
    """A source whose stream is up or down when the test says, on a manual clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.status = SourceStatus()
        self.on_chunk: Callable[[bytes], None] | None = None

    async def run(self, on_chunk: Callable[[bytes], None]) -> None:
        self.on_chunk = on_chunk
        self.status.blind_since = self.clock.now()
        await anyio.sleep_forever()

    def event(self) -> None:
        ms = int(self.clock.now() * 1000)
        assert self.on_chunk is not None
        self.status.events_seen(self.clock.now())
        self.on_chunk(b'{"outcome": "ok", "scriptName": "w", "eventTimestamp": %d, "event": {"request": {"url": '
                      b'"https://w/", "method": "GET"}, "response": {"status": 200}}, "logs": [], "exceptions": []}\n'
                      % ms)


@pytest.mark.parametrize(("max_blind", "code"), [(0.2, EXIT_BLIND), (0.5, EXIT_OK)])
async def test_blind_for_more_than_max_blind_exits_5(workdir: Path, max_blind: float, code: int) -> None:
    """A 100 s watch whose tail is down for 30 s: blind 30% — over a 20% limit exit 5 with the share in the
    summary, under a 50% limit ok."""
    clock = ManualClock(T0)
    sources: list[ScriptedSource] = []

    def factory(worker: str) -> Source:
        sources.append(ScriptedSource(clock))
        return sources[-1]

    results: list[WatchResult] = []
    async with Journal(workdir / "journal.sqlite") as journal:
        options = WatchOptions(workers=["w"], duration_s=100, baseline_s=0, tick_s=0.002, stats_interval_s=0.01,
                               journal_path=journal.path, tty=False, max_blind=max_blind)
        guards = [LogRate(pattern="do_churn", max_per_hour=50, window_s=60, action="rollback")]
        watcher = Watcher(options, Target(name="test"), guards=guards, journal=journal, clock=clock,
                          source_factory=factory)

        async def run() -> None:
            results.append(await watcher.run())

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await until(lambda: sources and sources[0].on_chunk is not None, 0.005)
                source = sources[0]
                for second in range(100):
                    if second == 40:
                        source.status.stream_down(clock.now())
                    if not 40 <= second < 70:
                        source.event()
                    clock.advance(1)
                    await anyio.sleep(0.001)
                clock.advance(1)
    (result,) = results
    (summary,) = result.workers
    assert summary.blind_s == pytest.approx(30, abs=1.5)
    assert result.exit_code == code, result.detail
    assert re.search(r"blind 3\ds \(3\d% of the watch\)", "\n".join(result.lines()))
    if code == EXIT_BLIND:
        assert result.outcome == "blind" and "> 20% allowed" in result.detail and "(exit 5)" in result.lines()[0]


# -- orphans -------------------------------------------------------------------------------------------------
@pytest.mark.wrangler
async def test_kill_9_of_a_watch_takes_its_wrangler_tail_along(workdir: Path) -> None:
    """SIGKILL of `rollout watch`: its `wrangler tail` child gets SIGTERM from the kernel (parent-death signal),
    is gone within seconds, and deletes its tail on the simulator (it was alive 180 s later, tail kept)."""
    async with Simulator(traffic_rate=10) as sim:
        env = {**os.environ, **sim.env(), "COLUMNS": "400", "XDG_CONFIG_HOME": str(workdir / "xdg")}
        proc = await anyio.open_process([*ROLLOUT, "watch", "cf-ssai", "--for", "5m", "--api-base", sim.api_base_url,
                                         "--no-tty"], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with anyio.fail_after(30):
                await until(lambda: sim.tail_stats().open, 0.1)
            children = [c for c in psutil.Process(proc.pid).children(recursive=True)
                        if "tail" in c.cmdline()]
            assert children, "no wrangler tail child found"
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            await proc.wait()
            with anyio.fail_after(10):
                await until(lambda: not any(_alive(c) for c in children))
            gone = time.monotonic() - killed
            with anyio.fail_after(10):
                await until(lambda: [c for c in sim.api.calls if c.operation == "tail-delete"])
            print(f"wrangler tail gone {gone:.2f}s after kill -9 of the watch; its tail was deleted")
            assert gone < 5
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()


def _alive(process: Any) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.wrangler
async def test_run_watch_refuses_a_missing_worker_before_watching(workdir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """run_watch itself (not only the CLI): UsageError naming every missing worker, and no tail was created."""
    async with Simulator() as sim:
        monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", sim.account_id)
        options = WatchOptions(workers=["cf-ssai", "nope-1", "nope-2"], duration_s=30, api_base=sim.api_base_url,
                               tty=False, console=console(workdir), journal_path=workdir / ".rollout" / "j.sqlite")
        with anyio.fail_after(30), pytest.raises(UsageError, match="nope-1, nope-2"):
            await run_watch(options)
        assert not [c for c in sim.api.calls if c.operation == "tail-create"]


async def test_the_next_ws_source_deletes_tails_left_by_a_dead_runner(workdir: Path) -> None:
    """A runner killed with SIGKILL leaves its tail on the server and its record in the run dir; the next
    `--source ws` of that worker deletes it (and leaves a live runner's alone)."""
    dead = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    dead_pid = int(dead.stdout)
    async with Simulator() as sim:
        env = sim.env()
        url = f"{env['CLOUDFLARE_API_BASE_URL']}/accounts/{env['CLOUDFLARE_ACCOUNT_ID']}/workers/scripts/cf-ssai/tails"
        async with httpx.AsyncClient() as client:
            ids = [(await client.post(url, content="{}")).json()["result"]["id"] for _ in range(2)]
        folder = workdir / ".rollout" / "tails"
        folder.mkdir(parents=True)
        for tail_id, pid in zip(ids, [dead_pid, os.getppid()], strict=True):
            (folder / f"cf-ssai.{tail_id}.json").write_text(
                f'{{"worker": "cf-ssai", "tail_id": "{tail_id}", "pid": {pid}, "account": '
                f'"{env["CLOUDFLARE_ACCOUNT_ID"]}", "api_base": "{env["CLOUDFLARE_API_BASE_URL"]}"}}')
        source = WebSocketTailSource(worker="cf-ssai", env=env, clock=time.time, state_dir=workdir / ".rollout")
        with anyio.move_on_after(1.5):
            await source.run(lambda chunk: None)
        deleted = {c.path.rsplit("/", 1)[-1] for c in sim.api.calls if c.operation == "tail-delete"}
    assert ids[0] in deleted and ids[1] not in deleted, (ids, deleted)
    assert sorted(p.name for p in folder.iterdir()) == [f"cf-ssai.{ids[1]}.json"]


# -- units: counting events, the watchdog's rule, the backoff -------------------------------------------------
def _pretty(**fields: Any) -> bytes:
    return json.dumps({"outcome": "ok", "eventTimestamp": 1, "logs": [], **fields}, indent=4).encode() + b"\n"


def test_the_event_counter_needs_a_trace_item_and_counts_across_any_split() -> None:
    counter = PrettyEventCounter()
    assert [counter.feed(b"\n") for _ in range(3)] == [0, 0, 0] and not counter.checked  # wrangler's bare newline
    assert counter.feed(b'{\n    "not": "a trace item"\n}\n') == 0 and not counter.checked
    data = b"".join(_pretty(event={"request": {"url": f"https://w/{i}"}}, logs=["}\n{"]) for i in range(7))
    assert sum(counter.feed(data[i:i + 5]) for i in range(0, len(data), 5)) == 7 and counter.checked
    assert PrettyEventCounter().feed(b"\n" + _pretty() * 3) == 3


def test_the_watchdog_fires_on_silence_only_when_traffic_was_due() -> None:
    status = SourceStatus(blind_since=0.0, session_started_at=0.0)
    for t in range(1, 101):  # 10 events/s for 10 s
        status.events_seen(t / 10)
    assert status.rate() == pytest.approx(100 / 9.9, rel=0.01)
    assert status.silence(30.0, silence_s=30, min_events=10) is None  # 20 s quiet
    reason = status.silence(40.5, silence_s=30, min_events=10)
    assert reason is not None and reason.startswith("tail silent for 30s while it averaged 10.1 events/s")
    status.stream_lost(40.5, since=status.last_data_at)
    assert status.blind_s(40.5) == pytest.approx(0.1 + 30.5)  # from the last event (10.0), not the verdict
    quiet = SourceStatus(session_started_at=0.0)
    for t in range(20):  # 0.2 events/s: 6 expected in 30 s, fewer than 10: silence may be a quiet worker
        quiet.events_seen(t * 5.0)
    assert quiet.silence(200.0, silence_s=30, min_events=10) is None
    # a new session that carries nothing gets the connect timeout, not the silence
    status.stream_down(41.0)
    status.session_started_at = 42.0
    assert status.silence(90.0, silence_s=30, min_events=10, connect_timeout_s=60) is None
    assert "no tail event since the session began" in str(status.silence(103.0, 30, 10, connect_timeout_s=60))
    # a socket that opened (ws) and carried nothing yet: silent from when it opened
    status.stream_up(110.0)
    assert status.silence(130.0, 30, 10) is None and status.silence(141.0, 30, 10) is not None


@pytest.mark.parametrize(("up_s", "growing"), [(12.0, False), (0.0, True)])
async def test_the_backoff_resets_after_a_stable_session(up_s: float, growing: bool) -> None:
    """Sessions up for 12 s (≥ stable_s 10 s) restart after the initial delay each time; sessions that never
    connect double it."""
    now = [0.0]
    status = SourceStatus()
    delays: list[float] = []

    async def session() -> None:
        if delays or status.sessions > 1:
            delays.append(status.last_delay_s)
        if up_s:
            status.events_seen(now[0])
            now[0] += up_s
            status.events_seen(now[0])
        now[0] += 1

    policy = SessionPolicy(backoff_initial_s=0.001, backoff_max_s=0.1, stable_s=10.0, silence_s=1e9)
    with anyio.move_on_after(1.0):
        await run_sessions(status, lambda: now[0], random.Random(1), session, policy)
    assert len(delays) >= 6
    if growing:
        assert delays[5] > 8 * 0.001 * 0.5 and max(delays) <= 0.1 * 1.5
    else:
        assert max(delays) <= 0.001 * 1.5
