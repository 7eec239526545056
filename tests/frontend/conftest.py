"""Fixtures for the frontend tests: every backend gRPC service in-process (real
sockets, the cart in memory) and the frontend itself on an ephemeral port.

  backends        (module) catalog name -> BackgroundService, callees first
  backend_env     (module) the frontend's contract env: <X>_SERVICE_ADDR -> address
  make_frontend   factory: make_frontend(**extra_env) -> running BackgroundFrontend (stopped after the test)
  shop            a frontend with default settings and an httpx client (no redirects followed)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from boutique import service_catalog as catalog_mod
from boutique.dev.inprocess import BackgroundService, start_backends
from boutique.frontend.server import BackgroundFrontend


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, BackgroundService]]:
    with ExitStack() as stack:
        yield start_backends(stack)


@pytest.fixture(scope="module")
def backend_env(backends: dict[str, BackgroundService]) -> dict[str, str]:
    cat = catalog_mod.default()
    return {cat.get(name).addr_env: backends[name].address for name in cat.get("frontend").callees}


class FrontendUnderTest:
    def __init__(self, fe: BackgroundFrontend) -> None:
        self.fe = fe
        self.url = fe.url
        self.client = httpx.Client(base_url=fe.url, follow_redirects=False, timeout=20)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def make_frontend(backend_env: dict[str, str]) -> Iterator[Callable[..., FrontendUnderTest]]:
    with ExitStack() as stack:

        def make(**extra: str) -> FrontendUnderTest:
            fe = stack.enter_context(BackgroundFrontend({**backend_env, **extra}))
            fut = FrontendUnderTest(fe)
            stack.callback(fut.close)
            return fut

        yield make


@pytest.fixture
def shop(make_frontend: Callable[..., FrontendUnderTest]) -> FrontendUnderTest:
    return make_frontend()
