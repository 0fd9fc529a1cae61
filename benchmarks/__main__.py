"""``python -m benchmarks [--events N] [--quick] [--hours H] [--trials N] [--skip NAME ...]``: every figure of
issue 7 in one run, on input it generates itself."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence

from . import demos, e2e, ingest, latency, memory
from .synth import generate

TARGETS = {"ingest_vs_jq": 10.0, "p99_ms": 100.0, "rss_mb": 64.0, "e2e_s": 15.0}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, {platform.system()}"


def _ok(met: bool) -> str:
    return "meets target" if met else "MISSES target"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="events for the ingest comparison")
    parser.add_argument("--error-rate", type=float, default=0.02, help="share of failing requests in the input")
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second of event time (ingest)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in well under a minute")
    parser.add_argument("--hours", type=float, help="simulated hours for the memory run (default 2; 24 = full)")
    parser.add_argument("--trials", type=int, help="detection latency trials (default 100)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ingest", "latency", "memory", "e2e"])
    parser.add_argument("--demos", type=int, metavar="N",
                        help="only run each demo scenario N times: baselines with requests, bakes on evidence")
    args = parser.parse_args(argv)
    if args.demos:
        print(f"machine: {_machine()}")
        demos.main(["bad-release", "healthy", "churn-storm"], args.demos)
        return 0
    events = min(args.events, 20_000) if args.quick else args.events
    hours = args.hours if args.hours is not None else (0.01 if args.quick else 2.0)
    trials = args.trials if args.trials is not None else (10 if args.quick else 100)
    print(f"machine: {_machine()}")
    if "ingest" not in args.skip:
        _ingest(events, args.rate, args.error_rate, repeats=1 if args.quick else 3)
    if "latency" not in args.skip:
        _latency(trials)
    if "memory" not in args.skip:
        _memory(hours)
    if "e2e" not in args.skip:
        _e2e()
    return 0


def _ingest(events: int, rate: float, error_rate: float, repeats: int) -> None:
    started = time.perf_counter()
    data = generate(events, rate=rate, error_rate=error_rate)
    print(f"\n== ingest: {events:,} events, {len(data) / 1e6:.1f} MB ({len(data) / events:.0f} B/event), "
          f"{rate:g} events/s of event time, {error_rate:.1%} errors (generated in "
          f"{time.perf_counter() - started:.1f} s)")
    timings = ingest.run(data, events, repeats)
    jq = next((t for t in timings if t.name.startswith("jq")), None)
    for t in timings:
        ratio = f"  {jq.seconds / t.seconds:6.1f}x jq" if jq else ""
        print(f"{t.name:30s} {t.events / t.seconds:>12,.0f} events/s  {t.seconds:7.2f} s  ({t.answer}){ratio}")
    if jq:
        times_jq = jq.seconds / timings[0].seconds
        print(f"pipe ingest / jq = {times_jq:.1f}x (target >= {TARGETS['ingest_vs_jq']:g}x): "
              f"{_ok(times_jq >= TARGETS['ingest_vs_jq'])}")


def _latency(trials: int) -> None:
    print(f"\n== detection latency: {trials} trials, 5000 events/s into a pipe, default guards")
    result = latency.run(trials)
    if not result.latencies_ms:
        print("no trial detected the breach")
        return
    print(f"event written → rollback process started: p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms, "
          f"max {max(result.latencies_ms):.1f} ms over {len(result.latencies_ms)} trials "
          f"(target p99 <= {TARGETS['p99_ms']:g} ms): {_ok(result.p99 <= TARGETS['p99_ms'])}")


def _memory(hours: float) -> None:
    print(f"\n== memory: replaying {hours:g} h of events at 1000/s ({int(hours * 3.6e6):,} events), default guards")
    result = memory.run(hours)
    shown = ", ".join(f"{h:.1f}h {mb:.1f}" for h, mb in result.samples)
    print(f"RSS MB by simulated hour: {shown}")
    print(f"replayed {result.events:,} events in {result.seconds:.0f} s ({result.events / result.seconds:,.0f}/s); "
          f"peak RSS {result.peak_mb:.1f} MB, slope {result.slope_mb_per_hour:+.2f} MB/h "
          f"(target <= {TARGETS['rss_mb']:g} MB and flat): {_ok(result.peak_mb <= TARGETS['rss_mb'])}")
    if hours < 24:
        per_h = result.seconds / max(hours, 1e-9)
        print(f"(a full 24 h run takes about {24 * per_h / 60:.0f} min here: python -m benchmarks --skip ingest "
              "latency e2e --hours 24)")


def _e2e() -> None:
    print("\n== end to end: rollout demo --scenario bad-release --no-tty")
    result = e2e.run()
    if result.seconds is None:
        print(f"no timing line (exit {result.exit_code}, {result.wall_s:.0f} s): {result.tail}")
        return
    print(f"fault onset → rollback verified: {result.seconds:.1f} s (whole demo {result.wall_s:.0f} s, "
          f"exit {result.exit_code}) (target <= {TARGETS['e2e_s']:g} s): {_ok(result.seconds <= TARGETS['e2e_s'])}")


if __name__ == "__main__":
    sys.exit(main())
