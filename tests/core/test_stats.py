"""Exact tests: known answers computed independently with scipy 1.18 (scipy.stats.binom, poisson, beta)."""

from __future__ import annotations

import time

import pytest

from rollout.stats import (
    binom_cdf,
    binom_lower,
    binom_sf,
    binom_upper,
    clopper_pearson,
    compare_error_rates,
    poisson_cdf,
    poisson_sf,
    wilson,
)

REL = 1e-9


@pytest.mark.parametrize(("k", "n", "p", "expected"), [
    (30, 200, 0.05, 8.709270943980009e-08),        # binom.sf(29, 200, 0.05)
    (1, 3, 0.05, 0.142625),
    (57, 401, 0.054, 3.853819856880327e-11),
    (21000, 1_000_000, 0.02, 7.035333127527016e-13),
    (5, 10, 0.5, 0.623046875),
])
def test_binom_sf_known_answers(k: int, n: int, p: float, expected: float) -> None:
    """P(X >= k) matches scipy."""
    assert binom_sf(k, n, p) == pytest.approx(expected, rel=REL)


def test_binom_cdf_known_answers() -> None:
    """P(X <= k) matches scipy, including the far lower tail."""
    assert binom_cdf(3, 1000, 0.02) == pytest.approx(2.7631676295533457e-06, rel=REL)
    assert binom_cdf(9, 10, 0.5) == pytest.approx(0.9990234375, rel=REL)


def test_binom_edges() -> None:
    """Degenerate arguments give exact 0 and 1."""
    assert binom_sf(0, 10, 0.3) == 1.0
    assert binom_sf(11, 10, 0.3) == 0.0
    assert binom_sf(1, 10, 0.0) == 0.0
    assert binom_sf(10, 10, 1.0) == 1.0
    assert binom_cdf(10, 10, 0.3) == 1.0
    assert binom_cdf(-1, 10, 0.3) == 0.0
    assert binom_sf(0, 0, 0.5) == 1.0


def test_binom_large_n_is_fast_and_tiny_tails_do_not_underflow_early() -> None:
    """n = 1e7 takes milliseconds; a 22-sigma tail is still a positive number."""
    start = time.perf_counter()
    p = binom_sf(210_000, 10_000_000, 0.02)
    assert time.perf_counter() - start < 0.5
    assert 0 < p < 1e-100


@pytest.mark.parametrize(("k", "mu", "expected"), [
    (1, 50 * 10 / 3600, 0.12967527416660943),       # poisson.sf(0, 0.1389): one churn line in 10 s
    (100, 50.0, 3.2000653245851495e-10),
    (13, 50 * 300 / 3600, 0.00040014560641367966),
    (2000, 1500.0, 6.601488115620536e-35),
])
def test_poisson_sf_known_answers(k: int, mu: float, expected: float) -> None:
    """P(X >= k) matches scipy."""
    assert poisson_sf(k, mu) == pytest.approx(expected, rel=REL)


def test_poisson_cdf_and_edges() -> None:
    """P(X <= k) matches scipy; degenerate arguments are exact."""
    assert poisson_cdf(2, 10.0) == pytest.approx(0.0027693957155115775, rel=REL)
    assert poisson_sf(0, 3.0) == 1.0
    assert poisson_sf(1, 0.0) == 0.0


def test_clopper_pearson_and_one_sided_bounds() -> None:
    """Bounds match scipy's beta quantiles."""
    lo, hi = clopper_pearson(3, 100)
    assert lo == pytest.approx(0.006229971538306395, rel=1e-7)
    assert hi == pytest.approx(0.08517605297428002, rel=1e-7)
    assert binom_upper(90, 18000, 1e-4) == pytest.approx(0.007259521587990454, rel=1e-7)
    assert binom_lower(90, 18000, 1e-4) == pytest.approx(0.0032755969842314615, rel=1e-7)
    assert binom_lower(0, 50, 0.05) == 0.0
    assert binom_upper(50, 50, 0.05) == 1.0
    assert binom_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert binom_upper(3, 0, 0.05) == 1.0


def test_wilson() -> None:
    """Wilson interval matches scipy's binomtest(...).proportion_ci(method='wilson')."""
    lo, hi = wilson(3, 100)
    assert lo == pytest.approx(0.010254524024038925, rel=1e-9)
    assert hi == pytest.approx(0.08451936429052762, rel=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


def test_compare_known_answer() -> None:
    """3% vs 0.5% at realistic counts fails, with the p-value computed independently."""
    c = compare_error_rates(60, 2000, 90, 18000, min_effect=0.01, alpha=0.001)
    assert c.verdict == "fail"
    assert c.p_value == pytest.approx(0.00014481367675982622, rel=1e-6)
    assert c.bound == pytest.approx(0.007259521587990454, rel=1e-7)
    assert c.threshold == pytest.approx(0.017259521587990454, rel=1e-7)
    assert c.effect == pytest.approx(0.025)


def test_compare_equal_rates_pass_with_enough_data() -> None:
    """2% vs 2% passes once there is enough data, and is inconclusive before."""
    assert compare_error_rates(100, 5000, 900, 45000).verdict == "pass"
    assert compare_error_rates(2, 100, 18, 900).verdict == "inconclusive"


def test_compare_without_baseline_data_never_passes() -> None:
    """No old data: inconclusive; a heavily erring canary against a tiny baseline: not pass."""
    assert compare_error_rates(0, 10_000, 0, 0).verdict == "inconclusive"
    assert compare_error_rates(500, 1000, 0, 0).verdict == "inconclusive"
    assert compare_error_rates(40, 100, 0, 3).verdict != "pass"
    assert compare_error_rates(0, 0, 5, 100).verdict == "inconclusive"


def test_compare_validates_arguments() -> None:
    """Impossible counts are refused."""
    with pytest.raises(ValueError, match="errors"):
        compare_error_rates(5, 3, 0, 10)
    with pytest.raises(ValueError, match="alpha"):
        compare_error_rates(1, 3, 0, 10, alpha=0)
