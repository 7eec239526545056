"""The whole shop through the local runner (real processes, real redis-server) for the
end-to-end tests. One shop per test session, on a port offset nobody uses right now.

  e2e_shop      the running Shop
  browse        factory: browse() -> httpx.Client on the shop with a fresh session (no redirects followed)
  artifacts     the artifacts directory (ARTIFACTS env, else <repo>/artifacts)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from testkit import ROOT, require_tool

from boutique.dev.shop import Shop, start_on_free_offset


@pytest.fixture(scope="session")
def e2e_shop() -> Iterator[Shop]:
    require_tool("redis-server", "the cart keeps carts in Redis in the end-to-end shop")
    shop = start_on_free_offset(redis=True, env={"BOUTIQUE_ACCESS_LOG": "errors"})
    try:
        yield shop
    finally:
        shop.stop()


@pytest.fixture
def browse(e2e_shop: Shop) -> Iterator[Callable[[], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        client = httpx.Client(base_url=e2e_shop.base_url, follow_redirects=False, timeout=20)
        client.cookies.set("shop_session-id", str(uuid.uuid4()))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("ARTIFACTS") or ROOT / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_tool("chromium", "the browser test drives headless Chromium")
