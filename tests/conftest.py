"""Shared pytest helpers: the helpers live in tests/testkit.py (`from testkit import ...`);
they are re-exported here for modules that load this file by path."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import IN_CI, ROOT, free_port, require_tool

__all__ = ["IN_CI", "ROOT", "free_port", "require_tool"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
