"""API fault injection: which calls fail, how often, and how slowly they answer."""

from __future__ import annotations

from dataclasses import dataclass

from rollout.sim.scenario import ApiFault


@dataclass(frozen=True, slots=True)
class Injection:
    """What to do to one API call: wait ``delay`` seconds, then maybe fail."""

    delay: float = 0.0
    fault: ApiFault | None = None


class FaultInjector:
    """Counts matching calls per fault, so ``skip``/``times`` mean "the 2nd and 3rd rollback"."""

    def __init__(self, faults: tuple[ApiFault, ...], api_delay: float = 0.0) -> None:
        self._faults = faults
        self._seen = [0] * len(faults)
        self._api_delay = api_delay

    def check(self, names: set[str]) -> Injection:
        """The injection for a call known by ``names`` (operation name plus command names)."""
        delay, failing = self._api_delay, None
        for i, fault in enumerate(self._faults):
            if fault.call not in names and fault.call != "*":
                continue
            self._seen[i] += 1
            nth = self._seen[i] - fault.skip
            if nth < 1 or (fault.times > 0 and nth > fault.times):
                continue
            delay += fault.delay
            if fault.fail and failing is None:
                failing = fault
        return Injection(delay, failing)
