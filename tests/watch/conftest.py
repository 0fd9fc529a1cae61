"""Fixtures of the watch tests."""

from __future__ import annotations




