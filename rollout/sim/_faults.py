"""API fault injection: which calls fail, how often, and how slowly they answer."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rollout.errors import SimulatorError

if TYPE_CHECKING:
    from rollout.sim.scenario import ApiFault

#: Command names the API works out from what was sent, besides the per-operation ones in
#: ``rollout.sim._api._COMMANDS`` (see ``Api.names``).
DERIVED_COMMANDS = ("deploy", "versions-upload", "versions-deploy", "rollback")


@functools.cache
def known_calls() -> tuple[str, ...]:
    """Every name a fault's ``call`` can match: ``*``, the operations and the command names."""
    from rollout.sim import _api  # _api imports this module

    names = {op for _, _, op, _ in _api._ROUTE_TABLE} | set(_api._COMMANDS.values()) | set(DERIVED_COMMANDS)
    return ("*", *sorted(names))


def unknown_call(call: str) -> str | None:
    """Why ``call`` matches no API call (with the closest known name), or None when it is known."""
    known = known_calls()
    if call in known:
        return None
    close = difflib.get_close_matches(call.lower(), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no API call is named {call!r}{hint} (known: {', '.join(known)})"


@dataclass(frozen=True, slots=True)
class Injection:
    """What to do to one API call: wait ``delay`` seconds, then maybe fail."""

    delay: float = 0.0
    fault: ApiFault | None = None


class FaultInjector:
    """Counts matching calls per fault, so ``skip``/``times`` mean "the 2nd and 3rd rollback"."""

    def __init__(self, faults: tuple[ApiFault, ...], api_delay: float = 0.0) -> None:
        for fault in faults:
            problem = unknown_call(fault.call)
            if problem is not None:
                raise SimulatorError(f"API fault: {problem}")
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
