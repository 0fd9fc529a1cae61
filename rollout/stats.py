"""Exact tests on counts, with the standard library only.

Guards and canary steps judge small counts ("3 errors in 40 requests"), where normal approximations lie,
and large ones (millions of requests), where naive sums overflow.  Everything here is exact up to floating
point: binomial and Poisson tails come from the regularized incomplete beta and gamma functions, evaluated
with continued fractions in log space (Numerical Recipes §6.2 and §6.4, modified Lentz), which stay
accurate for tails down to ~1e-300 and take O(sqrt(n)) steps, so n up to ~1e7 costs milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Literal

__all__ = [
    "Comparison",
    "binom_cdf",
    "binom_lower",
    "binom_sf",
    "binom_upper",
    "clopper_pearson",
    "compare_error_rates",
    "poisson_cdf",
    "poisson_sf",
    "wilson",
]

_EPS: Final = 1e-15
_TINY: Final = 1e-300


def _max_iter(a: float, b: float) -> int:
    return 200 + int(20 * math.sqrt(max(a, b)))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _max_iter(a, b)):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0, evaluated on the side where it converges."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _check_counts(k: int, n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), accurate in the far upper tail."""
    _check_counts(k, n)
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    # P(X >= k) = I_p(k, n - k + 1); I_p is evaluated directly when it is the small side.
    return min(1.0, max(0.0, _betainc(k, n - k + 1, p)))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), accurate in the far lower tail."""
    _check_counts(k, n)
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    # P(X <= k) = I_{1-p}(n - k, k + 1)
    return min(1.0, max(0.0, _betainc(n - k, k + 1, 1.0 - p)))


def _gammainc_lower(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) for a > 0."""
    if x <= 0.0:
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # series
        ap, total, term = a, 1.0 / a, 1.0 / a
        for _ in range(_max_iter(a, x)):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return min(1.0, total * math.exp(log_front))
    return 1.0 - _gammainc_upper_cf(a, x, log_front)


def _gammainc_upper_cf(a: float, x: float, log_front: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by continued fraction, valid for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _max_iter(a, x)):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(log_front) * h


def poisson_sf(k: int, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu)."""
    if k <= 0:
        return 1.0
    if mu <= 0.0:
        return 0.0
    # P(X >= k) = P(k, mu), the regularized lower incomplete gamma.
    if mu < k + 1.0:
        return max(0.0, _gammainc_lower(k, mu))
    return max(0.0, 1.0 - _gammainc_upper_cf(k, mu, k * math.log(mu) - mu - math.lgamma(k)))


def poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu)."""
    if k < 0:
        return 0.0
    if mu <= 0.0:
        return 1.0
    a = k + 1.0
    if mu < a + 1.0:
        return max(0.0, 1.0 - _gammainc_lower(a, mu))
    return min(1.0, _gammainc_upper_cf(a, mu, a * math.log(mu) - mu - math.lgamma(a)))


def _bisect(fn: _Fn, target: float, lo: float, hi: float, increasing: bool) -> float:
    """The p in [lo, hi] where the monotone ``fn`` crosses ``target`` (to ~1e-12 relative)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if hi - lo <= 1e-12 * max(mid, 1e-300) or mid in (lo, hi):
            break
        above = fn(mid) > target
        if above == increasing:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


class _Fn:
    def __init__(self, kind: Literal["sf", "cdf"], k: int, n: int) -> None:
        self.kind, self.k, self.n = kind, k, n

    def __call__(self, p: float) -> float:
        if self.kind == "sf":
            return binom_sf(self.k, self.n, p)
        return binom_cdf(self.k, self.n, p)


def binom_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound: the largest p with P(X <= k | p) >= alpha (1 when n == 0)."""
    if n <= 0 or k >= n:
        return 1.0
    if k < 0:
        raise ValueError("k must be >= 0")
    if k == 0:
        return -math.expm1(math.log(alpha) / n)  # closed form: (1 - p)^n = alpha
    return _bisect(_Fn("cdf", k, n), alpha, 0.0, 1.0, increasing=False)


def binom_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound: the smallest p with P(X >= k | p) >= alpha (0 when k == 0)."""
    if n <= 0 or k <= 0:
        return 0.0
    if k >= n:
        return math.exp(math.log(alpha) / n)  # closed form: p^n = alpha
    return _bisect(_Fn("sf", k, n), alpha, 0.0, 1.0, increasing=True)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion (conservative: coverage >= ``confidence``)."""
    tail = (1.0 - confidence) / 2.0
    return binom_lower(k, n, tail), binom_upper(k, n, tail)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (approximate, but well behaved near 0 and 1); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    phat = k / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1.0 - phat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


