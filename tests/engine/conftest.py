"""Helpers for engine tests that run real wrangler against the simulator."""

from __future__ import annotations

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "examples" / "cf_ssai" / "workers" / "manifest" / "wrangler.toml"
DECISION = ROOT / "examples" / "cf_ssai" / "workers" / "decision" / "wrangler.toml"


_GUARDS = ('ErrorRate(above_baseline_by=0.05, action="rollback"), '
           'LogRate(pattern="do_churn", max_per_hour=50, action="rollback")')


def write_plan(directory: Path, phases: str, *, baseline: str = "2s", recovery: str = "3s", extra: str = "",
               guards: str = _GUARDS) -> Path:
    """A small plan over the example manifest and decision workers."""
    text = f'''
from phases import Deploy, Gate, Smoke, Watch
from probes import Status
from rollout import Plan, Worker
from rollout.guards import ErrorRate, LogRate

manifest = Worker("cf-ssai", config={str(MANIFEST)!r})
decision = Worker("cf-ssai-decision", config={str(DECISION)!r})
{extra}
plan = Plan(
    name="test plan",
    workers=[manifest, decision],
    baseline={baseline!r},
    recovery={recovery!r},
    guards=[{guards}],
    phases=[{phases}],
)
'''
    path = directory / "plan.py"
    path.write_text(textwrap.dedent(text))
    return path

