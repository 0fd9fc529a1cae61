"""Fixtures of the preflight, lock and migration tests (real wrangler against the simulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VAST_PARSER = ROOT / "examples" / "cf_ssai" / "workers" / "vast-parser"
DB_ID = "11111111-1111-4111-8111-111111111111"




def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def scenario(directory: Path, resources: str) -> Path:
    """A scenario over the shipped healthy one, with the given ``[resources]`` body."""
    return write(directory / "scenario.toml", f'base = "healthy"\n[resources]\n{textwrap.dedent(resources)}')


def git_repo(directory: Path) -> str:
    """Make ``directory`` a git repository with one commit; returns its SHA."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(argv, cwd=directory, check=True, env=env, capture_output=True)
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def rollout_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "rollout.cli", *args]
