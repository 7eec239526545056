"""Fixtures for the runtime/runner tests: a shared local shop on a free port offset."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from boutique.dev.shop import Shop, start_on_free_offset


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The whole shop (plain text, redis when installed, access logs on) shared by the runner tests."""
    redis = "auto" if shutil.which("redis-server") else False
    s = start_on_free_offset(redis=redis, log_dir=tmp_path_factory.mktemp("shop-logs"),
                             env={"BOUTIQUE_ACCESS_LOG": "all"})
    yield s
    s.stop()
