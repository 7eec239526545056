"""`boutique serve frontend` as a real process: start-up errors, metrics, graceful shutdown."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from testkit import free_port

from boutique import service_catalog as catalog_mod
from boutique.dev.inprocess import BackgroundService
from boutique.productcatalog import DEFINITION as CATALOG_DEFINITION
from boutique.runtime.server import ServiceContext, ServiceDefinition

pytestmark = pytest.mark.slow

CAT = catalog_mod.default()
ADDR_ENVS = [CAT.get(c).addr_env for c in CAT.get("frontend").callees]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SERVICE_ADDR")}
    env.update({name: "127.0.0.1:9" for name in ADDR_ENVS})
    env.update(LISTEN_ADDR="127.0.0.1", PORT=str(free_port()), METRICS_PORT="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "boutique.cli", "serve", "frontend"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/_healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("frontend did not become healthy")


@pytest.mark.parametrize("missing", ["PRODUCT_CATALOG_SERVICE_ADDR", "AD_SERVICE_ADDR", "CHECKOUT_SERVICE_ADDR"])
def test_a_missing_backend_address_is_a_clear_exit_2(missing: str) -> None:
    env = base_env()
    del env[missing]
    proc = serve(env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert missing in err and "Traceback" not in err


@pytest.mark.parametrize(("name", "value"), [("FRONTEND_FANOUT", "sideways"), ("BASE_URL", "no-slash"),
                                             ("CART_SERVICE_ADDR", "cart")])
def test_bad_settings_are_named(name: str, value: str) -> None:
    proc = serve(base_env(**{name: value}))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and name in err and "Traceback" not in err


def catalog_announcing_calls(arrived: threading.Event) -> ServiceDefinition:
    """The real product catalog, which also sets `arrived` when a GetProduct call reaches it."""

    def create(ctx: ServiceContext) -> object:
        servicer = CATALOG_DEFINITION.create(ctx)
        get_product = servicer.GetProduct

        async def announced(request: object, context: object) -> object:
            arrived.set()
            return await get_product(request, context)

        servicer.GetProduct = announced
        return servicer

    return dataclasses.replace(CATALOG_DEFINITION, create=create)


def test_sigterm_drains_finishes_in_flight_requests_and_exits_0() -> None:
    # A product catalog that takes a second per call (the frontend's deadline for it is 2 s) makes an
    # in-flight request we can interrupt.
    arrived = threading.Event()
    with BackgroundService(catalog_announcing_calls(arrived), {"EXTRA_LATENCY": "1s"}) as slow_catalog:
        metrics_port = free_port()
        env = base_env(PRODUCT_CATALOG_SERVICE_ADDR=slow_catalog.address, METRICS_PORT=str(metrics_port),
                       SHUTDOWN_DRAIN_SECONDS="2", SHUTDOWN_GRACE_SECONDS="30", BOUTIQUE_ACCESS_LOG="all")
        url = f"http://127.0.0.1:{env['PORT']}"
        proc = serve(env)
        try:
            wait_healthy(url, proc)
            result: dict[str, httpx.Response] = {}
            slow = threading.Thread(target=lambda: result.update(r=httpx.get(f"{url}/product-meta/OLJCESPC7Z",
                                                                               timeout=60)))
            slow.start()
            assert arrived.wait(30), "the request never reached the catalog"
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/_healthz", timeout=5).status_code != 503:  # draining
                assert time.monotonic() < deadline, "/_healthz did not turn 503 on SIGTERM"
                time.sleep(0.02)
            slow.join(timeout=60)
            assert result["r"].status_code == 200 and b"Sunglasses" in result["r"].content
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        logs = [line for line in out.splitlines() if '"boutique.access"' in line]
        assert any('"route": "/product-meta/{id}"' in line and '"status": 200' in line
                   and '"duration_ms"' in line and '"session"' in line and '"request_id"' in line for line in logs)


def test_metrics_endpoint_serves_http_and_grpc_client_metrics(backend_env) -> None:
    metrics_port = free_port()
    env = base_env(METRICS_PORT=str(metrics_port), **backend_env)
    url = f"http://127.0.0.1:{env['PORT']}"
    proc = serve(env)
    try:
        wait_healthy(url, proc)
        assert httpx.get(f"{url}/product/OLJCESPC7Z", timeout=10).status_code == 200
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'http_requests_total{method="GET",route="/product/{id}",status="200"} 1.0' in text
        assert 'http_request_duration_seconds_bucket{le="0.5",method="GET",route="/product/{id}"}' in text
        assert 'grpc_client_handled_total{grpc_code="OK",grpc_method="GetProduct"' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
