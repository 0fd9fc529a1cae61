"""``Preflight``: fail before the first deploy, listing every problem at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rollout import _check
from rollout.bus import Diagnosis
from rollout.context import PhaseContext
from rollout.diagnosis import explain_code
from rollout.errors import PhaseFailed
from rollout.phase import Phase
from rollout.plan import Plan, Worker
from rollout.preflight import PreflightOptions, WorkerTarget, run_preflight


def targets(plan: Plan, names: tuple[str, ...] = (), manifests: Mapping[str, str] | None = None) -> list[WorkerTarget]:
    """The plan's workers (or the named ones) as preflight targets."""
    chosen = [w for w in plan.workers if not names or w.name in names]
    manifests = manifests or {}
    return [WorkerTarget(w.name, plan.resolve_path(w.config), plan.resolve_path(manifests.get(w.name)))
            for w in chosen]


@dataclass(frozen=True, kw_only=True, init=False)
class Preflight(Phase):
    """Check wrangler, configs, bound resources, build artifacts and git before anything changes.

    Args:
        workers: the workers to check (default: every worker of the plan).
        require_clean: the git tree must be clean.
        require_tag: HEAD must be tagged.
        artifacts: per worker, the build manifest (``{"commit": SHA}``) that must exist and match HEAD;
            without it a ``dist/build-manifest.json`` next to the config is checked when present.
    """

    workers: tuple[str, ...]
    require_clean: bool = False
    require_tag: bool = False
    artifacts: Mapping[str, str] = field(default_factory=dict)

    def __init__(self, *workers: Worker | str, require_clean: bool = False, require_tag: bool = False,
                 artifacts: Mapping[str, str] | None = None, name: str = "",
                 defined_at: tuple[str, int] | None = None) -> None:
        where = defined_at or _check.here()
        names = tuple(_check.expect_worker(w, f"Preflight(...) worker #{i + 1}", where) for i, w in enumerate(workers))
        _check.expect_bool(require_clean, "Preflight(require_clean=...)", where)
        _check.expect_bool(require_tag, "Preflight(require_tag=...)", where)
        manifests = _check.expect_str_mapping(artifacts, "Preflight(artifacts=...)", where=where)
        _check.expect_str(name, "Preflight(name=...)", where=where)
        object.__setattr__(self, "workers", names)
        object.__setattr__(self, "require_clean", require_clean)
        object.__setattr__(self, "require_tag", require_tag)
        object.__setattr__(self, "artifacts", manifests)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "defined_at", where)
        self.__post_init__()

    def default_name(self) -> str:
        return "preflight"

    def worker_names(self) -> tuple[str, ...]:
        return self.workers

    def describe(self) -> list[str]:
        lines = ["wrangler whoami", "parse every wrangler config; check binding types and required fields",
                 "wrangler d1 list --json / r2 bucket list / kv namespace list / queues list (as bound)",
                 "wrangler deployments status --name SERVICE --json (for each service binding)",
                 "build manifest commit == git rev-parse HEAD"]
        if self.require_clean or self.require_tag:
            lines.append("git status --porcelain is empty" * self.require_clean
                         + (" ; " if self.require_clean and self.require_tag else "")
                         + "git describe --exact-match --tags HEAD" * self.require_tag)
        return lines

    async def run(self, ctx: PhaseContext) -> None:
        plan = ctx.plan
        options = PreflightOptions(require_clean=self.require_clean, require_tag=self.require_tag,
                                   repo_dir=plan.source.parent if plan.source else None)
        result = await run_preflight(targets(plan, self.workers, self.artifacts), ctx.wrangler, options)
        for passed in result.passed:
            ctx.say(f"ok: {passed}")
        for problem in result.problems:
            info = explain_code(problem.code)
            ctx.publish(Diagnosis(phase=ctx.phase, command=f"preflight {problem.check}", code=problem.code,
                                  message=f"{problem.where + ': ' if problem.where else ''}{problem.message}",
                                  cause=info.cause or problem.message, fix=problem.fix or info.fix))
        if result.problems:
            raise PhaseFailed(ctx.phase, f"{len(result.problems)} problem(s): "
                              + " | ".join(p.line().replace("\n      ", " ") for p in result.problems))
