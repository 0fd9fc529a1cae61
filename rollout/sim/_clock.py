"""Simulated time: an injectable wall clock, optionally running ``speed`` times faster."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio


class SimClock:
    """Epoch seconds of the simulated world.

    ``clock`` is the source of truth (default :func:`time.time`).  With ``speed`` N the simulated time
    runs N times faster than that source from the moment the clock was made, and :meth:`sleep` waits
    the matching real time.  Tests inject a callable they move by hand.
    """

    def __init__(self, clock: Callable[[], float] | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._source = clock or time.time
        self.speed = speed
        self._origin = self._source()

    def now(self) -> float:
        real = self._source()
        if self.speed == 1.0:
            return real
        return self._origin + (real - self._origin) * self.speed

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.speed

    async def sleep(self, simulated: float) -> None:
        await anyio.sleep(simulated / self.speed)
