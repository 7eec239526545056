"""Shared fixtures for the service tests: a real redis-server, and every backend service
running in-process, wired together by their contract env addresses.

  redis_server    a factory: `redis_server()` starts a throw-away redis-server on a free port
                  (no persistence) and returns a RedisServer (address, client(), stop(), start());
                  every server started is stopped at the end of the test.
  unused_port     a TCP port on 127.0.0.1 nothing listens on (free_port() of tests/conftest.py).
  all_services    (module scope) every deployable gRPC service of the catalog, started in
                  callee-first order with BackgroundService; the cart uses its in-memory store.
                  A dict: catalog name -> BackgroundService.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from boutique import catalog as catalog_mod
from boutique.runtime.server import BackgroundService


def _root_conftest():
    """tests/conftest.py as a module. `from conftest import ...` is ambiguous here (pytest
    imports every conftest.py under the module name "conftest"), so load it by path."""
    name = "_boutique_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "conftest.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


free_port = _root_conftest().free_port
require_tool = _root_conftest().require_tool


class RedisServer:
    """A redis-server process on 127.0.0.1:<port> without persistence."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"redis-server on port {self.port} exited: {err}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING in 10s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None


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


def start_backends(stack: ExitStack,
                   overrides: dict[str, dict[str, str]] | None = None) -> dict[str, BackgroundService]:
    """Start every deployable gRPC service of the catalog, callees first; each one's callee
    addresses come from the already started services. `overrides` adds env per service."""
    cat = catalog_mod.default()
    wanted = {s.name: s for s in cat.grpc_services() if s.deploy}
    running: dict[str, BackgroundService] = {}
    while len(running) < len(wanted):
        ready = [s for s in wanted.values() if s.name not in running
                 and all(c in running or c not in wanted for c in s.callees)]
        if not ready:
            raise RuntimeError(f"call graph cycle among {sorted(set(wanted) - set(running))}")
        for svc in ready:
            module = importlib.import_module(f"boutique.{svc.module}")
            env = {wanted[c].addr_env: running[c].address for c in svc.callees if c in wanted}
            env.update((overrides or {}).get(svc.name, {}))
            running[svc.name] = stack.enter_context(BackgroundService(module.DEFINITION, env))
    return running


@pytest.fixture(scope="module")
def all_services() -> Iterator[dict[str, BackgroundService]]:
    with ExitStack() as stack:
        yield start_backends(stack)
