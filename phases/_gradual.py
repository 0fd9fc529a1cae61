"""``Gradual``: a new version beside the old one, traffic moved in steps, canary judged against stable.

Each step runs ``wrangler versions deploy NEW@P OLD@(100-P) -y`` and bakes; the step's verdict compares
the new version's error rate with the old version's **over the same time, from the same tail**, split by
``scriptVersion`` (see :func:`rollout.canary.analyze_canary` for the exact test).  Pass → next step;
fail → the phase fails and the engine rolls the worker back to 100% old; inconclusive (not enough data)
→ keep baking up to ``max_bake``, then ask (a non-interactive run does not promote without evidence).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import anyio

from rollout import _check
from rollout.bus import Breach, Message, ProbeChecked
from rollout.canary import CanaryVerdict, analyze_canary
from rollout.context import PhaseContext
from rollout.durations import format_duration
from rollout.errors import PhaseFailed
from rollout.phase import Phase
from rollout.plan import Worker
from rollout.probe import Probe

from ._smoke import probe_list

_VERSION_ID = re.compile(r"Worker Version ID:\s*([0-9a-f-]{36})")
VERSION_OVERRIDE_HEADER = "Cloudflare-Workers-Version-Overrides"


@dataclass(frozen=True, kw_only=True, init=False)
class Gradual(Phase):
    """Upload a new version and move traffic to it in ``steps`` (percentages), judging each step.

    Args:
        worker: the worker (its config is uploaded with ``wrangler versions upload``).
        steps: traffic percentages for the new version, e.g. ``(1, 10, 50, 100)``.
        bake: time at each step before it is judged (plan time; ``--time-scale`` applies).
        max_bake: the longest a step waits for a conclusive verdict.
        final_bake: time at 100% under the guards.
        smoke: probes run against the new version at 0%, with the version-override header.
        min_effect: the error-rate difference (in rate, 0.01 = 1 point) that counts as worse.
        alpha: the significance level for failing a step (strict: noise must never roll back).
        pass_alpha: the level for passing it (looser: a passed step only moves to the next step, where
            the guards and the next verdict keep watching with more data).
        min_samples: requests each version needs before a verdict.
    """

    worker: str
    steps: tuple[float, ...]
    bake_s: float
    max_bake_s: float
    final_bake_s: float
    smoke: tuple[Probe, ...]
    min_effect: float
    alpha: float
    pass_alpha: float
    min_samples: int

    def __init__(self, worker: Worker | str, steps: Sequence[float] = (1, 10, 50, 100), *, bake: str | float = "2m",
                 max_bake: str | float | None = None, final_bake: str | float = "5m", smoke: Sequence[Probe] = (),
                 min_effect: float = 0.01, alpha: float = 0.001, pass_alpha: float = 0.05, min_samples: int = 50,
                 name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        where = defined_at or _check.here()
        worker_name = _check.expect_worker(worker, "Gradual(worker=...)", where)
        percentages = _steps(steps, where)
        bake_s = _check.expect_duration(bake, "Gradual(bake=...)", positive=True, where=where)
        max_bake_s = (_check.expect_duration(max_bake, "Gradual(max_bake=...)", positive=True, where=where)
                      if max_bake is not None else 4 * bake_s)
        final_s = _check.expect_duration(final_bake, "Gradual(final_bake=...)", where=where)
        probes = probe_list(smoke, "Gradual", "smoke", None, where)
        _check.expect_number(min_effect, "Gradual(min_effect=...)", low=0, high=1, high_open=True,
                             expected="an error-rate difference in [0, 1), such as 0.01 for one point", where=where)
        _check.expect_number(alpha, "Gradual(alpha=...)", low=0, high=1, low_open=True, high_open=True, where=where)
        _check.expect_number(pass_alpha, "Gradual(pass_alpha=...)", low=0, high=1, low_open=True, high_open=True,
                             where=where)
        if pass_alpha < alpha:
            _check.fail(f"Gradual(pass_alpha=...) must be at least alpha={alpha:g} (it is the looser level, for "
                        f"passing a step), got {pass_alpha:g}", where)
        _check.expect_int(min_samples, "Gradual(min_samples=...)", low=0, where=where)
        _check.expect_str(name, "Gradual(name=...)", where=where)
        values = {"worker": worker_name, "steps": percentages, "bake_s": bake_s,
                  "max_bake_s": max(max_bake_s, bake_s), "final_bake_s": final_s, "smoke": probes,
                  "min_effect": min_effect, "alpha": alpha, "pass_alpha": pass_alpha, "min_samples": min_samples,
                  "name": name, "defined_at": where}
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self.__post_init__()

    def default_name(self) -> str:
        return f"gradual {self.worker} " + "→".join(f"{s:g}%" for s in self.steps)

    def worker_names(self) -> tuple[str, ...]:
        return (self.worker,)

    def describe(self) -> list[str]:
        lines = [f"wrangler versions upload --config <{self.worker} config>"]
        lines += [f"probe the new version at 0%: {p.name} ({VERSION_OVERRIDE_HEADER})" for p in self.smoke]
        for step in self.steps:
            old = f" <old>@{100 - step:g}%" if step < 100 else ""
            lines.append(f"wrangler versions deploy <new>@{step:g}%{old} --name {self.worker} -y")
            lines.append(f"bake {format_duration(self.bake_s if step < 100 else self.final_bake_s)}; "
                         "judge new vs old (exact binomial, same window)" if step < 100 else
                         f"bake {format_duration(self.final_bake_s)} at 100% under the guards")
        return lines

    async def run(self, ctx: PhaseContext) -> None:
        worker = ctx.worker(self.worker)
        state = await ctx.active(worker.name)
        old = state.sole_version if state else None
        if old is None:
            raise PhaseFailed(ctx.phase, f"{worker.name} must serve one version at 100% before a gradual rollout "
                                         f"(now: {state.versions if state else 'no deployment'})")
        new = await self._upload(ctx, worker)
        ctx.say(f"{worker.name}: uploaded {new} beside {old}")
        await self._smoke(ctx, new)
        await ctx.note_change_intent(worker.name, old)
        previous = 0.0
        for step in self.steps:
            split = [(new, step)] + ([(old, 100 - step)] if step < 100 else [])
            shift_ms = ctx.note_traffic_shift(worker.name, (step - previous) / 100)  # DOs of that share restart
            result = await ctx.wrangler.versions_deploy(worker.name, split, f"rollout: {self.name} step {step:g}%")
            current = await ctx.active(worker.name)
            moved = current is not None and current.percentage(new) > previous
            if current is not None and current.percentage(new) > 0:
                await ctx.note_changed(worker.name, old, new, ("wrangler", *result.argv))
            if not moved:
                ctx.withdraw_traffic_shift(worker.name, shift_ms)
            if not result.ok:
                ctx.diagnose(result, "wrangler versions deploy")
                raise PhaseFailed(ctx.phase, f"versions deploy {step:g}% failed: {result.error_text[:300]}")
            previous = step
            ctx.say(f"{worker.name}: {new} at {step:g}%")
            if step < 100:
                await self._judge_step(ctx, new, old, step)
        await ctx.bake(self.final_bake_s)

    async def _upload(self, ctx: PhaseContext, worker: Worker) -> str:
        config = ctx.plan.resolve_path(worker.config)
        if config is None:
            raise PhaseFailed(ctx.phase, f"{worker.name}: Gradual needs the worker's wrangler config")
        result = await ctx.wrangler.versions_upload(config, message=f"rollout: {ctx.plan.name}", cwd=config.parent)
        if not result.ok:
            ctx.diagnose(result, "wrangler versions upload")
            raise PhaseFailed(ctx.phase, f"versions upload failed: {result.error_text[:300]}")
        record = result.record("version-upload")
        if record and isinstance(record.get("version_id"), str):
            return str(record["version_id"])
        match = _VERSION_ID.search(result.stdout)
        if match is None:
            raise PhaseFailed(ctx.phase, f"versions upload printed no version id: {result.stdout[-200:]!r}")
        return match.group(1)

    async def _smoke(self, ctx: PhaseContext, new: str) -> None:
        header = {VERSION_OVERRIDE_HEADER: f'{self.worker}="{new}"'}
        failures = []
        for probe in self.smoke:
            probe_with_header = _with_headers(probe, header)
            result = await probe_with_header.check(ctx, self.worker)
            ctx.publish(ProbeChecked(phase=ctx.phase, worker=self.worker, probe=f"{probe.name} @0%", ok=result.ok,
                                     saw=result.saw, seconds=result.seconds))
            if not result.ok:
                failures.append(f"{probe.name}: {result.saw}")
        if failures:
            raise PhaseFailed(ctx.phase, "new version failed its 0% smoke test: " + "; ".join(failures))

    async def _judge_step(self, ctx: PhaseContext, new: str, old: str, step: float) -> None:
        signals = ctx.signals(self.worker)
        start_ms = int(ctx.now() * 1000)
        waited = 0.0
        bake = ctx.scaled(self.bake_s)
        limit = ctx.scaled(self.max_bake_s)
        verdict: CanaryVerdict | None = None
        while True:
            chunk = bake if waited == 0 else max(0.5, bake / 4)
            await anyio.sleep(chunk)
            waited += chunk
            end_ms = int(ctx.now() * 1000) + 1
            verdict = analyze_canary(signals, new, old, start_ms, end_ms, min_effect=self.min_effect,
                                     alpha=self.alpha, min_samples=self.min_samples)
            if verdict.verdict != "fail":
                verdict = analyze_canary(signals, new, old, start_ms, end_ms, min_effect=self.min_effect,
                                         alpha=self.pass_alpha, min_samples=self.min_samples)
                if verdict.verdict == "fail":  # significant only at the looser level: not evidence enough
                    verdict = replace(verdict, verdict="inconclusive",
                                      detail=f"leaning worse, not yet significant at {self.alpha:g}: {verdict.detail}")
            ctx.publish(Message(text=f"step {step:g}%: {verdict.verdict} — {verdict.detail}", phase=ctx.phase))
            if verdict.verdict == "fail":
                ctx.publish(Breach(guard="canary_vs_stable", worker=self.worker, action="rollback",
                                   value=verdict.new_rate, baseline=verdict.old_rate,
                                   threshold=verdict.threshold or 0.0, samples=verdict.new_requests,
                                   window_s=(verdict.end_ms - verdict.start_ms) / 1000, detail=verdict.detail,
                                   p_value=verdict.p_value))
                raise PhaseFailed(ctx.phase, f"canary failed at {step:g}%: {verdict.detail}")
            if verdict.verdict == "pass":
                # the canary passed; the step still ends only when every rollback guard is judged ok
                await ctx.require_evidence()
                return
            if waited >= limit:
                break
        question = (f"step {step:g}% of {self.worker} is inconclusive after {format_duration(waited)} "
                    f"({verdict.detail if verdict else ''}). Promote anyway?")
        if not await ctx.ask(question):
            raise PhaseFailed(ctx.phase, f"inconclusive at {step:g}%: not promoting without evidence")


def _steps(steps: object, where: tuple[str, int] | None) -> tuple[float, ...]:
    """Traffic percentages rising strictly within (0, 100]; 100 is added when the last step is below it."""
    wanted = "percentages rising strictly within (0, 100], such as (1, 10, 50, 100)"
    if isinstance(steps, str | bytes | Mapping) or not isinstance(steps, Iterable):
        _check.fail(f"Gradual(steps=...) must be {wanted}, got {_check.describe(steps)}", where)
    given = tuple(steps)
    if not given:
        _check.fail(f"Gradual(steps=...) must be {wanted}, got no steps", where)
    percentages = tuple(_check.expect_number(step, f"Gradual(steps=...) step #{index + 1}", low=0, high=100,
                                             low_open=True, expected="a percentage in (0, 100]", where=where)
                        for index, step in enumerate(given))
    if list(percentages) != sorted(set(percentages)):
        _check.fail(f"Gradual(steps=...) must be {wanted}, got {_check.describe(steps)}", where)
    if percentages[-1] != 100:
        percentages = (*percentages, 100.0)
    return percentages


def _with_headers(probe: Probe, headers: dict[str, str]) -> Probe:
    """A copy of an HTTP probe that also sends ``headers``; other probes are used as they are."""
    existing = getattr(probe, "headers", None)
    if not isinstance(existing, dict):
        return probe
    import copy

    clone = copy.copy(probe)
    object.__setattr__(clone, "headers", {**existing, **headers})
    return clone
