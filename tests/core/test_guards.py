"""Guards: exact tests, minimum samples and the no-data state."""

from __future__ import annotations

import math

import msgspec
import pytest

from rollout.events import TailEvent
from rollout.guards import ErrorRate, Guard, LogRate, NewExceptions, Verdict, default_guards
from rollout.signals import WindowStats, WorkerSignals

from .helpers import NEW, OLD, T0, ev

OK = ev()
ERR = ev(outcome="exception", status=None)
CHURN = ev(logs=[["⚠️  DO Instance Churn: id=1"]])


def feed(s: WorkerSignals, base: TailEvent, times: range | list[int], **changes: object) -> None:
    for t in times:
        s.add(msgspec.structs.replace(base, timestamp_ms=t, **changes))


def traffic(requests: int, errors: int, span_ms: int = 50_000) -> WorkerSignals:
    s = WorkerSignals("w")
    for i in range(requests):
        s.add(msgspec.structs.replace(ERR if i < errors else OK, timestamp_ms=T0 + i * span_ms // requests))
    return s


def test_one_error_in_three_requests_never_rolls_back() -> None:
    """1/3 is 33% but far from enough evidence: inconclusive, not a breach."""
    v = ErrorRate().evaluate(traffic(3, 1), None, T0 + 50_000)
    assert v.state == "inconclusive"
    assert v.samples == 3
    assert v.value == pytest.approx(1 / 3)


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Bin(n, p), summed exactly (independent of rollout.stats)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_thirty_errors_in_two_hundred_roll_back() -> None:
    """30/200 against a clean baseline of 1000 requests is a breach, explained.  The breach must clear the
    baseline's own 95% upper bound (0/1000: 1 - 0.05^(1/1000) = 0.30%) plus the margin."""
    baseline = WindowStats(T0 - 600_000, T0, requests=1000, errors=0)
    v = ErrorRate().evaluate(traffic(200, 30), baseline, T0 + 50_000)
    assert isinstance(v, Verdict)
    assert (v.state, v.action, v.guard, v.worker, v.samples) == ("breach", "rollback", "error_rate", "w", 200)
    assert v.threshold == pytest.approx(0.05)
    assert v.baseline == 0.0
    breach_line = 0.05 + (1 - 0.05 ** (1 / 1000))
    assert v.p_value == pytest.approx(_binom_sf(30, 200, breach_line), rel=1e-9)
    assert v.detail.startswith("error rate 15.0% (30/200) vs baseline 0.0% (≤ 0.3% with 1000 requests) + 5.0 pts, "
                               "binomial p=3e-07 < 0.001")


def test_a_thin_baseline_does_not_cause_a_false_rollback() -> None:
    """v1 erring 4% measured on 30 requests (0 errors seen): v2 at 7.5% (inside baseline + 5 points) is not
    a breach, because the baseline could be as high as 9.5%."""
    thin = WindowStats(T0 - 3000, T0, requests=30, errors=0)
    v = ErrorRate().evaluate(traffic(400, 30), thin, T0 + 50_000)
    assert v.state != "breach"
    assert "≤ 9.5% with 30 requests" in v.detail


def test_no_baseline_is_said() -> None:
    """Without a baseline the rate is taken as 0 and the detail says so."""
    v = ErrorRate().evaluate(traffic(200, 30), None, T0 + 50_000)
    assert v.state == "breach"
    assert "no baseline" in v.detail
    empty = WindowStats(T0 - 1000, T0, 0, 0)
    assert "no baseline" in ErrorRate().evaluate(traffic(200, 30), empty, T0 + 50_000).detail


def test_baseline_raises_the_threshold() -> None:
    """15% is no breach when the baseline already errs at 12%; it is ok once shown below 17%."""
    baseline = WindowStats(T0 - 600_000, T0, requests=1000, errors=120)
    few = ErrorRate().evaluate(traffic(200, 30), baseline, T0 + 50_000)
    assert few.state == "inconclusive" and "not yet shown" in few.detail
    assert few.threshold == pytest.approx(0.17)
    assert ErrorRate().evaluate(traffic(2000, 300), baseline, T0 + 50_000).state == "ok"


def test_no_data_is_neither_ok_nor_breach() -> None:
    """No requests in the window: no_data, for every guard."""
    s = WorkerSignals("w")
    for guard in [*default_guards(), NewExceptions()]:
        v = guard.evaluate(s, None, T0, since_ms=T0 - 1000)
        assert v.state == "no_data", guard
        assert v.value is None
    old = traffic(100, 0)
    assert ErrorRate().evaluate(old, None, T0 + 10 * 60_000).state == "no_data"  # all outside the window


def test_above_threshold_but_not_significant_is_inconclusive() -> None:
    """8/100 at threshold 5% is not evidence enough, and not healthy either."""
    assert ErrorRate().evaluate(traffic(100, 8), None, T0 + 50_000).state == "inconclusive"


def test_ok_needs_the_rate_shown_below_the_threshold() -> None:
    """2/100 is below 5%, but not shown to be (P(Bin(100, 5%) <= 2) = 0.12): inconclusive, so a bake does
    not promote on it.  2/400 is shown below it: ok."""
    thin = ErrorRate().evaluate(traffic(100, 2), None, T0 + 50_000)
    assert thin.state == "inconclusive" and "not yet shown" in thin.detail
    assert ErrorRate().evaluate(traffic(400, 2), None, T0 + 50_000).state == "ok"


def test_since_ms_excludes_events_before_arming() -> None:
    """Events before the guard was armed are not judged."""
    s = traffic(200, 30, span_ms=20_000)
    feed(s, OK, range(T0 + 30_000, T0 + 50_000, 200))
    assert ErrorRate().evaluate(s, None, T0 + 50_000).state == "breach"
    assert ErrorRate().evaluate(s, None, T0 + 50_000, since_ms=T0 + 30_000).state == "ok"


def test_version_filter() -> None:
    """ErrorRate(version=...) judges one version only."""
    s = WorkerSignals("w")
    feed(s, OK, range(T0, T0 + 50_000, 20), version=OLD)
    feed(s, ERR, range(T0, T0 + 50_000, 2000), version=NEW)
    assert ErrorRate().evaluate(s, None, T0 + 50_000).state == "ok"  # 25/2525
    assert ErrorRate(version=NEW, min_samples=20).evaluate(s, None, T0 + 50_000).state == "breach"


def test_one_churn_line_in_ten_seconds_is_not_a_breach() -> None:
    """1 line in 10 s is '360/hour' as a ratio, but p = 0.13 under 50/hour."""
    s = WorkerSignals("w")
    s.add(msgspec.structs.replace(CHURN, timestamp_ms=T0))
    feed(s, OK, range(T0 + 1, T0 + 10_000, 100))
    v = LogRate(pattern="do_churn", max_per_hour=50).evaluate(s, None, T0 + 10_000)
    assert v.state == "inconclusive"
    assert v.p_value == pytest.approx(0.12967527416660943, rel=1e-3)  # exposure 10 s (+1 ms: now counts)
    assert v.value == pytest.approx(360.0, rel=1e-3)


def test_churn_storm_is_a_breach() -> None:
    """20 churn lines in 5 minutes (240/h) against 50/h breaches."""
    s = WorkerSignals("w")
    feed(s, OK, range(T0, T0 + 300_000, 500))
    feed(s, CHURN, range(T0, T0 + 300_000, 15_000))
    v = LogRate(pattern="do_churn", max_per_hour=50).evaluate(s, None, T0 + 300_000)
    assert (v.state, v.guard, v.threshold) == ("breach", "do_churn_per_hour", 50)
    assert "do_churn 240/h (20 in 300 s" in v.detail


def test_churn_at_rare_rate_is_ok() -> None:
    """2 churn lines in 5 minutes (24/h) is ok under 50/h."""
    s = WorkerSignals("w")
    feed(s, OK, range(T0, T0 + 300_000, 500))
    feed(s, CHURN, [T0 + 1_000, T0 + 200_000])
    assert LogRate(pattern="do_churn", max_per_hour=50).evaluate(s, None, T0 + 300_000).state == "ok"


def test_unknown_pattern_is_no_data() -> None:
    """A guard on a pattern the signals do not watch (signals built without the plan's patterns) reports
    no_data, not ok."""
    s = traffic(100, 0)
    verdict = LogRate(pattern="nope, not here").evaluate(s, None, T0 + 50_000)
    assert verdict.state == "no_data"
    assert "'nope, not here' (nope_not_here_" in verdict.detail and "is not watched" in verdict.detail


def test_new_exceptions_only_in_new_version() -> None:
    """A signature raised only by the new version alerts; one both versions raise does not."""
    s = WorkerSignals("w")
    feed(s, OK, range(T0, T0 + 10_000, 100), version=OLD, exceptions=(("Error", "timeout"),))
    feed(s, OK, range(T0, T0 + 10_000, 1000), version=NEW, exceptions=(("Error", "timeout"),))
    assert NewExceptions().evaluate(s, None, T0 + 10_000).state == "ok"
    feed(s, OK, [T0 + 9_000], version=NEW, exceptions=(("TypeError", "x is undefined"),))
    v = NewExceptions().evaluate(s, None, T0 + 10_000)
    assert (v.state, v.action, v.value) == ("breach", "alert", 1)
    assert "TypeError: x is undefined" in v.detail
    later = T0 + 10 * 60_000  # once the new version stops raising it, the guard recovers
    feed(s, OK, [later], version=NEW)
    assert NewExceptions().evaluate(s, None, later).state == "ok"


def test_new_exceptions_after_arming_single_version() -> None:
    """With one version, signatures first seen after arming are new; earlier ones are not."""
    s = WorkerSignals("w")
    feed(s, OK, [T0], version=OLD, exceptions=(("Error", "old"),))
    feed(s, OK, [T0 + 5_000], version=OLD, exceptions=(("Error", "old"), ("RangeError", "new")))
    v = NewExceptions().evaluate(s, None, T0 + 6_000, since_ms=T0 + 1_000)
    assert v.state == "breach"
    assert "RangeError: new" in v.detail
    assert "Error: old" not in v.detail


def test_default_guards_match_the_runbook() -> None:
    """Error rate +5 pts -> rollback; churn 50/h -> rollback; young DO 100/h -> warn."""
    g = default_guards()
    assert all(isinstance(x, Guard) for x in g)
    assert [(x.name, x.action) for x in g] == [
        ("error_rate", "rollback"), ("do_churn_per_hour", "rollback"), ("do_young_per_hour", "warn")]
    er, churn, young = g
    assert isinstance(er, ErrorRate)
    assert er.above_baseline_by == 0.05
    assert isinstance(churn, LogRate)
    assert churn.max_per_hour == 50
    assert isinstance(young, LogRate)
    assert young.max_per_hour == 100


def test_guards_are_frozen_and_validated() -> None:
    """Guard definitions are immutable values; nonsense is refused."""
    with pytest.raises(AttributeError):
        ErrorRate().window_s = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="alpha"):
        ErrorRate(alpha=2)
    with pytest.raises(ValueError, match="max_per_hour"):
        LogRate(max_per_hour=0)


def _wave_signals(start_ms: int, lines: int, over_ms: int) -> WorkerSignals:
    s = WorkerSignals("w")
    feed(s, OK, range(T0, start_ms + over_ms + 60_000, 500))
    feed(s, CHURN, range(start_ms, start_ms + over_ms, over_ms // lines))
    return s


def test_durable_object_wave_after_a_deploy_is_expected() -> None:
    """30 churn lines in the minute after a full traffic move fit a wave of 40: not a breach."""
    s = _wave_signals(T0, 30, 60_000)
    guard = LogRate(pattern="do_churn", max_per_hour=50, wave=40, wave_s=120, window_s=60)
    v = guard.evaluate(s, None, T0 + 60_000, since_ms=T0, shifts=[(T0, 1.0)])
    assert v.state != "breach"
    assert "DO wave allowance 40" in v.detail
    without = LogRate(pattern="do_churn", max_per_hour=50, window_s=60).evaluate(s, None, T0 + 60_000, since_ms=T0)
    assert without.state == "breach"


def test_wave_scales_with_the_step() -> None:
    """A 10% step expects a tenth of the wave: 30 lines then is a breach."""
    s = _wave_signals(T0, 30, 60_000)
    guard = LogRate(pattern="do_churn", max_per_hour=50, wave=40, wave_s=120, window_s=60)
    v = guard.evaluate(s, None, T0 + 60_000, since_ms=T0, shifts=[(T0, 0.1)])
    assert v.state == "breach"


def test_crash_loop_after_the_wave_is_a_breach() -> None:
    """Churn that goes on after the wave's time is over is a crash loop, not the deploy wave."""
    later = T0 + 300_000
    s = _wave_signals(later, 30, 60_000)
    guard = LogRate(pattern="do_churn", max_per_hour=50, wave=40, wave_s=120, window_s=60)
    v = guard.evaluate(s, None, later + 60_000, since_ms=T0, shifts=[(T0, 1.0)])
    assert v.state == "breach"
