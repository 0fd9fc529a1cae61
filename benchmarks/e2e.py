"""End to end: ``rollout demo --scenario bad-release --no-tty``, fault onset → verified rollback."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

_LINE = re.compile(r"fault onset → rollback verified: ([0-9.]+) s")


@dataclass(frozen=True)
class E2EResult:
    seconds: float | None  # fault onset → rollback verified, as the demo prints it
    wall_s: float  # the whole demo
    exit_code: int
    tail: str


def run(scenario: str = "bad-release") -> E2EResult:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "rollout.cli", "demo", "--scenario", scenario, "--no-tty",
                "--journal", f"{tmp}/journal.db", "--report-dir", f"{tmp}/reports"]
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp, timeout=600)
        wall = time.perf_counter() - started
    match = _LINE.search(out.stdout)
    tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-3:])
    return E2EResult(float(match.group(1)) if match else None, wall, out.returncode, tail)
