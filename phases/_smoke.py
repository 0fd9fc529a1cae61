"""``Smoke``: run probes against a worker; each probe is retried briefly (the edge may lag a deploy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from rollout.bus import ProbeChecked
from rollout.context import PhaseContext
from rollout.errors import PhaseFailed
from rollout.phase import Phase
from rollout.plan import Worker
from rollout.probe import FunctionProbe, Probe, ProbeResult


@dataclass(frozen=True, kw_only=True, init=False)
class Smoke(Phase):
    """Run ``probes`` against ``worker``; the phase fails if any probe still fails after ``attempts``."""

    worker: str
    probes: tuple[Probe, ...]
    attempts: int
    retry_delay_s: float

    def __init__(self, worker: Worker | str, probes: Sequence[Probe | Callable[..., Any]], *, attempts: int = 3,
                 retry_delay_s: float = 1.0, name: str = "", defined_at: tuple[str, int] | None = None) -> None:
        wrapped = tuple(p if isinstance(p, Probe) else FunctionProbe(function=p) for p in probes)
        object.__setattr__(self, "worker", worker.name if isinstance(worker, Worker) else worker)
        object.__setattr__(self, "probes", wrapped)
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "retry_delay_s", retry_delay_s)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", defined_at)
        self.__post_init__()

    def default_name(self) -> str:
        return f"smoke {self.worker}"

    def worker_names(self) -> tuple[str, ...]:
        return (self.worker,)

    def describe(self) -> list[str]:
        return [f"probe {self.worker}: {probe.name}" for probe in self.probes]

    async def run(self, ctx: PhaseContext) -> None:
        failures = []
        for probe in self.probes:
            result = ProbeResult(False, "not run")
            for attempt in range(1, self.attempts + 1):
                result = await probe.check(ctx, self.worker)
                if result.ok:
                    break
                if attempt < self.attempts:
                    await anyio.sleep(self.retry_delay_s)
            ctx.publish(ProbeChecked(phase=ctx.phase, worker=self.worker, probe=probe.name, ok=result.ok,
                                     saw=result.saw, seconds=result.seconds))
            if not result.ok:
                failures.append(f"{probe.name}: {result.saw}")
        if failures:
            raise PhaseFailed(ctx.phase, "; ".join(failures))