Verdict3 = Literal["fail", "pass", "inconclusive"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of :func:`compare_error_rates`.

    Attributes:
        verdict: ``fail`` (new is worse than old by more than ``min_effect``, at level ``alpha``), ``pass``
            (new is not worse by ``min_effect`` or more, at level ``alpha``) or ``inconclusive``.
        p_value: the p-value of the test behind the verdict (the harm test when inconclusive); None when
            there was nothing to test.
        bound: the bound on the old rate that test used (upper bound for harm, lower bound for pass).
        threshold: ``bound + min_effect``, the rate the new version was tested against.
        effect: the observed difference, new rate - old rate (None without data on both sides).
        test: the name of the test.
        p_fail, p_pass: the p-values of both one-sided tests.
        old_upper, old_lower: the (1 - gamma) one-sided Clopper-Pearson bounds of the old rate.
    """

    verdict: Verdict3
    p_value: float | None
    bound: float | None
    threshold: float | None
    effect: float | None
    test: str
    new_rate: float | None
    old_rate: float | None
    p_fail: float | None = None
    p_pass: float | None = None
    old_upper: float | None = None
    old_lower: float | None = None
    min_effect: float = 0.0
    alpha: float = 0.0


TEST_NAME: Final = "exact binomial, old rate bounded (Berger-Boos)"


def compare_error_rates(
    new_errors: int, new_n: int, old_errors: int, old_n: int,
    min_effect: float = 0.01, alpha: float = 0.001, *, gamma: float | None = None,
) -> Comparison:
    """Compare a canary's error rate with the stable version's, validly at any sample size.

    Two one-sided tests on the counts, each exact (conservative) whatever n is, in the manner of Berger and
    Boos (1994, "P values maximised over a confidence set for the nuisance parameter"):

    * **harm** (verdict ``fail``), H0: p_new <= p_old + min_effect.  The old rate is a nuisance parameter;
      it is replaced by U, its one-sided Clopper-Pearson upper bound at level ``gamma``, and the p-value is
      ``P(Bin(new_n, U + min_effect) >= new_errors) + gamma``.  It is valid because the binomial tail grows
      with the rate, so U is the worst case inside the old rate's (1 - gamma) confidence set.
    * **non-inferiority** (verdict ``pass``), H0: p_new >= p_old + min_effect.  Symmetrically with the lower
      bound L: ``P(Bin(new_n, L + min_effect) <= new_errors) + gamma``.

    ``fail`` when the harm test rejects at ``alpha``; else ``pass`` when the non-inferiority test does;
    else ``inconclusive``.  Consequences: identical versions fail with probability < alpha per look (far
    less with a margin), so noise at 1 request/s does not fail a step; few requests give wide bounds and
    ``inconclusive``, never ``pass``; a version without data (``old_n == 0``) is ``inconclusive`` at best,
    and a heavily erring canary never passes against a tiny baseline.

    Args:
        min_effect: the margin, in rate units (0.01 = one percentage point).
        alpha: the level of each one-sided test.
        gamma: the level spent on bounding the old rate (default ``alpha / 10``); must be < alpha.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if min_effect < 0.0:
        raise ValueError(f"min_effect must be >= 0, got {min_effect}")
    for name, k, n in (("new", new_errors, new_n), ("old", old_errors, old_n)):
        if n < 0 or k < 0 or k > n:
            raise ValueError(f"{name}: need 0 <= errors <= requests, got {k}/{n}")
    gamma = alpha / 10.0 if gamma is None else gamma
    if not 0.0 < gamma < alpha:
        raise ValueError(f"gamma must be in (0, alpha), got {gamma}")
    new_rate = new_errors / new_n if new_n else None
    old_rate = old_errors / old_n if old_n else None
    effect = new_rate - old_rate if new_rate is not None and old_rate is not None else None
    if new_n == 0 or old_n == 0:
        return Comparison("inconclusive", None, None, None, effect, TEST_NAME, new_rate, old_rate,
                          min_effect=min_effect, alpha=alpha)
    upper = binom_upper(old_errors, old_n, gamma)
    lower = binom_lower(old_errors, old_n, gamma)
    fail_at = upper + min_effect
    pass_at = lower + min_effect
    p_fail = 1.0 if fail_at >= 1.0 else min(1.0, binom_sf(new_errors, new_n, fail_at) + gamma)
    p_pass = 1.0 if pass_at <= 0.0 else min(1.0, binom_cdf(new_errors, new_n, pass_at) + gamma)
    if p_fail < alpha:
        verdict: Verdict3 = "fail"
        p_value, bound, threshold = p_fail, upper, fail_at
    elif p_pass < alpha:
        verdict = "pass"
        p_value, bound, threshold = p_pass, lower, pass_at
    else:
        verdict = "inconclusive"
        p_value, bound, threshold = p_fail, upper, fail_at
    return Comparison(verdict, p_value, bound, min(1.0, threshold), effect, TEST_NAME, new_rate, old_rate,
                      p_fail, p_pass, upper, lower, min_effect, alpha)
