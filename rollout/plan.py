"""Plans: what to roll out, in which phases, under which guards.  And loading them from a file."""

from __future__ import annotations

import logging
import runpy
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .durations import parse_duration
from .errors import PlanError
from .guards import Guard, default_guards
from .phase import FunctionPhase, Phase, caller_location

logger = logging.getLogger("rollout.plan")


@dataclass(frozen=True)
class Worker:
    """A Cloudflare Worker this plan may change.

    Args:
        name: the worker's script name, as Cloudflare knows it.
        config: its wrangler config (``wrangler.toml``/``.json``/``.jsonc``), relative to the plan file.
        deploy_command: the user's own deploy command as an argument list
            (e.g. ``["npm", "run", "deploy:manifest"]``); default ``wrangler deploy --config CONFIG``.
        cwd: where to run the deploy command (default: the config's folder).
        watch: monitor this worker's tail (default True).
    """

    name: str
    config: str | Path | None = None
    deploy_command: tuple[str, ...] | None = None
    cwd: str | Path | None = None
    watch: bool = True
    defined_at: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise PlanError(f"a Worker needs a name (got {self.name!r})")
        if self.deploy_command is not None and isinstance(self.deploy_command, str):
            raise PlanError(f"worker {self.name}: deploy_command must be an argument list, not a string "
                            f"(got {self.deploy_command!r}); commands never run through a shell")
        if self.deploy_command is not None:
            object.__setattr__(self, "deploy_command", tuple(self.deploy_command))
        if self.defined_at is None:
            object.__setattr__(self, "defined_at", caller_location(3))


@dataclass(frozen=True)
class Plan:
    """A rollout plan: its workers, guards and phases, run in order.

    Args:
        name: shown in the view, the journal and the reports.
        workers: every worker the plan may change.
        phases: phases (or ``async def`` functions taking the context), run in order.
        guards: checked against every deployed worker's live signals; default: the runbook's.
        baseline: how long to measure the workers before the first deploy (e.g. ``"30s"``).
        recovery: how long to keep watching after a rollback for the guard to recover.
        lock: ``"local"`` (a lock file on this machine) or ``"account"`` (a KV record as well).
    """

    name: str
    workers: Sequence[Worker]
    phases: Sequence[Phase | Callable[..., Any]]
    guards: Sequence[Guard] = field(default_factory=default_guards)
    baseline: str | float = "30s"
    recovery: str | float = "60s"
    lock: str = "local"
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", tuple(self.workers))
        object.__setattr__(self, "guards", tuple(self.guards))
        phases: list[Phase] = []
        for index, phase in enumerate(self.phases):
            if isinstance(phase, Phase):
                phases.append(phase)
            elif callable(phase):
                phases.append(FunctionPhase(function=phase, defined_at=caller_location(3)))
            else:
                raise PlanError(f"phase #{index + 1} of plan {self.name!r} is {phase!r}, "
                                "not a Phase or an async function")
        object.__setattr__(self, "phases", tuple(phases))
        for label, value in (("baseline", self.baseline), ("recovery", self.recovery)):
            try:
                parse_duration(value)
            except ValueError as exc:
                raise PlanError(f"plan {self.name!r}: {label}: {exc}") from None
        self.validate()

    @property
    def steps(self) -> tuple[Phase, ...]:
        """The phases, with plain async functions wrapped as :class:`FunctionPhase`."""
        return cast(tuple[Phase, ...], self.phases)

    @property
    def baseline_s(self) -> float:
        return parse_duration(self.baseline)

    @property
    def recovery_s(self) -> float:
        return parse_duration(self.recovery)

    def worker(self, name: str) -> Worker:
        for worker in self.workers:
            if worker.name == name:
                return worker
        raise PlanError(f"plan {self.name!r} has no worker {name!r}")

    def validate(self) -> None:
        """Every phase names known workers; names are unique."""
        names = [w.name for w in self.workers]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise PlanError(f"plan {self.name!r} defines worker(s) twice: {', '.join(sorted(duplicates))}")
        known = set(names)
        for phase in self.steps:
            for name in phase.worker_names():
                if name not in known:
                    raise PlanError(
                        f"{phase.location}: phase {phase.name!r} names worker {name!r}, which the plan does "
                        f"not define; defined workers: {', '.join(names) or 'none'}"
                    )

    def resolve_path(self, value: str | Path | None) -> Path | None:
        if value is None:
            return None
        path = Path(value)
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path


def load_plan(path: str | Path) -> Plan:
    """Run a plan file and return the ``Plan`` it builds (a module-level ``plan`` or ``PLAN``).

    Errors in the file are reported with its name and line, never as a traceback of our internals.
    """
    source = Path(path).resolve()
    if not source.is_file():
        raise PlanError(f"{path}: no such plan file")
    try:
        namespace = runpy.run_path(str(source), run_name="__rollout_plan__")
    except SyntaxError as exc:
        where = f"{exc.filename or source}:{exc.lineno}"
        text = (exc.text or "").rstrip()
        raise PlanError(f"{where}: syntax error: {exc.msg}" + (f"\n    {text}" if text else "")) from None
    except PlanError as exc:
        raise PlanError(_locate(exc, source)) from None
    except Exception as exc:  # the user's code: report where it failed in their file
        raise PlanError(f"{_locate(exc, source)}") from None
    plan = namespace.get("plan", namespace.get("PLAN"))
    if plan is None:
        raise PlanError(f"{source}: defines no `plan` (assign a rollout.Plan to a module-level name `plan`)")
    if not isinstance(plan, Plan):
        raise PlanError(f"{source}: `plan` is a {type(plan).__name__}, not a rollout.Plan")
    object.__setattr__(plan, "source", source)
    return plan


def _locate(exc: BaseException, source: Path) -> str:
    """``file:line: message`` from the deepest frame of the plan file in the traceback."""
    message = str(exc)
    if ":" in message.split(" ", 1)[0] and str(source) in message:
        return message
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == source:
            line = frame.lineno
    where = f"{source}:{line}" if line else str(source)
    kind = "" if isinstance(exc, PlanError) else f"{type(exc).__name__}: "
    return f"{where}: {kind}{message}"
