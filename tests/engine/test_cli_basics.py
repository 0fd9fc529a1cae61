"""The CLI's surface for CI: --version, NO_COLOR and --color."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rollout.cli import _console, build_parser


def test_version_prints_the_package_version() -> None:
    done = subprocess.run([sys.executable, "-m", "rollout.cli", "--version"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith("rollout 0.")


@pytest.mark.parametrize(("env", "flags", "colour"), [
    ({"NO_COLOR": "1"}, [], False),
    ({}, ["--color", "never"], False),
    ({"NO_COLOR": "1"}, ["--color", "always"], True),
    ({}, ["--color", "always"], True),
])
def test_no_color_and_the_color_flag(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flags: list[str],
                                     colour: bool) -> None:
    """NO_COLOR (any value) turns colour off, as its convention says; --color always|never wins over it.
    (cli.py used to pass no_color=False, which overrode rich's own NO_COLOR handling.)"""
    monkeypatch.delenv("NO_COLOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    console = _console(build_parser().parse_args([*flags, "status"]))
    assert console.no_color is (not colour)
    if colour:
        assert console.is_terminal
