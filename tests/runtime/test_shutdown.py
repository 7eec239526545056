"""Graceful shutdown of `boutique serve` under load: NOT_SERVING, drain, in-flight calls finish,
new calls refused, exit 0 within the grace period. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runner import port_free
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = [pytest.mark.slow]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _free_port() -> int:
    import socket

    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port_free(port):
            return port
    raise RuntimeError("no free port")


class Served:
    """`boutique serve productcatalogservice` as a process on a free port."""

    def __init__(self, log: Path, **env: str) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        full_env = {**os.environ, "PORT": str(self.port), "METRICS_PORT": "0", "LISTEN_ADDR": "127.0.0.1",
                    "BOUTIQUE_ACCESS_LOG": "errors", **env}
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "boutique.cli", "serve", "productcatalogservice"],
                                         env=full_env, stdout=fh, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(self.address)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True).status == SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "service did not become SERVING"
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def slow_catalog(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "catalog.log", EXTRA_LATENCY="1.5s", SHUTDOWN_DRAIN_SECONDS="0.5",
                    SHUTDOWN_GRACE_SECONDS="5")
    yield served
    served.close()


def test_sigterm_under_load_drains_and_finishes_in_flight_calls(slow_catalog: Served) -> None:
    svc = slow_catalog
    stub = rpc.ProductCatalogServiceStub(svc.channel)
    health = health_pb2_grpc.HealthStub(svc.channel)

    statuses: list[tuple[float, int]] = []
    watch = health.Watch(health_pb2.HealthCheckRequest(service="hipstershop.ProductCatalogService"), timeout=20)

    def watcher() -> None:
        try:
            for resp in watch:
                statuses.append((time.monotonic(), resp.status))
        except grpc.RpcError:
            pass  # the stream ends when the server stops

    threading.Thread(target=watcher, daemon=True).start()
    calls = [stub.GetProduct.future(pb.GetProductRequest(id="OLJCESPC7Z"), timeout=10) for _ in range(16)]
    time.sleep(0.4)  # every call is now sleeping in the handler (EXTRA_LATENCY=1.5s)
    assert not any(c.done() for c in calls)

    sent = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)

    # during the drain window the server still answers, and says NOT_SERVING
    time.sleep(0.15)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == NOT_SERVING
    assert any(s == NOT_SERVING for _, s in statuses), f"Watch did not see NOT_SERVING: {statuses}"
    # a watcher (a load balancer) drops the stream on NOT_SERVING; an open Watch would hold the
    # server until the end of the grace period, as any other open call does
    watch.cancel()

    # after the drain the server stops taking new calls (in-flight ones are still running)
    time.sleep(0.6)
    assert not all(c.done() for c in calls)
    with grpc.insecure_channel(svc.address) as fresh, pytest.raises(grpc.RpcError) as refused:
        rpc.ProductCatalogServiceStub(fresh).GetProduct(pb.GetProductRequest(id="OLJCESPC7Z"), timeout=2)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

    # every in-flight call completes OK
    assert [c.result().name for c in calls] == ["Sunglasses"] * len(calls)

    # and the process exits 0 as soon as they are done: well within drain + grace (0.5s + 5s)
    assert svc.proc.wait(timeout=6) == 0
    assert time.monotonic() - sent < 3.0
    assert statuses[0][1] == SERVING


def test_calls_longer_than_the_grace_period_are_cut_and_the_process_still_exits_0(tmp_path: Path) -> None:
    svc = Served(tmp_path / "catalog.log", EXTRA_LATENCY="30s", SHUTDOWN_GRACE_SECONDS="1")
    try:
        calls = [rpc.ProductCatalogServiceStub(svc.channel).ListProducts.future(pb.Empty(), timeout=20)
                 for _ in range(4)]
        time.sleep(0.3)
        sent = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=5) == 0
        assert time.monotonic() - sent < 3.0  # grace 1s, not the 30s the calls wanted
        for c in calls:
            assert c.exception(timeout=5) is not None  # cut off, not silently completed
    finally:
        svc.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_idle_service_stops_at_once_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    svc = Served(tmp_path / "catalog.log")
    try:
        sent = time.monotonic()
        svc.proc.send_signal(sig)
        assert svc.proc.wait(timeout=5) == 0
        assert time.monotonic() - sent < 2.0
        assert port_free(svc.port)
        assert '"stopped"' in svc.log.read_text()
    finally:
        svc.close()
