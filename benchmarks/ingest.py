"""Ingest throughput: the same bytes through rollout (from a pipe, and through ``rollout replay``), jq and grep.

"From a pipe" is the live path: ``cat FILE |`` into a :class:`~rollout.monitor.Monitor` (framing, parsing,
the default signals), which judges the default guards per event, every 20 ms of event time, as the engine
does.  "replay" is :func:`rollout.replay.replay_file` (guards judged every 20 ms of event time),
and the ``rollout replay`` command as a subprocess, interpreter start-up included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from rollout.board import GuardBoard
from rollout.bus import EventBus
from rollout.guards import default_guards
from rollout.monitor import Monitor
from rollout.replay import replay_file
from rollout.sources import SourceStatus

from .synth import WORKER


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: float
    events: int
    answer: str


class _NoSource:
    status = SourceStatus(connected=True)

    async def run(self, on_chunk: object) -> None:  # pragma: no cover - never run
        return None


def pipe_ingest(path: Path) -> Timing:
    """``cat path`` into a Monitor whose default guards are judged per event, every 20 ms of event time, on a
    GuardBoard, as the engine's monitors do."""
    board = GuardBoard(default_guards(), EventBus())
    board.arm(WORKER, 0)
    clock = time.perf_counter
    monitor = Monitor(WORKER, _NoSource(), board=board, clock=time.time)
    started = clock()
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        feed = monitor.feed
        while chunk := os.read(fd, 1 << 16):
            feed(chunk)
    for event in monitor.decoder.flush():
        monitor.signals.add(event)
    elapsed = clock() - started
    errors = monitor.signals.window(0, monitor.signals.latest_ms + 1).errors
    return Timing("rollout, pipe", elapsed, monitor.decoder.events, f"{errors} errors")


def replay_ingest(path: Path) -> Timing:
    started = time.perf_counter()
    result = replay_file(path, default_guards(), baseline_ms=30_000)
    elapsed = time.perf_counter() - started
    return Timing("rollout replay (in-process)", elapsed, result.events, f"{len(result.breaches)} breaches")


def replay_cli(path: Path, events: int) -> Timing:
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.py"
        plan.write_text(textwrap.dedent(f"""
            from rollout import Plan, Worker
            plan = Plan(name="bench", workers=[Worker({WORKER!r})], phases=[], baseline="30s")
        """))
        argv = [sys.executable, "-m", "rollout.cli", "replay", str(path), "--plan", str(plan), "--json",
                "--no-tty", "--journal", str(Path(tmp) / "journal.db")]
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, check=False, cwd=tmp)
        elapsed = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise RuntimeError(f"rollout replay failed: {out.stdout.decode()} {out.stderr.decode()}")
    return Timing("rollout replay (command)", elapsed, events, "exit " + str(out.returncode))


def _shell(name: str, argv: list[str], events: int) -> Timing:
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    return Timing(name, elapsed, events, out.stdout.decode().strip() + " non-ok")


def run(data: bytes, events: int, repeats: int) -> list[Timing]:
    """Every ingest measurement on ``data`` (``events`` items); ours best of ``repeats``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tail.json"
        path.write_bytes(data)
        timings = [min((pipe_ingest(path) for _ in range(repeats)), key=lambda t: t.seconds),
                   min((replay_ingest(path) for _ in range(repeats)), key=lambda t: t.seconds),
                   replay_cli(path, events)]
        if shutil.which("jq"):
            timings.append(_shell("jq (count non-ok outcomes)",
                                  ["jq", "-n", 'reduce (inputs | select(.outcome != "ok")) as $x (0; .+1)',
                                   str(path)], events))
        if shutil.which("grep"):
            timings.append(_shell("grep -c", ["grep", "-c", '"outcome": "exception"', str(path)], events))
    return timings
