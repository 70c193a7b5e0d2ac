"""Shared fixtures: a fresh session per test where options matter, and child-process checks."""

from __future__ import annotations

import pytest

import riffle


@pytest.fixture
def session() -> riffle.Session:
    return riffle.Session(parallelism=2)
