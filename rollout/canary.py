"""Canary analysis for gradual rollouts: the new version against the old one, same window, same tail.

Both versions serve side by side during a step (``wrangler versions deploy NEW@10% OLD@90%``) and the
tail tells which one served each request (``scriptVersion``), so the comparison needs no separate
baseline deployment and shares every time-of-day effect.  The test is
:func:`rollout.stats.compare_error_rates`: exact at any sample size, with a minimum effect, so a step
neither fails on noise nor passes without evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rollout.signals import WorkerSignals
from rollout.stats import compare_error_rates

__all__ = ["CanaryVerdict", "analyze_canary"]


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """The explained result of one step's analysis.

    Attributes:
        verdict: ``fail`` (roll back), ``pass`` (promote) or ``inconclusive`` (keep baking).
        p_value: the p-value of the test behind the verdict (see :class:`rollout.stats.Comparison`).
        bound: the bound on the old version's rate the test used.
        threshold: ``bound + min_effect``, the rate the new version was tested against.
        effect: observed new rate - old rate.
        detail: one line for a person.
    """

    new_version: str
    old_version: str
    start_ms: int
    end_ms: int
    new_requests: int
    new_errors: int
    old_requests: int
    old_errors: int
    new_rate: float | None
    old_rate: float | None
    verdict: Literal["fail", "pass", "inconclusive"]
    test: str
    p_value: float | None
    bound: float | None
    threshold: float | None
    effect: float | None
    min_effect: float
    alpha: float
    min_samples: int
    sampled: bool
    detail: str


def _rate(k: int, n: int) -> str:
    return f"{k / n * 100:.2f}% ({k}/{n})" if n else f"no data ({k}/{n})"


def analyze_canary(
    signals: WorkerSignals, new_version: str, old_version: str, start_ms: int, end_ms: int,
    min_effect: float = 0.01, alpha: float = 0.001, min_samples: int = 50,
) -> CanaryVerdict:
    """Compare ``new_version``'s error rate with ``old_version``'s over ``[start_ms, end_ms)`` of event time.

    ``fail`` needs the new version to have ``min_samples`` requests and to be worse than the old one by
    more than ``min_effect`` at level ``alpha``; ``pass`` needs ``min_samples`` requests on both sides and
    the new version to be not worse by ``min_effect`` at level ``alpha``.  Anything else is
    ``inconclusive``, in particular when the old version has no data.
    """
    new = signals.window(start_ms, end_ms, new_version)
    old = signals.window(start_ms, end_ms, old_version)
    c = compare_error_rates(new.errors, new.requests, old.errors, old.requests, min_effect, alpha)
    verdict = c.verdict
    head = f"new {_rate(new.errors, new.requests)} vs old {_rate(old.errors, old.requests)}"
    margin = f"+ {min_effect * 100:.1f} pt"
    if new.requests == 0 or old.requests == 0:
        verdict = "inconclusive"
        why = f"no requests of the {'new' if new.requests == 0 else 'old'} version in the window"
    elif new.requests < min_samples or (verdict == "pass" and old.requests < min_samples):
        short = "new" if new.requests < min_samples else "old"
        why = f"{min(new.requests, old.requests)} < {min_samples} requests on the {short} version"
        verdict = "inconclusive"
    elif verdict == "fail":
        why = (f"worse than old <= {c.bound * 100 if c.bound is not None else 0:.2f}% {margin}: "
               f"exact binomial p={c.p_value:.2g} < {alpha:g}")
    elif verdict == "pass":
        why = (f"not worse than old >= {c.bound * 100 if c.bound is not None else 0:.2f}% {margin}: "
               f"exact binomial p={c.p_value:.2g} < {alpha:g}")
    else:
        why = (f"neither worse nor within old {margin} at {alpha:g} yet (harm p={c.p_fail:.2g}, "
               f"non-inferiority p={c.p_pass:.2g})")
    sampled = new.sampled or old.sampled
    detail = f"{verdict}: {head}: {why}" + (" (tail sampled)" if sampled else "")
    return CanaryVerdict(
        new_version=new_version, old_version=old_version, start_ms=start_ms, end_ms=end_ms,
        new_requests=new.requests, new_errors=new.errors, old_requests=old.requests, old_errors=old.errors,
        new_rate=c.new_rate, old_rate=c.old_rate, verdict=verdict, test=c.test, p_value=c.p_value,
        bound=c.bound, threshold=c.threshold, effect=c.effect, min_effect=min_effect, alpha=alpha,
        min_samples=min_samples, sampled=sampled, detail=detail,
    )
