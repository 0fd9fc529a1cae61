"""Guards: rules over a worker's signals that say ok, breach, no data, or inconclusive.

A guard never reads a bare ratio over a short window.  Each one states a null hypothesis ("the error rate
is at most baseline + 5 points", "churn is at most 50 lines an hour") and breaches only when an exact test
rejects it at ``alpha`` *and* the window holds at least ``min_samples`` requests.  So 1 error in 3
requests never rolls production back, while 30 errors in 200 requests against a clean baseline does.

States:

* ``no_data``: nothing to judge (no requests in the window).  Never read as healthy, never as a breach.
* ``inconclusive``: data, but too little to say: fewer than ``min_samples`` requests, or the observed
  value is past the threshold without being significant yet.
* ``breach``: the test rejects; the guard's ``action`` (``rollback``, ``alert``, ``warn``) applies.
* ``ok``: enough data and the value is within the threshold.

Windows are in event time: ``[max(now - window_s, since_ms), now]``.  ``since_ms`` (when the guard was
armed, e.g. the deploy) keeps events from before the change out of the judgement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

from rollout import _check
from rollout.patterns import Pattern, check_pattern, describe_pattern, pattern_key
from rollout.phase import caller_location
from rollout.signals import WindowStats, WorkerSignals
from rollout.stats import binom_cdf, binom_sf, binom_upper, poisson_sf

__all__ = [
    "Action",
    "ErrorRate",
    "Guard",
    "GuardState",
    "LogRate",
    "NewExceptions",
    "Verdict",
    "default_guards",
]

Action = Literal["rollback", "alert", "warn"]
GuardState = Literal["ok", "breach", "no_data", "inconclusive"]

_HOUR_MS: Final = 3_600_000
#: One-sided level of the baseline's upper bound that a breach must clear (its own sampling error).
BASELINE_ALPHA: Final = 0.05
#: Level at which "the rate is below the threshold" must be shown before a guard says ``ok``.
OK_ALPHA: Final = 0.01


@dataclass(frozen=True, slots=True)
class Verdict:
    """One guard's judgement of one worker at one instant (a value, safe to hand to the view or journal).

    Attributes:
        value: the observed value (a rate, a per-hour rate, a count), None without data.
        baseline: the baseline value the threshold was derived from, when there is one.
        threshold: the value the test compares against.
        samples: requests in the window.
        p_value: the exact test's p-value, when a test ran.
        test: the name of the test.
        detail: one line for a person, e.g. ``error rate 14.2% (57/401) vs baseline 0.4% + 5.0 pts,
            binomial p=3e-21 < 0.001``.
        at_ms: the ``now_ms`` the verdict was computed for.
    """

    guard: str
    worker: str
    action: Action
    state: GuardState
    value: float | None
    baseline: float | None
    threshold: float
    samples: int
    window_s: float
    p_value: float | None
    test: str
    detail: str
    at_ms: int


@runtime_checkable
class Guard(Protocol):
    """What the engine needs from a guard (the built-ins below are frozen dataclasses)."""

    @property
    def name(self) -> str: ...

    @property
    def action(self) -> Action: ...

    @property
    def window_s(self) -> float: ...

    @property
    def min_samples(self) -> int: ...

    def evaluate(
        self, signals: WorkerSignals, baseline: WindowStats | None, now_ms: int, *, since_ms: int | None = None,
    ) -> Verdict: ...


def _bounds(signals: WorkerSignals, now_ms: int, window_s: float, since_ms: int | None) -> tuple[int, int]:
    """The window ``[start, end)`` ending at now; events up to one window ahead of ``now_ms`` (clock skew
    between the edge and this machine) still count."""
    span = int(window_s * 1000)
    start = now_ms - span
    if since_ms is not None and since_ms > start:
        start = since_ms
    end = min(max(now_ms, signals.latest_ms), now_ms + span) + 1  # + 1: an event at now_ms counts
    return start, end


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _p(p: float) -> str:
    return f"{p:.2g}"


_ACTIONS: Final = ("rollback", "alert", "warn")
_Located = tuple[str, int] | None


def _check_common(guard: ErrorRate | LogRate | NewExceptions) -> None:
    """Check the arguments every guard has (a :class:`rollout._check.BadPlanValue`, which is a ValueError
    too, naming the plan line); ``workers`` given as a list becomes a tuple."""
    if guard.defined_at is None:
        object.__setattr__(guard, "defined_at", caller_location(3))
    where, kind = guard.defined_at, type(guard).__name__
    _check.expect_str(guard.name, f"{kind}(name=...)", nonempty=True, where=where)
    _check.expect_choice(guard.action, _ACTIONS, f"{kind}(action=...)", where)
    _check.expect_number(guard.window_s, f"{kind}(window_s=...)", low=0, low_open=True,
                         expected="a number of seconds > 0", where=where)
    _check.expect_int(guard.min_samples, f"{kind}(min_samples=...)", low=0, where=where)
    if not isinstance(guard, NewExceptions):
        _check.expect_number(guard.alpha, f"{kind}(alpha=...)", low=0, high=1, low_open=True, high_open=True,
                             where=where)
    _check.expect_str(guard.version, f"{kind}(version=...)", nonempty=True, optional=True,
                      expected="a version id (a non-empty str) or None", where=where)
    if isinstance(guard.workers, str):
        _check.fail(f"{kind}(workers=...) must be a list of worker names such as ['cf-ssai'], got the str "
                    f"{guard.workers!r}", where)
    workers = _check.expect_strings(guard.workers, f"{kind}(workers=...)", expected="a list of worker names",
                                    where=where)
    object.__setattr__(guard, "workers", workers)


@dataclass(frozen=True, slots=True)
class ErrorRate:
    """Breach when the error rate is significantly above the baseline's plus a margin.

    Test: one-sided exact binomial, H0: p <= baseline + ``above_baseline_by``; p-value
    ``P(Bin(n, threshold) >= errors)``.  An error is a failed outcome or a 5xx status
    (:attr:`rollout.events.TailEvent.is_error`).  Without a baseline (None, or no requests in it) the
    baseline rate is taken as 0, and the detail says so.

    Args:
        above_baseline_by: the margin in rate units (0.05 = five percentage points).
        version: judge only this ``scriptVersion`` (None: all traffic of the worker).
        workers: restrict the guard to these workers (empty: every watched worker).
    """

    above_baseline_by: float = 0.05
    window_s: float = 60.0
    min_samples: int = 30
    alpha: float = 0.001
    action: Action = "rollback"
    version: str | None = None
    name: str = "error_rate"
    workers: tuple[str, ...] = ()
    defined_at: _Located = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_common(self)
        _check.expect_number(self.above_baseline_by, "ErrorRate(above_baseline_by=...)", low=0, high=1,
                             high_open=True, expected="a rate in [0, 1), such as 0.05 for five points",
                             where=self.defined_at)

    def evaluate(
        self, signals: WorkerSignals, baseline: WindowStats | None, now_ms: int, *, since_ms: int | None = None,
    ) -> Verdict:
        start, end = _bounds(signals, now_ms, self.window_s, since_ms)
        w = signals.window(start, end, self.version)
        n, k = w.requests, w.errors
        base = baseline.error_rate if baseline is not None else None
        base_rate = base if base is not None else 0.0
        threshold = min(1.0, base_rate + self.above_baseline_by)
        # The baseline is a sample too: a breach must clear its upper bound plus the margin, so a thin
        # baseline never causes a false rollback; "ok" needs the new rate shown below the point threshold.
        base_hi = binom_upper(baseline.errors, baseline.requests, BASELINE_ALPHA) if baseline is not None and \
            baseline.requests else base_rate
        breach_line = min(1.0, base_hi + self.above_baseline_by)
        if base is None:
            base_text = "no baseline (assumed 0.0%)"
        elif base_hi - base_rate >= 0.0005:
            base_text = f"baseline {_pct(base_rate)} (≤ {_pct(base_hi)} with {baseline.requests if baseline else 0} " \
                        "requests)"
        else:
            base_text = f"baseline {_pct(base_rate)}"
        margin = f"+ {self.above_baseline_by * 100:.1f} pts"
        seconds = (end - start) / 1000
        if n == 0:
            return self._verdict(signals, "no_data", None, base, threshold, 0, None,
                                 f"no requests in the last {seconds:.0f} s", now_ms)
        rate = k / n
        p = binom_sf(k, n, breach_line) if breach_line < 1.0 else 1.0
        text = f"error rate {_pct(rate)} ({k}/{n}) vs {base_text} {margin}, binomial p={_p(p)}"
        if n < self.min_samples:
            state: GuardState = "inconclusive"
            text += f"; {n} < {self.min_samples} requests, too few to judge"
        elif p < self.alpha:
            state = "breach"
            text += f" < {self.alpha:g}"
        elif rate > threshold:
            state = "inconclusive"
            text += f" >= {self.alpha:g}: above the threshold, not yet significant"
        elif threshold < 1.0 and binom_cdf(k, n, threshold) > OK_ALPHA:
            state = "inconclusive"
            text += (f" >= {self.alpha:g}; below {_pct(threshold)}, not yet shown (could be up to "
                     f"{_pct(binom_upper(k, n, OK_ALPHA))})")
        else:
            state = "ok"
            text += f" >= {self.alpha:g}; shown below {_pct(threshold)}"
        if w.sampled:
            text += " (tail sampled)"
        return self._verdict(signals, state, rate, base, threshold, n, p, text, now_ms)

    def _verdict(
        self, signals: WorkerSignals, state: GuardState, value: float | None, base: float | None,
        threshold: float, n: int, p: float | None, detail: str, now_ms: int,
    ) -> Verdict:
        return Verdict(self.name, signals.worker, self.action, state, value, base, threshold, n, self.window_s,
                       p, "exact binomial, one-sided", detail, now_ms)


@dataclass(frozen=True, slots=True)
class LogRate:
    """Breach when a log pattern's rate per hour is significantly above ``max_per_hour``.

    Test: one-sided exact Poisson on the count over the observed part of the window, H0: rate <=
    ``max_per_hour``; p-value ``P(Poisson(max_per_hour * hours) >= count)``.  One churn line in 10 s is
    "360/hour" as a ratio but p = 0.13 under 50/hour: not a breach.  Samples are the window's requests
    (events of any kind but sampling notices); none means ``no_data``.  While the tail is sampled, counts
    are lower bounds, so a breach stays a breach.

    Durable Objects: when traffic moves to a new version, the objects it serves restart, so a deploy is
    followed by a wave of ``DO Instance Created`` / ``Churn`` lines.  ``wave`` is how many such lines a full
    (100%) move is expected to cause, spread over ``wave_s`` seconds; a move of a fraction f of the traffic
    adds ``wave * f`` to the expected count of any window that overlaps its wave.  The wave is bounded in
    time, so a crash loop — churn that goes on after ``wave_s`` or beyond the allowance — still breaches.

    Guards are judged after events, in event time, so a window can end right at a matching line: one line
    in the first millisecond after arming is "3.6 million/hour", and significant against 50/hour.  The null
    mean is therefore taken over at least ``min_exposure_s`` of observed time; a burst inside that time
    still breaches when it is significant even over ``min_exposure_s`` (3 lines in 10 s against 50/hour),
    so a crash loop is caught at once.

    Args:
        pattern: what to count (:mod:`rollout.patterns`): a name from
            :data:`~rollout.patterns.DEFAULT_PATTERNS` (``do_churn``, ``do_young``, ``do_created``,
            ``persisted``), any other str as a substring of the log line (``"greet failed"``), or a compiled
            ``re.Pattern``.  A str of only ``[a-z0-9_]`` that is not a default name (``"do_chrun"``) is a
            plan error: use a substring with a space or punctuation, or ``re.compile(...)``.  Monitors
            count every guard's pattern besides the defaults.
        name: defaults to ``<key>_per_hour``, the key being the pattern's name in the signals and metrics
            (:func:`rollout.patterns.pattern_key`): ``greet_failed_per_hour`` for ``"greet failed"``.
        wave: expected extra lines after a full traffic move (0: no allowance).
        wave_s: how long such a wave lasts.
        min_exposure_s: the least observed time the null mean is computed over.
    """

    pattern: Pattern = "do_churn"
    max_per_hour: float = 50.0
    window_s: float = 300.0
    min_samples: int = 1
    alpha: float = 0.001
    action: Action = "rollback"
    version: str | None = None
    name: str = ""
    workers: tuple[str, ...] = ()
    wave: float = 0.0
    wave_s: float = 120.0
    min_exposure_s: float = 10.0
    defined_at: _Located = field(default=None, compare=False, repr=False)
    #: the pattern's name in the signals and the metrics (set from ``pattern``)
    key: str = field(default="", init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.defined_at is None:
            object.__setattr__(self, "defined_at", caller_location(3))
        where = self.defined_at
        if not isinstance(self.pattern, re.Pattern):
            _check.expect_str(self.pattern, "LogRate(pattern=...)", nonempty=True,
                              expected="a pattern name such as 'do_churn', a substring such as 'greet failed', "
                                       "or a re.compile(...)", where=where)
        problem = check_pattern(self.pattern)
        if problem is not None:
            _check.fail(f"LogRate(pattern=...) {problem}", where)
        object.__setattr__(self, "key", pattern_key(self.pattern))
        if not self.name:
            object.__setattr__(self, "name", f"{self.key}_per_hour")
        _check.expect_number(self.max_per_hour, "LogRate(max_per_hour=...)", low=0, low_open=True,
                             expected="a number of lines per hour > 0", where=where)
        _check.expect_number(self.wave, "LogRate(wave=...)", low=0, expected="a number of lines >= 0", where=where)
        _check.expect_number(self.wave_s, "LogRate(wave_s=...)", low=0, low_open=True,
                             expected="a number of seconds > 0", where=where)
        _check.expect_number(self.min_exposure_s, "LogRate(min_exposure_s=...)", low=0,
                             expected="a number of seconds >= 0", where=where)
        _check_common(self)

    def wave_allowance(self, start_ms: int, end_ms: int, shifts: Sequence[tuple[int, float]]) -> float:
        """Expected extra lines in ``[start_ms, end_ms)`` from traffic moves ``(at_ms, fraction)``."""
        if self.wave <= 0:
            return 0.0
        wave_ms = self.wave_s * 1000
        return sum(self.wave * fraction for at_ms, fraction in shifts if at_ms < end_ms and at_ms + wave_ms > start_ms)

    def evaluate(
        self, signals: WorkerSignals, baseline: WindowStats | None, now_ms: int, *, since_ms: int | None = None,
        shifts: Sequence[tuple[int, float]] = (),
    ) -> Verdict:
        start, end = _bounds(signals, now_ms, self.window_s, since_ms)
        w = signals.window(start, end, self.version)
        allowance = self.wave_allowance(start, end, shifts)
        key = self.key
        base = baseline.rate_per_hour(key) if baseline is not None and baseline.observed_ms else None
        hours = w.observed_ms / _HOUR_MS
        if key not in signals.patterns:
            return self._verdict(signals, "no_data", None, base, 0, None,
                                 f"pattern {describe_pattern(self.pattern)} ({key}) is not watched", now_ms)
        if w.requests == 0 or hours <= 0:
            return self._verdict(signals, "no_data", None, base, w.requests, None,
                                 f"no requests in the last {(end - start) / 1000:.0f} s", now_ms)
        count = w.pattern_counts.get(key, 0)
        rate = count / hours
        exposure = max(hours, self.min_exposure_s / 3600)
        p = poisson_sf(count, self.max_per_hour * exposure + allowance)
        wave = f" + DO wave allowance {allowance:.0f}" if allowance else ""
        short = f" (null over {self.min_exposure_s:g} s)" if exposure > hours else ""
        text = (f"{describe_pattern(self.pattern)} {rate:.0f}/h ({count} in {w.observed_ms / 1000:.0f} s, "
                f"{w.requests} requests) vs max {self.max_per_hour:g}/h{wave}, Poisson p={_p(p)}{short}")
        if w.requests < self.min_samples:
            state: GuardState = "inconclusive"
            text += f"; {w.requests} < {self.min_samples} requests, too few to judge"
        elif p < self.alpha:
            state = "breach"
            text += f" < {self.alpha:g}"
        elif rate > self.max_per_hour and count > allowance:
            state = "inconclusive"
            text += f" >= {self.alpha:g}: above the limit, not yet significant"
        else:
            state = "ok"
            text += f" >= {self.alpha:g}"
        if w.sampled:
            text += " (tail sampled: counts are lower bounds)"
        return self._verdict(signals, state, rate, base, w.requests, p, text, now_ms)

    def _verdict(
        self, signals: WorkerSignals, state: GuardState, value: float | None, base: float | None, n: int,
        p: float | None, detail: str, now_ms: int,
    ) -> Verdict:
        return Verdict(self.name, signals.worker, self.action, state, value, base, self.max_per_hour, n,
                       self.window_s, p, "exact Poisson, one-sided", detail, now_ms)


@dataclass(frozen=True, slots=True)
class NewExceptions:
    """Breach when a version raises an exception signature that no other version raised and that was not
    seen before the guard was armed.

    A signature is the exception's name plus the first line of its message, so ``Error: boom`` and
    ``Error: timeout`` differ.  Only signatures that occurred inside the window count, so the guard
    recovers once the offending version stops serving.

    Args:
        version: the version to watch; None: the newest version seen (the canary).
    """

    action: Action = "alert"
    window_s: float = 300.0
    min_samples: int = 1
    version: str | None = None
    name: str = "new_exceptions"
    workers: tuple[str, ...] = ()
    defined_at: _Located = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_common(self)

    def evaluate(
        self, signals: WorkerSignals, baseline: WindowStats | None, now_ms: int, *, since_ms: int | None = None,
    ) -> Verdict:
        start, end = _bounds(signals, now_ms, self.window_s, since_ms)
        target = self.version
        if target is None:
            seen = [(signals.first_seen(v) or 0, v) for v in signals.versions()]
            target = max(seen)[1] if seen else None
        label = f"version {target[:8]}" if target else "the worker"
        w = signals.window(start, end, target)
        others = signals.versions() - {target} if target is not None else set()
        if since_ms is None and not others:
            state: GuardState = "no_data" if w.requests == 0 else "inconclusive"
            return self._verdict(signals, state, None, w.requests,
                                 f"no other version and no arming time to compare {label} with", now_ms)
        known = {s.key for v in signals.signature_versions() if v != target for s in signals.signatures(v)}
        fresh = [s for s in signals.signatures(target)
                 if s.key not in known and s.last_ms >= start
                 and (since_ms is None or s.first_ms >= since_ms)]
        if fresh:
            shown = "; ".join(f"{s.key[:80]} ({s.count}x)" for s in fresh[:3])
            more = f" and {len(fresh) - 3} more" if len(fresh) > 3 else ""
            return self._verdict(signals, "breach", len(fresh), w.requests,
                                 f"{len(fresh)} new exception signature(s) in {label}: {shown}{more}", now_ms)
        if w.requests == 0:
            return self._verdict(signals, "no_data", None, 0, f"no requests of {label} in the window", now_ms)
        if w.requests < self.min_samples:
            return self._verdict(signals, "inconclusive", 0, w.requests,
                                 f"no new exceptions in {label}, {w.requests} < {self.min_samples} requests",
                                 now_ms)
        return self._verdict(signals, "ok", 0, w.requests,
                             f"no new exception signatures in {label} ({w.requests} requests)", now_ms)

    def _verdict(
        self, signals: WorkerSignals, state: GuardState, value: float | None, n: int, detail: str, now_ms: int,
    ) -> Verdict:
        return Verdict(self.name, signals.worker, self.action, state, value, None, 0.0, n, self.window_s, None,
                       "new exception signatures", detail, now_ms)


def default_guards() -> list[Guard]:
    """The runbook's alert conditions (004): error rate more than 5 points above baseline -> rollback;
    DO churn over 50/hour -> rollback; young DO instances over 100/hour -> warn."""
    return [
        ErrorRate(above_baseline_by=0.05, action="rollback"),
        LogRate(pattern="do_churn", max_per_hour=50, action="rollback"),
        LogRate(pattern="do_young", max_per_hour=100, action="warn"),
    ]
