"""``rollout demo`` run again and again: does every baseline see requests, and does any bake pass on evidence
that is not ``ok``?  (Issue 13: the baseline used to be a fixed sleep that saw 0 requests in most runs.)

Each run's ``--no-tty`` output is read line by line: ``baseline W: N requests``, ``guard G on W: STATE``,
``W: before → after`` (a change) and ``phase N: watch … succeeded``.  A bake "passed on inconclusive
evidence" when, at a watch's success, a rollback guard of a changed worker was last seen in a state other
than ``ok``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

_BASELINE = re.compile(r"baseline (\S+): (\d+) requests")
_GUARD = re.compile(r"guard (\S+) on (\S+): (ok|breach|no_data|inconclusive)")
_CHANGE = re.compile(r"^\d\d:\d\d:\d\d (\S+): \S+ → \S+$")
_WATCH_OK = re.compile(r"phase \d+: (watch \S+) succeeded")
_ROLLBACK_GUARDS = ("error_rate", "do_churn_per_hour")  # the demo plan's guards with action "rollback"


@dataclass
class DemoRun:
    scenario: str
    exit_code: int
    seconds: float
    baselines: dict[str, int] = field(default_factory=dict)
    passed_unproven: list[str] = field(default_factory=list)
    waited_for_evidence: int = 0


def read_output(scenario: str, exit_code: int, seconds: float, text: str) -> DemoRun:
    run = DemoRun(scenario, exit_code, seconds)
    states: dict[tuple[str, str], str] = {}
    changed: set[str] = set()
    for line in text.splitlines():
        if m := _BASELINE.search(line):
            run.baselines[m.group(1)] = int(m.group(2))
        elif m := _GUARD.search(line):
            states[(m.group(1), m.group(2))] = m.group(3)
        elif m := _CHANGE.match(line):
            changed.add(m.group(1))
        elif "waiting for evidence" in line:
            run.waited_for_evidence += 1
        elif m := _WATCH_OK.search(line):
            for worker in sorted(changed):
                for guard in _ROLLBACK_GUARDS:
                    state = states.get((guard, worker), "never judged")
                    if state != "ok":
                        run.passed_unproven.append(f"{m.group(1)}: {guard} on {worker} {state}")
    return run


def run_once(scenario: str) -> DemoRun:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "rollout.cli", "demo", "--scenario", scenario, "--no-tty",
                "--journal", f"{tmp}/journal.db", "--report-dir", f"{tmp}/reports"]
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp, timeout=900)
        return read_output(scenario, out.returncode, time.perf_counter() - started, out.stdout + out.stderr)


def main(scenarios: list[str], runs: int) -> None:
    for scenario in scenarios:
        results = [run_once(scenario) for _ in range(runs)]
        with_requests = sum(1 for r in results if r.baselines and min(r.baselines.values()) > 0)
        unproven = sum(1 for r in results if r.passed_unproven)
        smallest = min((min(r.baselines.values()) for r in results if r.baselines), default=0)
        codes = ", ".join(str(r.exit_code) for r in results)
        print(f"{scenario:12s} runs {runs}: baseline with requests in {with_requests}/{runs} "
              f"(fewest {smallest} requests), a bake passed on unproven evidence in {unproven}/{runs}, "
              f"waited for evidence in {sum(1 for r in results if r.waited_for_evidence)}/{runs}; "
              f"exit codes {codes}; {sum(r.seconds for r in results) / runs:.0f} s per run")
        for r in results:
            for item in r.passed_unproven:
                print(f"    {item}")
