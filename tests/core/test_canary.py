"""Canary analysis: new version against old, same window."""

from __future__ import annotations

import random

import msgspec

from rollout.canary import analyze_canary
from rollout.signals import WorkerSignals

from .helpers import NEW, OLD, T0, ev

OK = ev()
ERR = ev(outcome="exception", status=None)


def simulate(rng: random.Random, seconds: int, rps: float, share: float, p_new: float, p_old: float) -> WorkerSignals:
    """Traffic at ``rps`` for ``seconds``, ``share`` of it on the new version."""
    s = WorkerSignals("w")
    n = int(seconds * rps)
    for i in range(n):
        new = rng.random() < share
        err = rng.random() < (p_new if new else p_old)
        s.add(msgspec.structs.replace(ERR if err else OK, timestamp_ms=T0 + int(i * 1000 / rps),
                                      version=NEW if new else OLD))
    return s


def test_three_percent_vs_half_percent_fails() -> None:
    """3% vs 0.5% at 10% of 50 req/s over 10 minutes: fail, explained."""
    s = simulate(random.Random(7), 600, 50, 0.10, 0.03, 0.005)
    v = analyze_canary(s, NEW, OLD, T0, T0 + 600_000)
    assert v.verdict == "fail", v.detail
    assert v.new_requests + v.old_requests == 30_000
    assert v.p_value is not None
    assert v.p_value < 0.001
    assert v.detail.startswith("fail: new ")
    assert "exact binomial p=" in v.detail
    assert v.effect is not None
    assert v.effect > 0.015


def test_equal_rates_pass_with_enough_data() -> None:
    """2% vs 2% with plenty of traffic: pass."""
    s = simulate(random.Random(3), 600, 100, 0.5, 0.02, 0.02)
    v = analyze_canary(s, NEW, OLD, T0, T0 + 600_000)
    assert v.verdict == "pass", v.detail


def test_one_request_per_second_never_fails_on_noise() -> None:
    """At 1 req/s, same error rate on both: never fail over 50 seeded runs, and never pass so early."""
    for seed in range(50):
        s = simulate(random.Random(seed), 300, 1, 0.10, 0.02, 0.02)
        for end in (60_000, 180_000, 300_000):
            v = analyze_canary(s, NEW, OLD, T0, T0 + end)
            assert v.verdict == "inconclusive", (seed, end, v.detail)


def test_canary_erring_without_baseline_data_does_not_pass() -> None:
    """The old version has no data: inconclusive, whatever the new one does."""
    s = WorkerSignals("w")
    for i in range(500):
        s.add(msgspec.structs.replace(ERR if i % 2 else OK, timestamp_ms=T0 + i, version=NEW))
    v = analyze_canary(s, NEW, OLD, T0, T0 + 1000)
    assert v.verdict == "inconclusive"
    assert "no requests of the old version" in v.detail
    for i in range(3):
        s.add(msgspec.structs.replace(OK, timestamp_ms=T0 + i, version=OLD))
    assert analyze_canary(s, NEW, OLD, T0, T0 + 1000).verdict != "pass"


def test_too_few_samples_is_inconclusive() -> None:
    """Below min_samples on the new version nothing is decided."""
    s = WorkerSignals("w")
    for i in range(20):
        s.add(msgspec.structs.replace(ERR, timestamp_ms=T0 + i, version=NEW))
    for i in range(2000):
        s.add(msgspec.structs.replace(OK, timestamp_ms=T0 + i % 1000, version=OLD))
    v = analyze_canary(s, NEW, OLD, T0, T0 + 1000)
    assert v.verdict == "inconclusive"
    assert "20 < 50 requests on the new version" in v.detail
    assert analyze_canary(s, NEW, OLD, T0, T0 + 1000, min_samples=10).verdict == "fail"
