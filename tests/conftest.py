"""Fixtures for every test: a private rollout lock directory, the asyncio backend, a working directory."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("locks")
    monkeypatch.setenv("ROLLOUT_LOCK_DIR", str(path))
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory with its own lock directory and wrangler config home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROLLOUT_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


class SimProcess:
    """A `rollout sim` running in its own process, and the variables it printed."""

    def __init__(self, cwd: Path, scenario: str = "healthy") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "rollout.cli", "sim", "--scenario", scenario],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
        assert self.proc.stdout is not None
        self.env: dict[str, str] = {}
        while len(self.env) < 4:
            line = self.proc.stdout.readline()
            assert line, "rollout sim exited before printing its variables"
            key, _, value = line.strip().partition("=")
            self.env[key] = value

    @property
    def api_base(self) -> str:
        return self.env["CLOUDFLARE_API_BASE_URL"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def sim_process(workdir: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start `rollout sim` processes (``sim_process()`` or ``sim_process("bad-release")``); all stop at the end."""
    started: list[SimProcess] = []

    def start(scenario: str = "healthy") -> SimProcess:
        started.append(SimProcess(workdir, scenario))
        return started[-1]

    yield start
    for sim in started:
        sim.stop()
