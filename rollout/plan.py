"""Plans: what to roll out, in which phases, under which guards.  And loading them from a file."""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import runpy
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from . import _check
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
        new: this rollout creates the worker (it does not exist yet); otherwise a worker that does not exist
            stops the run before anything changes (a typo'd name).
    """

    name: str
    config: str | Path | None = None
    deploy_command: tuple[str, ...] | None = None
    cwd: str | Path | None = None
    watch: bool = True
    new: bool = False
    defined_at: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.defined_at is None:
            object.__setattr__(self, "defined_at", caller_location(3))
        where = self.defined_at
        _check.expect_str(self.name, "Worker(name=...)", nonempty=True,
                          expected="the worker's script name (a non-empty str) such as 'cf-ssai'", where=where)
        _check.expect_path(self.config, f"Worker({self.name!r}, config=...)", optional=True, where=where)
        _check.expect_path(self.cwd, f"Worker({self.name!r}, cwd=...)", optional=True, where=where)
        _check.expect_bool(self.watch, f"Worker({self.name!r}, watch=...)", where=where)
        if self.deploy_command is not None:
            command = _check.expect_argv(self.deploy_command, f"Worker({self.name!r}, deploy_command=...)", where)
            object.__setattr__(self, "deploy_command", command)


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
        evidence_wait: how long a bake goes on past its time while a rollback guard is not yet judged ok
            (inconclusive, no data, blind); then the phase fails and what changed is rolled back.
        baseline_requests: the requests each worker's baseline must hold (default: the largest
            ``min_samples`` of the guards, at least 30); the baseline goes on until it has them.
        baseline_max: the longest the baseline goes on waiting for those requests.
    """

    name: str
    workers: Sequence[Worker]
    phases: Sequence[Phase | Callable[..., Any]]
    guards: Sequence[Guard] = field(default_factory=default_guards)
    baseline: str | float = "30s"
    recovery: str | float = "60s"
    lock: str = "local"
    evidence_wait: str | float = "5m"
    baseline_requests: int | None = None
    baseline_max: str | float = "3m"
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = caller_location(3)
        _check.expect_str(self.name, "Plan(name=...)", nonempty=True, where=where)
        workers = self._items("workers", where)
        for index, worker in enumerate(workers):
            if not isinstance(worker, Worker):
                hint = f" (write Worker({worker!r}, config=...))" if isinstance(worker, str) else ""
                _check.fail(f"Plan(workers=[...]) item #{index + 1} must be a rollout.Worker{hint}, "
                            f"got {_check.describe(worker)}", self._at(where, "workers", index))
        object.__setattr__(self, "workers", workers)
        guards = self._items("guards", where)
        for index, guard in enumerate(guards):
            if not isinstance(guard, Guard) or isinstance(guard, type):
                _check.fail(f"Plan(guards=[...]) item #{index + 1} must be a guard such as ErrorRate(...), "
                            f"LogRate(...) or NewExceptions(...) from rollout.guards, got {_check.describe(guard)}",
                            self._at(where, "guards", index))
        object.__setattr__(self, "guards", guards)
        phases: list[Phase] = []
        for index, phase in enumerate(self._items("phases", where)):
            at = self._at(where, "phases", index)
            if isinstance(phase, Phase):
                phases.append(phase)
            elif callable(phase) and not isinstance(phase, type):
                _check.expect_async_function(phase, f"Plan(phases=[...]) item #{index + 1}", "async def {name}(ctx)",
                                             at)
                phases.append(FunctionPhase(function=phase, defined_at=at))
            else:
                _check.fail(f"Plan(phases=[...]) item #{index + 1} must be a phase such as Deploy(...) or Watch(...) "
                            f"from phases, or an async function (async def NAME(ctx)), got {_check.describe(phase)}",
                            at)
        object.__setattr__(self, "phases", tuple(phases))
        _check.expect_duration(self.baseline, "Plan(baseline=...)", where=self._at(where, "baseline"))
        _check.expect_duration(self.recovery, "Plan(recovery=...)", where=self._at(where, "recovery"))
        _check.expect_choice(self.lock, ("local", "account"), "Plan(lock=...)", self._at(where, "lock"))
        _check.expect_duration(self.evidence_wait, "Plan(evidence_wait=...)", where=self._at(where, "evidence_wait"))
        _check.expect_duration(self.baseline_max, "Plan(baseline_max=...)", where=self._at(where, "baseline_max"))
        if self.baseline_requests is not None and (not isinstance(self.baseline_requests, int)
                                                   or isinstance(self.baseline_requests, bool)
                                                   or self.baseline_requests < 0):
            _check.fail("Plan(baseline_requests=...) must be a whole number of requests >= 0, got "
                        f"{_check.describe(self.baseline_requests)}", self._at(where, "baseline_requests"))
        self.validate()

    def _items(self, label: str, where: _check.Where) -> tuple[Any, ...]:
        """``workers``/``guards``/``phases`` as a tuple; a single value or a str where a list belongs is refused."""
        value = getattr(self, label)
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            _check.fail(f"Plan({label}=...) must be a list of {label}, got {_check.describe(value)}",
                        self._at(where, label))
        return tuple(value)

    @staticmethod
    def _at(where: _check.Where, keyword: str, index: int | None = None) -> _check.Where:
        """The line of ``keyword=`` (or of its item ``index``) in the ``Plan(...)`` call at ``where``."""
        return _check.element_location(where, "Plan", keyword, None, index)

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

    @property
    def evidence_wait_s(self) -> float:
        return parse_duration(self.evidence_wait)

    @property
    def baseline_max_s(self) -> float:
        return parse_duration(self.baseline_max)

    @property
    def baseline_need(self) -> int:
        """Requests each worker's baseline must hold before it ends (unless ``baseline_max`` passes)."""
        if self.baseline_requests is not None:
            return self.baseline_requests
        return max([30, *(int(getattr(g, "min_samples", 0)) for g in self.guards)])

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
            _check.fail(f"plan {self.name!r} defines worker(s) twice: {', '.join(sorted(duplicates))}")
        known = set(names)
        for phase in self.steps:
            for name in phase.worker_names():
                if name not in known:
                    raise PlanError(
                        f"{phase.location}: phase {phase.name!r} names worker {name!r}, which the plan does "
                        f"not define; defined workers: {', '.join(names) or 'none'}"
                    )
        for guard in self.guards:
            scope = getattr(guard, "workers", ())
            unknown = [n for n in scope if n not in known] if isinstance(scope, tuple) else []
            if unknown:
                _check.fail(f"guard {guard.name!r} names worker {unknown[0]!r}, which the plan does not define; "
                            f"defined workers: {', '.join(names) or 'none'}", getattr(guard, "defined_at", None))

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
        raise PlanError(_locate(exc, source, _explain(exc))) from None
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:  # sys.exit() in the plan or in code it calls: never exit rollout from a plan
        call = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
        raise PlanError(_locate(exc, source, f"the plan called {call}; a plan file must only build a Plan"
                                             )) from None
    except BaseException as exc:  # GeneratorExit, a plan's own BaseException subclass, ...
        raise PlanError(_locate(exc, source, f"{type(exc).__name__}: {exc} (raised while loading the plan; "
                                             "a plan file must only build a Plan)")) from None
    plan = namespace.get("plan", namespace.get("PLAN"))
    if plan is None:
        raise PlanError(f"{source}: defines no `plan` (assign a rollout.Plan to a module-level name `plan`)")
    if not isinstance(plan, Plan):
        comma = (" (a trailing comma after Plan(...) makes a tuple)"
                 if isinstance(plan, tuple) and len(plan) == 1 and isinstance(plan[0], Plan) else "")
        raise PlanError(f"{source}: `plan` is a {type(plan).__name__}, not a rollout.Plan{comma}")
    object.__setattr__(plan, "source", source)
    return plan


def _locate(exc: BaseException, source: Path, message: str | None = None) -> str:
    """``file:line: message`` from the deepest frame of the plan file in the traceback."""
    if message is None:
        message = str(exc)
        if ":" in message.split(" ", 1)[0] and str(source) in message:
            return message
        if not isinstance(exc, PlanError):
            message = f"{type(exc).__name__}: {message}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == source:
            line = frame.lineno
    where = f"{source}:{line}" if line else str(source)
    return f"{where}: {message}"


_UNEXPECTED = re.compile(r"^(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'$")


def _explain(exc: Exception) -> str | None:
    """A better message for a wrong keyword given to one of our classes: what it takes, the closest name."""
    if not isinstance(exc, TypeError):
        return None
    match = _UNEXPECTED.match(str(exc))
    if match is None:
        return None
    cls = _known_classes().get(match.group(1))
    if cls is None:
        return None
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    names = [p.name for p in parameters if p.name != "defined_at"
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    wrong = match.group(2)
    close = difflib.get_close_matches(wrong, names, n=1, cutoff=0.5)
    suggestion = f" (did you mean {close[0]}=...?)" if close else ""
    return f"{cls.__name__}() has no argument {wrong}={suggestion}; it takes: {', '.join(names)}"


def _known_classes() -> dict[str, type]:
    """The classes a plan builds: Plan, Worker, the built-in phases, probes and guards, by name."""
    import phases
    import probes

    from . import guards

    found: dict[str, type] = {"Plan": Plan, "Worker": Worker}
    for module in (phases, probes, guards):
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name, None)
            if isinstance(value, type):
                found[name] = value
    return found
