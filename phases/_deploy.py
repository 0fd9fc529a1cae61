"""``Deploy``: ``wrangler deploy`` (or the user's own command), recording the version before and after."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rollout import _check
from rollout.context import PhaseContext
from rollout.errors import PhaseFailed
from rollout.phase import Phase
from rollout.plan import Worker


def _names(workers: tuple[Worker | str, ...]) -> tuple[str, ...]:
    return tuple(w.name if isinstance(w, Worker) else w for w in workers)


@dataclass(frozen=True, kw_only=True, init=False)
class Deploy(Phase):
    """Deploy workers one after another (in the order given).

    A failed deploy may already have put the new version live (wrangler uploads and deploys before
    it sets up routes), so the active version is read again after every deploy, success or not.
    """

    workers: tuple[Worker | str, ...]
    message: str | None = None

    def __init__(self, *workers: Worker | str, message: str | None = None, name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        where = defined_at or _check.here()
        if not workers:
            _check.fail("Deploy() needs at least one worker: Deploy(worker, ...) with a rollout.Worker or its name",
                        where)
        if len(workers) == 1 and isinstance(workers[0], list | tuple):
            _check.fail(f"Deploy(...) takes the workers one by one, Deploy(a, b), got {_check.describe(workers[0])}",
                        where)
        for index, worker in enumerate(workers):
            _check.expect_worker(worker, f"Deploy(...) worker #{index + 1}", where)
        _check.expect_str(message, "Deploy(message=...)", optional=True, where=where)
        _check.expect_str(name, "Deploy(name=...)", where=where)
        object.__setattr__(self, "workers", tuple(workers))
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", where)
        self.__post_init__()

    def default_name(self) -> str:
        return "deploy " + ", ".join(_names(self.workers))

    def worker_names(self) -> tuple[str, ...]:
        return _names(self.workers)

    def describe(self) -> list[str]:
        lines = []
        for worker in self.workers:
            if isinstance(worker, Worker) and worker.deploy_command:
                lines.append(" ".join(worker.deploy_command))
            else:
                wname = worker.name if isinstance(worker, Worker) else worker
                config = worker.config if isinstance(worker, Worker) else None
                lines.append(f"wrangler deploy --config {config}" if config else f"wrangler deploy --name {wname}")
        return lines

    async def run(self, ctx: PhaseContext) -> None:
        for name in self.worker_names():
            await deploy_one(ctx, ctx.worker(name), self.message)


async def deploy_one(ctx: PhaseContext, worker: Worker, message: str | None) -> str | None:
    """Deploy one worker; returns the new active version id."""
    before_state = await ctx.active(worker.name)
    before = before_state.sole_version if before_state else None
    if before_state is not None and before is None and before_state.versions:
        # A split deployment: roll back to the version with the most traffic.
        before = max(before_state.versions, key=lambda item: item[1])[0]
    await ctx.note_change_intent(worker.name, before)
    shift_ms = ctx.note_traffic_shift(worker.name, 1.0)  # its Durable Objects restart once the edge switches
    config = ctx.plan.resolve_path(worker.config)
    cwd = ctx.plan.resolve_path(worker.cwd) or (config.parent if config else None)
    if worker.deploy_command:
        command = await ctx.run_command(worker.deploy_command, cwd=cwd)
        ok, argv, error = command.returncode == 0, command.argv, command.output.strip().splitlines()[-5:]
        if not ok:
            ctx.say(f"{' '.join(argv)} exited {command.returncode}", "error")
    else:
        if config is not None and not config.is_file():
            raise PhaseFailed(ctx.phase, f"{worker.name}: wrangler config {config} does not exist")
        result = await ctx.wrangler.deploy(Path(config.name) if config else None, name=None if config else worker.name,
                                           message=message, cwd=cwd)
        ok, argv, error = result.ok, ("wrangler", *result.argv), result.error_text.splitlines()[:5]
        if not ok:
            ctx.diagnose(result, "wrangler deploy")
    after_state = await ctx.active(worker.name)
    after = after_state.sole_version if after_state else None
    if after_state is not None and after is None and after_state.versions:
        after = max(after_state.versions, key=lambda item: item[1])[0]
    if after != before:
        await ctx.note_changed(worker.name, before, after, argv)
    else:
        ctx.withdraw_traffic_shift(worker.name, shift_ms)
    if not ok:
        live = " (the new version went live anyway)" if after != before else ""
        raise PhaseFailed(ctx.phase, f"deploy of {worker.name} failed{live}: " + " | ".join(error)[:400])
    if after == before:
        ctx.say(f"{worker.name}: deploy left {before} active (nothing changed)", "warn")
    return after


__all__ = ["Deploy", "deploy_one"]
