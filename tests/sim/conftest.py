"""Fixtures of the simulator tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import EXAMPLES


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the vast-parser example worker (no bindings: the cheapest deploy)."""
    target = tmp_path / "project"
    shutil.copytree(EXAMPLES / "vast-parser", target)
    return target


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path

