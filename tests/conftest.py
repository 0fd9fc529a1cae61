"""Fixtures for every test: a private rollout lock directory, the asyncio backend, a working directory."""

from __future__ import annotations

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
