"""The cf-ssai v1.5.0 runbook (shared/runbook 004) as a rollout plan.

Phase 1 deploys the manifest worker, smoke-tests it and watches it for 3 minutes; phase 2 deploys the
supporting workers; phase 3 watches everything for 30 minutes.  The guards are the runbook's alert
conditions: error rate more than 5 points above the pre-deploy baseline, DO churn over 50/hour
(rollback), young DO instances over 100/hour (warn).

Run it against the simulator with `rollout demo` (durations scaled down), or for real with
`rollout run examples/cf_ssai/plan.py`.
"""

from phases import Deploy, Smoke, Watch
from probes import BodyContains, Post, Status
from rollout import Plan, Worker
from rollout.guards import ErrorRate, LogRate

manifest = Worker("cf-ssai", config="workers/manifest/wrangler.toml")
decision = Worker("cf-ssai-decision", config="workers/decision/wrangler.toml")
beacon = Worker("cf-ssai-beacon", config="workers/beacon/wrangler.toml")
vast_parser = Worker("cf-ssai-vast-parser", config="workers/vast-parser/wrangler.toml")

plan = Plan(
    name="cf-ssai v1.5.0-consistency",
    workers=[manifest, decision, beacon, vast_parser],
    baseline="3m",
    recovery="5m",
    guards=[
        ErrorRate(above_baseline_by=0.05, action="rollback"),
        LogRate(pattern="do_churn", max_per_hour=50, action="rollback"),
        LogRate(pattern="do_young", max_per_hour=100, action="warn"),
    ],
    phases=[
        Deploy(manifest),
        Smoke(manifest, [
            Status("/health", 200),
            BodyContains("/demo/sports1/master.m3u8", "#EXTM3U"),
            Post("/cue", json={"channel": "sports1", "duration": 30}),
        ]),
        Watch("3m"),
        Deploy(decision, beacon, vast_parser),
        Smoke(decision, [Post("/decision", json={"channel": "test", "durationSec": 30})]),
        Watch("30m"),
    ],
)
