"""Memory: RSS while replaying hours of events at 1 000/s through the default guards (86.4 M for 24 h).

The stream is generated lazily (see :mod:`benchmarks.synth`), so only rollout's own state can grow.  RSS is
sampled each simulated hour (each 6 simulated minutes for runs under 3 hours); the slope is fitted over the
samples after the signals' retention (2 h of event time) has filled, or over all samples for shorter runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rollout.guards import default_guards
from rollout.replay import replay_bytes

from .synth import T0_MS, Templates, stream

_RETENTION_H = 2.0


def rss_mb() -> float:
    """Resident set size of this process, in MB (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


@dataclass(frozen=True)
class MemoryResult:
    hours: float
    events: int
    seconds: float
    samples: list[tuple[float, float]]  # (simulated hour, RSS MB)
    breaches: int

    @property
    def peak_mb(self) -> float:
        return max(mb for _, mb in self.samples)

    @property
    def slope_mb_per_hour(self) -> float:
        """Least-squares slope of RSS over simulated hours (after the retention filled, when the run is long
        enough)."""
        points = [(h, mb) for h, mb in self.samples if h >= _RETENTION_H] if self.hours >= 3 else self.samples
        if len(points) < 2:
            return 0.0
        mean_h = sum(h for h, _ in points) / len(points)
        mean_mb = sum(mb for _, mb in points) / len(points)
        num = sum((h - mean_h) * (mb - mean_mb) for h, mb in points)
        den = sum((h - mean_h) ** 2 for h, _ in points)
        return num / den if den else 0.0


def run(hours: float, rate: float = 1000.0) -> MemoryResult:
    events = int(hours * 3600 * rate)
    every_h = 1.0 if hours >= 3 else 0.1
    samples: list[tuple[float, float]] = [(0.0, rss_mb())]
    templates = Templates()
    batch = 64
    sample_every = int(every_h * 3600 * rate) // batch * batch

    def sampled() -> Iterator[bytes]:
        done = 0
        for chunk in stream(templates, events, rate, batch=batch, t0_ms=T0_MS):
            yield chunk
            done += batch
            if done % sample_every == 0:
                samples.append((done / rate / 3600, rss_mb()))

    started = time.perf_counter()
    result = replay_bytes(sampled(), default_guards(), baseline_ms=30_000)
    elapsed = time.perf_counter() - started
    if samples[-1][0] < result.events / rate / 3600:
        samples.append((result.events / rate / 3600, rss_mb()))
    return MemoryResult(hours, result.events, elapsed, samples, len(result.breaches))
