"""The whole shop through the local runner (real processes, real redis-server) for the
end-to-end tests. One shop per test session, on a port offset nobody uses right now.

  e2e_shop      the running Shop
  browse        factory: browse() -> httpx.Client on the shop with a fresh session (no redirects followed)
  artifacts     the artifacts directory (ARTIFACTS env, else <repo>/artifacts)
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from boutique.runner import PortInUseError, Shop

ROOT = Path(__file__).resolve().parents[2]


def _root_conftest():
    name = "_boutique_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


require_tool = _root_conftest().require_tool


def _start_shop(**kwargs: object) -> Shop:
    rng = random.Random()
    last: Exception | None = None
    for _ in range(30):
        shop = Shop(port_offset=rng.randrange(200, 5400), **kwargs)  # type: ignore[arg-type]
        try:
            shop.check_ports()
            return shop.start()
        except PortInUseError as exc:
            shop.stop()
            last = exc
    raise RuntimeError(f"no free port offset for the shop: {last}")


@pytest.fixture(scope="session")
def e2e_shop() -> Iterator[Shop]:
    require_tool("redis-server", "the cart keeps carts in Redis in the end-to-end shop")
    shop = _start_shop(redis=True, env={"BOUTIQUE_ACCESS_LOG": "errors"})
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
