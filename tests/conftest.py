"""Every test gets its own rollout lock directory, so tests never contend with each other or a demo."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("locks")
    monkeypatch.setenv("ROLLOUT_LOCK_DIR", str(path))
    return path
