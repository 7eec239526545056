"""Shared fixtures for the service tests: a real redis-server, and every backend service
running in-process, wired together by their contract env addresses.

  redis_server    a factory: `redis_server()` starts a throw-away redis-server on a free port
                  (no persistence) and returns a RedisServer (address, client(), stop(), start());
                  every server started is stopped at the end of the test.
  unused_port     a TCP port on 127.0.0.1 nothing listens on (testkit.free_port()).
  all_services    (module scope) every deployable gRPC service of the catalog, started in
                  callee-first order (boutique.runtime.server.start_backends); the cart uses its
                  in-memory store.
                  A dict: catalog name -> BackgroundService.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis
from testkit import free_port, require_tool

from boutique.runtime.server import BackgroundService, start_backends


class RedisServer:
    """A redis-server process on 127.0.0.1:<port> without persistence."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start it and wait (generously) until it answers. A free port can be taken by someone else
        before redis binds it: then, unless the port was asked for, try again on another one."""
        for attempt in range(1 if self.fixed_port else 3):
            if attempt:
                self.port = free_port()
            if self._start_once():
                return self
        raise RuntimeError(f"redis-server could not get a port of its own (last tried {self.port})")

    def _start_once(self) -> bool:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with self.client() as c:
                    pid = int(c.info("server")["process_id"])
                if pid == self.proc.pid:
                    return True
                self.stop()  # another redis-server answers on this port: not ours to use
                return False
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    if "address already in use" in err.lower() and not self.fixed_port:
                        return False
                    raise RuntimeError(f"redis-server on port {self.port} exited: {err}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING in 30s") from None
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


@pytest.fixture(scope="module")
def all_services() -> Iterator[dict[str, BackgroundService]]:
    with ExitStack() as stack:
        yield start_backends(stack)
