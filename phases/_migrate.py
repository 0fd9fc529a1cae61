"""``Migrate``: apply a worker's pending D1 migrations, by binding name, and journal each one applied."""

from __future__ import annotations

from dataclasses import dataclass

from rollout import _check
from rollout.bus import Diagnosis
from rollout.context import PhaseContext
from rollout.diagnosis import explain_code
from rollout.errors import PhaseFailed, PlanError
from rollout.migrations import D1Migrator
from rollout.phase import Phase
from rollout.plan import Worker
from rollout.wrangler_config import load_config


@dataclass(frozen=True, kw_only=True, init=False)
class Migrate(Phase):
    """Apply pending D1 migrations of a worker (every D1 binding of its config, or the ones named).

    Running it twice applies nothing the second time.  D1 data is never rolled back: a rollback after
    this phase leaves the migrations applied, and the report says so.
    """

    worker: Worker | str
    bindings: tuple[str, ...]

    def __init__(self, worker: Worker | str, *bindings: str, name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        where = defined_at or _check.here()
        _check.expect_worker(worker, "Migrate(worker=...)", where)
        for index, binding in enumerate(bindings):
            _check.expect_str(binding, f"Migrate(...) binding #{index + 1}", nonempty=True,
                              expected="a D1 binding name (a non-empty str) such as 'DB'", where=where)
        _check.expect_str(name, "Migrate(name=...)", where=where)
        object.__setattr__(self, "worker", worker)
        object.__setattr__(self, "bindings", tuple(bindings))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", where)
        self.__post_init__()

    @property
    def worker_name(self) -> str:
        return self.worker.name if isinstance(self.worker, Worker) else self.worker

    def default_name(self) -> str:
        return f"migrate {self.worker_name}" + (f" ({', '.join(self.bindings)})" if self.bindings else "")

    def worker_names(self) -> tuple[str, ...]:
        return (self.worker_name,)

    def describe(self) -> list[str]:
        names = ", ".join(self.bindings) or "BINDING"
        return [f"wrangler d1 migrations list {names} --remote", f"wrangler d1 migrations apply {names} --remote"
                "   (only when something is pending)"]

    async def run(self, ctx: PhaseContext) -> None:
        worker = ctx.worker(self.worker_name)
        path = ctx.plan.resolve_path(worker.config)
        if path is None:
            raise PlanError(f"{self.location}: Migrate({self.worker_name!r}) needs the worker's wrangler config")
        config = load_config(path)
        if config.problems:
            raise PhaseFailed(ctx.phase, "; ".join(f"{p.where}: {p.message}" for p in config.problems))
        d1 = config.of_kind("d1")
        wanted = self.bindings or tuple(b.name for b in d1)
        if not wanted:
            raise PhaseFailed(ctx.phase, f"{path} has no [[d1_databases]] binding to migrate")
        for binding_name in wanted:
            binding = config.d1(binding_name)
            if binding is None:
                names = ", ".join(b.name for b in d1) or "none"
                raise PhaseFailed(ctx.phase, f"{path} has no D1 binding {binding_name!r} (D1 bindings: {names}); "
                                             "Migrate takes the binding name, not the database name")
            run = await D1Migrator(ctx.wrangler, path, binding_name).migrate(config.migrations_dir(binding))
            for migration in run.applied:
                await ctx._engine.journal.record_migration(ctx.rollout_id, worker.name, binding_name, migration,
                                                           ctx.now())
            pending = len(run.pending_before)
            ctx.say(f"{worker.name} {binding_name}: {len(run.local)} migration(s) in the folder, {pending} pending, "
                    f"applied {len(run.applied)}" + (f": {', '.join(run.applied)}" if run.applied else ""))
            if run.error is not None:
                for code in run.error.codes or (None,):
                    info = explain_code(code, run.error.stderr.splitlines()[0] if run.error.stderr else "")
                    ctx.publish(Diagnosis(phase=ctx.phase, command="wrangler " + " ".join(run.error.argv), code=code,
                                          message=info.message or str(run.error), cause=info.cause, fix=info.fix))
                raise PhaseFailed(ctx.phase, f"{binding_name}: applying migrations failed after {len(run.applied)} "
                                             f"of {pending}: {run.error}")
