"""Graceful shutdown of `boutique serve` under load: NOT_SERVING, drain, in-flight calls finish,
new calls refused, exit 0 within the grace period. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testkit import free_port

from boutique.dev.shop import port_free
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

pytestmark = [pytest.mark.slow]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Served:
    """`boutique serve productcatalogservice` as a process on a free port."""

    def __init__(self, log: Path, **env: str) -> None:
        self.log = log
        for attempt in range(3):  # the free port can be taken before the service binds it: another one
            if self._start(env) or attempt == 2:
                break
        assert self.proc.poll() is None, log.read_text()

    def _start(self, env: dict[str, str]) -> bool:
        """Start on a free port and wait (generously) for SERVING; False when the port was taken."""
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        full_env = {**os.environ, "PORT": str(self.port), "METRICS_PORT": "0", "LISTEN_ADDR": "127.0.0.1",
                    "BOUTIQUE_ACCESS_LOG": "errors", **env}
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "boutique.cli", "serve", "productcatalogservice"],
                                         env=full_env, stdout=fh, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(self.address)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.channel.close()
                if self.proc.returncode == 2 and "address in use" in self.log.read_text():
                    return False
                raise AssertionError(self.log.read_text())
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True).status == SERVING:
                    return True
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "service did not become SERVING"
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll `condition` until true; a generous timeout (the machine may be busy), never a speed check."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class Watcher:
    """A health Watch stream read in a thread: the statuses it sent and how it ended."""

    def __init__(self, channel: grpc.Channel, service: str = "") -> None:
        self.statuses: list[int] = []
        self.ended: grpc.StatusCode | None = None
        self.call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=120)
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.statuses, "the Watch stream sent nothing")

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.statuses.append(resp.status)
            self.ended = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.ended = exc.code()


def refuses_calls(address: str) -> bool:
    with grpc.insecure_channel(address) as fresh:
        try:
            health_pb2_grpc.HealthStub(fresh).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as exc:
            return exc.code() is grpc.StatusCode.UNAVAILABLE
    return False


@pytest.fixture
def slow_catalog(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "catalog.log", EXTRA_LATENCY="5s", SHUTDOWN_DRAIN_SECONDS="1",
                    SHUTDOWN_GRACE_SECONDS="30")
    yield served
    served.close()


def test_sigterm_under_load_drains_and_finishes_in_flight_calls(slow_catalog: Served) -> None:
    svc = slow_catalog
    stub = rpc.ProductCatalogServiceStub(svc.channel)
    health = health_pb2_grpc.HealthStub(svc.channel)
    watch = Watcher(svc.channel, "hipstershop.ProductCatalogService")  # left open: it must not hold the stop
    assert watch.statuses == [SERVING]

    calls = [stub.GetProduct.future(pb.GetProductRequest(id="OLJCESPC7Z"), timeout=60) for _ in range(16)]
    time.sleep(0.5)  # sent on a connected channel: every call is now sleeping in the handler (EXTRA_LATENCY=5s)
    assert not any(c.done() for c in calls)

    sent = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)

    # during the drain window the server still answers, and says NOT_SERVING
    wait_for(lambda: NOT_SERVING in watch.statuses, f"Watch did not see NOT_SERVING: {watch.statuses}")
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == NOT_SERVING

    # after the drain the Watch stream ends (OK) and the server stops taking new calls, while the
    # in-flight ones are still running
    wait_for(lambda: watch.ended is not None, "the Watch stream did not end after the drain")
    assert (watch.statuses, watch.ended) == ([SERVING, NOT_SERVING], grpc.StatusCode.OK)
    wait_for(lambda: refuses_calls(svc.address), "the server still takes new calls after the drain")
    assert not all(c.done() for c in calls)
    with grpc.insecure_channel(svc.address) as fresh, pytest.raises(grpc.RpcError) as refused:
        rpc.ProductCatalogServiceStub(fresh).GetProduct(pb.GetProductRequest(id="OLJCESPC7Z"), timeout=5)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

    # every in-flight call completes OK
    assert [c.result().name for c in calls] == ["Sunglasses"] * len(calls)

    # and the process exits 0 once they are done, not at the end of the 30 s grace period (nor held by the Watch)
    assert svc.proc.wait(timeout=60) == 0
    assert time.monotonic() - sent < 20


def test_calls_longer_than_the_grace_period_are_cut_and_the_process_still_exits_0(tmp_path: Path) -> None:
    svc = Served(tmp_path / "catalog.log", EXTRA_LATENCY="120s", SHUTDOWN_GRACE_SECONDS="1")
    try:
        calls = [rpc.ProductCatalogServiceStub(svc.channel).ListProducts.future(pb.Empty(), timeout=180)
                 for _ in range(4)]
        time.sleep(0.3)
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=60) == 0  # grace 1 s, not the 120 s the calls wanted
        for c in calls:
            assert c.exception(timeout=30) is not None  # cut off, not silently completed
    finally:
        svc.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_idle_service_stops_at_once_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    svc = Served(tmp_path / "catalog.log", SHUTDOWN_GRACE_SECONDS="120")
    try:
        svc.proc.send_signal(sig)
        assert svc.proc.wait(timeout=60) == 0  # nothing to wait for: not the 120 s grace period
        assert port_free(svc.port)
        assert '"stopped"' in svc.log.read_text()
    finally:
        svc.close()


def test_open_health_watch_streams_do_not_hold_the_shutdown(tmp_path: Path) -> None:
    svc = Served(tmp_path / "catalog.log", SHUTDOWN_GRACE_SECONDS="120")
    try:
        watches = [Watcher(svc.channel), Watcher(svc.channel, "hipstershop.ProductCatalogService")]
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=60) == 0  # not the 120 s grace period
        for watch in watches:
            wait_for(lambda w=watch: w.ended is not None, "the Watch stream did not end")
            assert (watch.statuses, watch.ended) == ([SERVING, NOT_SERVING], grpc.StatusCode.OK)
    finally:
        svc.close()
