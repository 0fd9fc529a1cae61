"""A recorded bad release, built with the simulator's own behaviours and trace items (no sockets, no clock)."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

from rollout.sim._behaviour import Behaviours
from rollout.sim._trace import trace_item
from rollout.sim.scenario import load_scenario

T0 = 1_795_353_860.0
OLD = "11111111-1111-4111-8111-111111111111"
NEW = "22222222-2222-4222-8222-222222222222"


def bad_release_items(*, before_s: float = 40.0, after_s: float = 40.0, rps: float = 20.0,
                      scenario: str = "bad-release", seed: int = 7) -> list[dict[str, object]]:
    """cf-ssai serving version 1 for ``before_s``, then version 2 (which the scenario breaks 5 s in)."""
    spec = load_scenario(scenario).worker("cf-ssai")
    behaviours = Behaviours(spec, random.Random(seed))
    items = []
    step = 1.0 / rps
    for i in range(int((before_s + after_s) * rps)):
        now = T0 + i * step
        new = now - T0 >= before_s
        version, number = (NEW, 2) if new else (OLD, 1)
        method, path = behaviours.sample_request()
        outcome = behaviours.serve(version, number, T0 + before_s if new else T0, method, path, now)
        items.append(trace_item(worker="cf-ssai", version_id=version, tag=None, message=None, outcome=outcome,
                                url=f"https://cf-ssai.example.workers.dev{path}", method=method,
                                headers={"accept": "*/*", "user-agent": "test"}, timestamp=now))
    return items


def pretty(items: list[dict[str, object]]) -> bytes:
    """What ``wrangler tail --format json`` prints."""
    return b"".join(json.dumps(i, indent=4, ensure_ascii=False).encode() + b"\n" for i in items)


def compact(items: list[dict[str, object]]) -> bytes:
    return b"".join(json.dumps(i, ensure_ascii=False).encode() + b"\n" for i in items)


def write_plan(directory: Path, *, baseline: str = "30s") -> Path:
    """A plan over cf-ssai with the runbook's guards and no phases."""
    path = directory / "plan.py"
    path.write_text(textwrap.dedent(f'''
        from rollout import Plan, Worker
        from rollout.guards import ErrorRate, LogRate, NewExceptions

        plan = Plan(
            name="replay test",
            workers=[Worker("cf-ssai")],
            phases=[],
            baseline={baseline!r},
            guards=[
                ErrorRate(above_baseline_by=0.05, action="rollback"),
                LogRate(pattern="do_churn", max_per_hour=50, action="rollback"),
                NewExceptions(action="alert"),
            ],
        )
    '''))
    return path
