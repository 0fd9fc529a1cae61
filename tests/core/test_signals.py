"""Signals: counts in buckets of event time."""

from __future__ import annotations

import pytest

from rollout.signals import DEFAULT_PATTERNS, WindowStats, WorkerSignals

from .helpers import NEW, OLD, T0, ev


def test_counts_by_event_time_with_out_of_order_events() -> None:
    """Events land in the bucket of their own timestamp, whatever the arrival order."""
    s = WorkerSignals("w")
    for t in (T0 + 5_500, T0 + 100, T0 + 2_000, T0 + 1_999, T0 + 9_000):
        s.add(ev(t=t))
    s.add(ev(t=T0 + 1_000, outcome="exception", status=None))
    assert s.latest_ms == T0 + 9_000
    assert s.first_ms == T0 + 100
    assert s.window(T0, T0 + 2_000).requests == 3  # buckets T0 and T0+1s
    w = s.window(T0 + 1_000, T0 + 3_000)
    assert (w.requests, w.errors) == (3, 1)
    assert w.error_rate == pytest.approx(1 / 3)
    assert s.window(T0 + 10_000, T0 + 20_000).error_rate is None


def test_5xx_counts_as_error_and_non_fetch_events_count_as_requests() -> None:
    """A 503 with outcome ok is an error; a cron run is a request."""
    s = WorkerSignals("w")
    s.add(ev(status=503))
    s.add(ev(event={"cron": "* * * * *", "scheduledTime": T0}))
    s.add(ev(outcome="canceled", status=None))
    w = s.window(T0, T0 + 1000)
    assert (w.requests, w.errors) == (3, 1)


def test_retention_drops_old_buckets_and_late_events() -> None:
    """Buckets older than the retention go; late events older than that are dropped and counted."""
    s = WorkerSignals("w", retention_ms=10_000)
    s.add(ev(t=T0))
    s.add(ev(t=T0 + 5_000))
    s.add(ev(t=T0 + 12_000))
    assert s.window(T0, T0 + 20_000).requests == 2  # T0 fell out
    s.add(ev(t=T0 + 1_000))
    assert s.late_events == 1
    s.add(ev(t=T0 + 10 ** 9))  # a jump far ahead empties everything without walking every bucket
    assert s.window(0, T0 + 10 ** 9 + 1).requests == 1
    assert len(s._buckets) == 1


def test_memory_is_bounded_by_retention() -> None:
    """A long stream keeps at most retention / bucket buckets."""
    s = WorkerSignals("w", retention_ms=60_000)
    e = ev()
    import msgspec
    for i in range(5_000):
        s.add(msgspec.structs.replace(e, timestamp_ms=T0 + i * 100))
    assert len(s._buckets) <= 61


def test_patterns_substring_and_regex_per_line() -> None:
    """Each log line matching a pattern counts once; re: patterns are regular expressions."""
    s = WorkerSignals("w", patterns={**DEFAULT_PATTERNS, "slow": r"re:took \d{4,} ms"})
    s.add(ev(logs=[["⚠️  DO Instance Churn: id=1"], ["🔵 Young DO instance", "age=2s"], ["took 1500 ms"]]))
    s.add(ev(logs=[["⚠️  DO Instance Churn: id=2"], ["DO Instance Churn again"], ["took 15 ms"]]))
    s.add(ev(logs=[["💾 Persisted ad state to durable storage"]]))
    w = s.window(T0, T0 + 1000)
    assert dict(w.pattern_counts) == {"do_churn": 3, "do_young": 1, "do_created": 0, "persisted": 1, "slow": 1}


def test_rate_per_hour_uses_observed_time() -> None:
    """Per-hour rates divide by the watched part of the window, not by time before the first event."""
    s = WorkerSignals("w")
    s.add(ev(t=T0, logs=[["DO Instance Churn"]]))
    s.add(ev(t=T0 + 9_999))
    w = s.window(T0 - 3_600_000, T0 + 10_000)
    assert w.observed_ms == 10_000
    assert w.rate_per_hour("do_churn") == pytest.approx(360.0)
    assert WindowStats(0, 0, 0, 0).rate_per_hour("do_churn") == 0.0


def test_split_by_version() -> None:
    """Counts are kept per scriptVersion; versions() lists them."""
    s = WorkerSignals("w")
    for i in range(10):
        s.add(ev(version=OLD, t=T0 + i))
    for i in range(4):
        s.add(ev(version=NEW, t=T0 + i, outcome="exception" if i < 3 else "ok", status=None,
                 exceptions=[("TypeError", "x is undefined\n  at y")] if i < 3 else None))
    s.add(ev(version=None))
    assert s.versions() == {OLD, NEW}
    assert s.window(T0, T0 + 1000).requests == 15
    new = s.window(T0, T0 + 1000, version=NEW)
    assert (new.requests, new.errors, dict(new.exceptions), new.version) == (4, 3, {"TypeError": 3}, NEW)
    assert s.window(T0, T0 + 1000, version=OLD).exceptions == {}
    [sig] = s.signatures(NEW)
    assert (sig.key, sig.count, sig.first_ms) == ("TypeError: x is undefined", 3, T0)
    assert s.first_seen(NEW) == T0


