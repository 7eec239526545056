"""Shared fixtures for the service tests: a real redis-server, and every backend service
running in-process, wired together by their contract env addresses.

  redis_server    a factory: `redis_server()` starts a throw-away redis-server on a free port
                  (no persistence) and returns a RedisServer (address, client(), stop(), start());
                  every server started is stopped at the end of the test.
  unused_port     a TCP port on 127.0.0.1 nothing listens on (testkit.free_port()).
  all_services    (module scope) every deployable gRPC service of the catalog, started in
                  callee-first order (boutique.dev.inprocess.start_backends); the cart uses its
                  in-memory store.
                  A dict: catalog name -> BackgroundService.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from testkit import RedisServer, free_port, require_tool

from boutique.dev.inprocess import BackgroundService, start_backends


@pytest.fixture
def redis_server() -> Iterator:
    binary = require_tool("redis-server", "the cart stores carts in Redis")
    started: list[RedisServer] = []

    def make(port: int | None = None) -> RedisServer:
        server = RedisServer(binary, port)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def all_services() -> Iterator[dict[str, BackgroundService]]:
    with ExitStack() as stack:
        yield start_backends(stack)
