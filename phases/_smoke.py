"""``Smoke``: run probes against a worker; each probe is retried briefly (the edge may lag a deploy)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from rollout import _check
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
        where = defined_at or _check.here()
        worker_name = _check.expect_worker(worker, "Smoke(worker=...)", where)
        wrapped = probe_list(probes, "Smoke", "probes", 1, where)
        _check.expect_int(attempts, "Smoke(attempts=...)", low=1, where=where)
        delay = _check.expect_number(retry_delay_s, "Smoke(retry_delay_s=...)", low=0,
                                     expected="a number of seconds >= 0", where=where)
        _check.expect_str(name, "Smoke(name=...)", where=where)
        object.__setattr__(self, "worker", worker_name)
        object.__setattr__(self, "probes", wrapped)
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "retry_delay_s", delay)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", where)
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


def probe_list(probes: object, phase: str, keyword: str, position: int | None,
               where: tuple[str, int] | None) -> tuple[Probe, ...]:
    """``probes`` checked: a list of probes (``Status(...)``, ...) or ``async def probe(ctx, worker)``
    functions, which are wrapped as :class:`FunctionProbe`.  Errors point at the offending item's line."""
    what = f"{phase}({keyword}=...)"
    if isinstance(probes, Probe | str | bytes | Mapping) or callable(probes) or not isinstance(probes, Iterable):
        _check.fail(f"{what} must be a list of probes such as [Status('/health')], got {_check.describe(probes)}",
                    _check.element_location(where, phase, keyword, position))
    wrapped: list[Probe] = []
    for index, probe in enumerate(probes):
        at = _check.element_location(where, phase, keyword, position, index)
        if isinstance(probe, Probe):
            wrapped.append(probe)
        elif callable(probe) and not isinstance(probe, type):
            _check.expect_async_function(probe, f"{what} item #{index + 1}", "async def {name}(ctx, worker)", at)
            wrapped.append(FunctionProbe(function=probe, defined_at=at))
        else:
            _check.fail(f"{what} item #{index + 1} must be a probe such as Status('/health') from probes, or an "
                        f"async function (async def NAME(ctx, worker)), got {_check.describe(probe)}", at)
    return tuple(wrapped)
