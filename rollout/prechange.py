"""Checks before anything changes: mistakes that would otherwise be found mid-rollout, after a deploy.

* every worker's ``config=`` exists and parses;
* the token works (``wrangler whoami``);
* every worker exists on the target, unless the plan declares it new (``Worker(..., new=True)``).

All problems are reported at once, with the plan's file and line, and the run stops before it has
changed anything (exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio

from .errors import UsageError, WranglerError
from .plan import Plan, Worker
from .preflight import Problem, check_whoami
from .wrangler import Wrangler
from .wrangler_config import load_config

#: Cloudflare's "no such worker" codes in ``deployments status``.
_NO_SUCH_WORKER = (10007, 10090)


def _where(worker: Worker) -> str:
    return f"{worker.defined_at[0]}:{worker.defined_at[1]}: " if worker.defined_at else ""


def config_problems(plan: Plan) -> list[str]:
    """Configs that are missing or do not parse (the deploy would fail on them, after the baseline)."""
    problems = []
    for worker in plan.workers:
        path = plan.resolve_path(worker.config)
        if path is None:
            continue
        config = load_config(path)
        if not config.data:  # it cannot be read, or does not parse
            problems += [f"{_where(worker)}worker {worker.name}: config {p.where}: {p.message} ({p.fix})"
                         for p in config.problems]
    return problems


async def existence_problems(workers: Sequence[Worker], wrangler: Wrangler, cwd: Path | None) -> list[str]:
    """Workers that do not exist (and are not declared new), or whose state cannot be read."""
    problems: list[str] = []

    async def check(worker: Worker) -> None:
        try:
            result = await wrangler.run("deployments", "status", "--name", worker.name, "--json", cwd=cwd)
        except WranglerError as exc:
            problems.append(f"{_where(worker)}cannot read the deployment of {worker.name}: {exc}")
            return
        if result.ok:
            return
        if any(code in result.codes for code in _NO_SUCH_WORKER):
            if not worker.new:
                problems.append(f"{_where(worker)}worker {worker.name} does not exist on this target: if this "
                                f"rollout creates it, declare Worker({worker.name!r}, ..., new=True); otherwise "
                                "check the name")
            return
        first = result.error_text.splitlines()[0] if result.error_text else f"exit {result.returncode}"
        problems.append(f"{_where(worker)}cannot read the deployment of {worker.name}: {first}")

    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(check, worker)
    return problems


async def check_before_change(plan: Plan, wrangler: Wrangler) -> list[str]:
    """Every problem found (empty: nothing stands in the way).  Runs the wrangler calls concurrently."""
    problems = config_problems(plan)
    cwd = plan.source.parent if plan.source else None
    found: list[Problem] = []
    exists: list[str] = []

    async def whoami() -> None:
        found.extend(await check_whoami(wrangler, cwd, []))

    async def existing() -> None:
        exists.extend(await existence_problems(plan.workers, wrangler, cwd))

    async with anyio.create_task_group() as tg:
        tg.start_soon(whoami)
        tg.start_soon(existing)
    problems += [f"{p.message} ({p.fix})" if p.fix else p.message for p in found]
    if not found:  # with a bad token every worker "cannot be read": the token is the one problem to name
        problems += exists
    return problems


def refuse(problems: list[str]) -> UsageError:
    """One error listing every problem; nothing was changed."""
    lines = "\n  - ".join(problems)
    return UsageError(f"not starting: {len(problems)} problem(s) found before any change:\n  - {lines}\n"
                      "nothing was changed")