def test_sampling_notices_mark_windows_and_are_not_requests() -> None:
    """overload / overload-stop set the sampling flag and time; they are not requests."""
    s = WorkerSignals("w")
    s.add(ev(t=T0))
    s.add(ev(t=T0 + 10_000, event={"type": "overload", "message": "sampling"}))
    assert s.sampling
    s.add(ev(t=T0 + 15_000))
    assert s.sampled_ms == 5_000
    s.add(ev(t=T0 + 40_000, event={"type": "overload-stop", "message": "done"}))
    assert not s.sampling
    assert s.sampled_ms == 30_000
    assert s.window(T0, T0 + 60_000).requests == 2
    assert s.window(T0 + 20_000, T0 + 30_000).sampled
    assert not s.window(T0, T0 + 5_000).sampled
    assert not s.window(T0 + 45_000, T0 + 50_000).sampled


def test_null_timestamp_uses_stream_time() -> None:
    """An event without eventTimestamp counts at the newest time seen (dropped before any)."""
    s = WorkerSignals("w")
    s.add(ev(t=None))
    assert s.late_events == 1
    s.add(ev(t=T0))
    s.add(ev(t=None))
    assert s.window(T0, T0 + 1000).requests == 2


def test_window_stats_is_frozen() -> None:
    """WindowStats values are immutable."""
    w = WorkerSignals("w").window(0, 1000)
    with pytest.raises(AttributeError):
        w.requests = 3  # type: ignore[misc]


def _summed(s: WorkerSignals, start_ms: int, end_ms: int, version: str | None) -> tuple[object, ...]:
    """What a window holds, summed bucket by bucket (the way without running totals)."""
    bk = s.bucket_ms
    lo, hi = max(-(-start_ms // bk), s._floor), -(-end_ms // bk)
    totals = s._sum_cells(s._bucket_keys(lo, hi), version)
    return totals[0], totals[1], totals[2:], list(s._sum_exceptions(lo, hi, version).items())


def _seen(w: WindowStats) -> tuple[object, ...]:
    return w.requests, w.errors, list(w.pattern_counts.values()), list(w.exceptions.items())


@pytest.mark.parametrize("seed", range(6))
def test_running_totals_equal_summing_the_buckets(seed: int) -> None:
    """Windows read from the running totals equal the bucket sums (exceptions in the same order), with late,
    out-of-order and null-time events, several versions, retention rolling, and windows of every shape."""
    import random

    rnd = random.Random(seed)
    s = WorkerSignals("w", bucket_ms=rnd.choice([1000, 250]), retention_ms=rnd.choice([60_000, 20_000]))
    names = ["Error", "TypeError", "RangeError"]
    t = T0
    for i in range(3000):
        t += rnd.choice([0, 1, 5, 50, 200, 900])
        if rnd.random() < 0.002:
            t += rnd.choice([30_000, 200_000])  # a gap: the retention rolls past everything
        when = t - rnd.choice([0, 0, 0, 0, 700, 3_000, 25_000, 90_000]) if rnd.random() < 0.2 else t
        bad = rnd.random() < 0.2
        s.add(ev(t=when if rnd.random() > 0.01 else None, version=rnd.choice([OLD, NEW, None]),
                 outcome="exception" if bad else "ok", status=None if bad else 200,
                 exceptions=[(rnd.choice(names), "m")] if bad else None,
                 logs=[["DO Instance Churn x"]] if rnd.random() < 0.1 else None))
        if i % 7 == 0:
            now = s.latest_ms
            start = now - rnd.choice([1_000, 10_000, 60_000, 300_000, 10**9])
            end = rnd.choice([now + 1, now, now - 2_000, now + 60_000, start])
            for version in (None, OLD, NEW, "absent"):
                assert _seen(s.window(start, end, version)) == _summed(s, start, end, version), (i, version)


def test_running_totals_fall_back_on_sparse_buckets() -> None:
    """With 1 ms buckets and events a minute apart the buckets are summed directly, and still right."""
    s = WorkerSignals("w", bucket_ms=1, retention_ms=3_600_000)
    for k in range(50):
        s.add(ev(t=T0 + k * 60_000, outcome="exception" if k % 5 == 0 else "ok", status=None if k % 5 == 0 else 200,
                 exceptions=[("Error", "x")] if k % 5 == 0 else None))
    w = s.window(T0, T0 + 3_600_000)
    assert (w.requests, w.errors, dict(w.exceptions)) == (50, 10, {"Error": 10})
    assert not s._prefix
