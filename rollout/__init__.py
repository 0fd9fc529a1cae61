"""rollout: staged rollouts for Cloudflare Workers, with live tail guards and verified auto-rollback.

The public surface, re-exported here; everything else is an implementation detail.
"""

from .bus import EngineEvent, EventBus
from .clock import ManualClock, SystemClock
from .context import PhaseContext
from .engine import Engine, EngineOptions, RunResult
from .errors import (
    LockHeld,
    PhaseFailed,
    PlanError,
    RollbackFailed,
    RolloutError,
    ScenarioError,
    SimulatorError,
    UsageError,
    WranglerError,
)
from .events import TailEvent, parse_event
from .guards import ErrorRate, Guard, LogRate, NewExceptions, Verdict, default_guards
from .journal import Journal
from .phase import Phase
from .plan import Plan, Worker, load_plan
from .probe import Probe, ProbeResult
from .runner import RunOptions, run_plan
from .signals import WindowStats, WorkerSignals
from .target import Target
from .wrangler import Wrangler, WranglerResult

__all__ = [
    "Engine",
    "EngineEvent",
    "EngineOptions",
    "ErrorRate",
    "EventBus",
    "Guard",
    "Journal",
    "LockHeld",
    "LogRate",
    "ManualClock",
    "NewExceptions",
    "Phase",
    "PhaseContext",
    "PhaseFailed",
    "Plan",
    "PlanError",
    "Probe",
    "ProbeResult",
    "RollbackFailed",
    "RolloutError",
    "RunOptions",
    "RunResult",
    "ScenarioError",
    "SimulatorError",
    "SystemClock",
    "TailEvent",
    "Target",
    "UsageError",
    "Verdict",
    "WindowStats",
    "WorkerSignals",
    "Worker",
    "Wrangler",
    "WranglerError",
    "WranglerResult",
    "default_guards",
    "load_plan",
    "parse_event",
    "run_plan",
]
