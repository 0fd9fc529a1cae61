"""Detection latency: from writing the event that makes a guard breach to the start of the rollback process.

Each trial starts a writer process that prints synthetic tail output into a pipe at a steady rate (5 000
events/s): healthy traffic, then, from a known event on, failing requests.  A real
:class:`~rollout.monitor.Monitor` reads the pipe and judges the default guards on a
:class:`~rollout.board.GuardBoard` per event, every 20 ms of event time, as the engine's monitors do; the
guards are armed after a baseline.  On a rollback breach it starts the "rollback": a two-line shell
script that records its own start time with ``date +%s%N``, standing in for the engine's ``wrangler rollback``.

Which event made the guard breach is found afterwards, exactly: the writer logs each event's timestamp and
write time, and the same events are replayed through the guards after every single event.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

from rollout.board import GuardBoard
from rollout.bus import Breach, EventBus
from rollout.events import TailEvent
from rollout.guards import ErrorRate, Guard, default_guards
from rollout.monitor import Monitor
from rollout.signals import WindowStats, WorkerSignals
from rollout.sources import SourceStatus

from .synth import VERSIONS, WORKER, Templates

BASELINE_MS = 300
ERROR_AFTER_S = 0.5
_SCRIPT = '#!/bin/sh\ndate +%s%N > "$1"\n'


@dataclass(frozen=True)
class LatencyResult:
    trials: int
    latencies_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


# -- the writer process -------------------------------------------------------------------------------------

def writer(rate: float, error_from: int, total: int, log: Path) -> None:
    """Write ``total`` events to stdout at ``rate``/s, failing from index ``error_from``; log the times."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that the log below is written
    healthy, failing = Templates(200, error_rate=0.0, churn=0.0), Templates(200, error_rate=1.0, churn=0.0)
    step_ns = int(1e9 / rate)
    times: list[tuple[int, int]] = []
    start = time.time_ns()
    try:
        for i in range(total):
            due = start + i * step_ns
            while (now := time.time_ns()) < due:
                pass
            ts_ms = now // 1_000_000
            data = (failing if i >= error_from else healthy).render(i, ts_ms)
            written = time.time_ns()
            os.write(1, data)
            times.append((ts_ms, written))
    except BrokenPipeError:
        pass
    finally:
        log.write_text(json.dumps(times))


# -- the monitor side ---------------------------------------------------------------------------------------

class _PipeSource:
    def __init__(self, proc: anyio.abc.Process) -> None:
        self.proc = proc
        self.status = SourceStatus(connected=True)

    async def run(self, on_chunk: object) -> None:
        assert self.proc.stdout is not None
        async for chunk in self.proc.stdout:
            on_chunk(chunk)  # type: ignore[operator]


class _MiniEngine:
    """The engine's guard loop around one monitor: arm after the baseline; the monitor's
    :class:`~rollout.board.EventTimeJudge` judges per event, in event time, on a real
    :class:`~rollout.board.GuardBoard`; a rollback breach starts the rollback."""

    def __init__(self, guards: list[Guard], script: Path, out: Path) -> None:
        self.board = GuardBoard(guards, EventBus(), on_breach=self._on_breach)
        self.script, self.out = script, out
        self.armed_ms: int | None = None
        self.baseline: WindowStats | None = None
        self.tripped = anyio.Event()
        self.monitor: Monitor | None = None

    def on_events(self, worker: str, events: list[TailEvent]) -> None:
        assert self.monitor is not None
        signals = self.monitor.signals
        if self.armed_ms is None and signals.first_ms and signals.latest_ms >= signals.first_ms + BASELINE_MS:
            self.armed_ms = signals.first_ms + BASELINE_MS
            self.baseline = self.board.baselines[WORKER] = signals.window(signals.first_ms, self.armed_ms)
            self.board.arm(WORKER, self.armed_ms)

    def _on_breach(self, guard: Guard, breach: Breach) -> None:
        if guard.action == "rollback" and not self.tripped.is_set():
            self.board.halt()
            self.tripped.set()


async def _trial(index: int, rate: float, tmp: Path, script: Path) -> float | None:
    log, out = tmp / f"times-{index}.json", tmp / f"rollback-{index}.txt"
    error_from = int(rate * ERROR_AFTER_S)
    argv = [sys.executable, "-m", "benchmarks.latency", "--writer", str(rate), str(error_from),
            str(int(rate * 3)), str(log)]
    engine = _MiniEngine(default_guards(), script, out)
    proc = await anyio.open_process(argv, stdin=subprocess.DEVNULL, stderr=None)
    engine.monitor = Monitor(WORKER, _PipeSource(proc), on_events=engine.on_events, board=engine.board,
                             clock=time.time)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.monitor.run)
        with anyio.move_on_after(10):
            await engine.tripped.wait()
            await anyio.run_process(["/bin/sh", str(script), str(out)])  # the rollback subprocess
        tg.cancel_scope.cancel()
    proc.terminate()
    await proc.wait()
    if not engine.tripped.is_set() or engine.armed_ms is None:
        return None
    started_ns = int((await anyio.Path(out).read_text()).strip())
    times = json.loads(await anyio.Path(log).read_text())
    trip = _tripping_event(times, error_from, engine.armed_ms, engine.baseline)
    return None if trip is None else (started_ns - times[trip][1]) / 1e6


def _tripping_event(times: list[list[int]], error_from: int, armed_ms: int,
                    baseline: WindowStats | None) -> int | None:
    """The first event after which a rollback guard, judged after every event, is in breach."""
    signals = WorkerSignals(WORKER)
    guards = [g for g in default_guards() if g.action == "rollback"]
    for i, (ts, _) in enumerate(times):
        bad = i >= error_from
        signals.add(TailEvent(ts, WORKER, VERSIONS[i % 10 == 0], "exception" if bad else "ok",
                              None if bad else 200))
        if bad and ts >= armed_ms and any(
                g.evaluate(signals, baseline, ts, since_ms=armed_ms).state == "breach" for g in guards):
            return i
    return None


def run(trials: int, rate: float = 5000.0) -> LatencyResult:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        script = tmp / "rollback.sh"
        script.write_text(_SCRIPT)
        latencies = []
        for index in range(trials):
            value = anyio.run(_trial, index, rate, tmp, script)
            if value is not None:
                latencies.append(value)
    return LatencyResult(trials, latencies)


assert ErrorRate in {type(g) for g in default_guards()}  # the trip condition above relies on it

if __name__ == "__main__" and sys.argv[1:2] == ["--writer"]:
    writer(float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
