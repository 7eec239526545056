"""OpenTelemetry tracing: one order through the whole shop is one trace in a real Jaeger, with
every hop's parent link; the switch's settings; off means nothing imported."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from testkit import CHECKOUT_FORM, require_tool
from tracing_kit import Jaeger, OtlpReceiver, run_jaeger

from boutique import service_catalog as catalog_mod
from boutique.dev.inprocess import BackgroundService
from boutique.dev.shop import Shop, start_on_free_offset
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import tracing
from boutique.runtime.config import ConfigError

CAT = catalog_mod.default()
# The services one order touches (the list), and the call graph they must show.
ORDER_PATH = ("frontend", "checkoutservice", "cartservice", "productcatalogservice", "currencyservice",
              "shippingservice", "paymentservice", "emailservice")
SERVER, CLIENT = "server", "client"


# --------------------------------------------------------------------------- end to end (Jaeger)
@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    with run_jaeger(tmp_path_factory.mktemp("jaeger")) as j:
        yield j


@pytest.fixture(scope="module")
def traced_shop(jaeger: Jaeger) -> Iterator[Shop]:
    require_tool("redis-server", "the cart's Redis commands are part of the trace")
    shop = start_on_free_offset(redis=True, env={
        "ENABLE_TRACING": "1", "COLLECTOR_SERVICE_ADDR": jaeger.otlp_address,
        "OTEL_BSP_SCHEDULE_DELAY": "100", "BOUTIQUE_ACCESS_LOG": "errors"})
    try:
        yield shop
    finally:
        shop.stop()


def _place_order(shop: Shop, traceparent: str) -> None:
    with httpx.Client(base_url=shop.base_url, timeout=30) as c:
        c.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "2"})
        c.post("/cart", data={"product_id": "66VCHSJNUP", "quantity": "1"})
        r = c.post("/cart/checkout", data=CHECKOUT_FORM, headers={"traceparent": traceparent})
        assert r.status_code == 200 and 'class="order-id"' in r.text, r.text[:500]


def _tags(span: dict) -> dict[str, object]:
    return {t["key"]: t["value"] for t in span["tags"]}


def _wait_for_trace(jaeger: Jaeger, trace_id: str, services: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        trace = jaeger.trace(trace_id)
        if trace is not None:
            seen = {p["serviceName"] for p in trace["processes"].values()}
            if services <= seen:
                time.sleep(0.5)  # the last batches of slower services
                return jaeger.trace(trace_id) or trace
        time.sleep(0.2)
    pytest.fail(f"trace {trace_id} never held spans of {sorted(services - seen)} (has {sorted(seen)}); "
                f"jaeger log {jaeger.log}")


@pytest.mark.slow
def test_an_order_is_one_trace_with_every_service_and_parent_link(jaeger: Jaeger, traced_shop: Shop) -> None:
    trace_id, edge_span = secrets.token_hex(16), secrets.token_hex(8)  # as the ingress gateway would send
    _place_order(traced_shop, f"00-{trace_id}-{edge_span}-01")
    trace = _wait_for_trace(jaeger, trace_id, set(ORDER_PATH))

    # ONE trace for the order: searching the frontend's checkout requests finds exactly this one
    found = jaeger.get("/api/traces?service=frontend&operation=POST%20%2Fcart%2Fcheckout&limit=20")["data"]
    assert [t["traceID"] for t in found] == [trace_id]

    service_of = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}
    assert {service_of[s["processID"]] for s in spans.values()} >= set(ORDER_PATH)

    def parent(span: dict) -> str:
        refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
        assert len(refs) == 1 and refs[0]["traceID"] == trace_id, span
        return refs[0]["spanID"]

    # the root: the frontend's HTTP server span, continuing the caller's traceparent
    roots = [s for s in spans.values() if parent(s) not in spans]
    assert len(roots) == 1, [(service_of[s["processID"]], s["operationName"]) for s in roots]
    root = roots[0]
    assert (service_of[root["processID"]], root["operationName"], parent(root)) == \
        ("frontend", "POST /cart/checkout", edge_span)
    assert _tags(root)["span.kind"] == SERVER

    edges: set[tuple[str, str]] = set()
    for span in spans.values():
        if span is root:
            continue
        tags, up = _tags(span), spans[parent(span)]
        me, caller = service_of[span["processID"]], service_of[up["processID"]]
        if tags["span.kind"] == SERVER:  # a gRPC server span: child of the caller's client span for the same RPC
            assert _tags(up)["span.kind"] == CLIENT and up["operationName"] == span["operationName"], (span, up)
            assert me in CAT.get(caller).callees, f"{caller} -> {me} is not in the catalog's call graph"
            assert span["operationName"].startswith(f"/{CAT.get(me).grpc_service}/")
            edges.add((caller, me))
        else:  # a client span (gRPC call or Redis command): child of a span of its own service
            assert tags["span.kind"] == CLIENT and caller == me, (span, up)
            if tags.get("db.system") == "redis" or tags.get("db.system.name") == "redis":
                assert me == "cartservice" and _tags(up)["span.kind"] == SERVER
    # the order's call graph, derived from the catalog: the frontend calls checkout, which calls its callees
    checkout = CAT.get("checkoutservice")
    assert {("frontend", "checkoutservice")} | {("checkoutservice", c) for c in checkout.callees} <= edges
    redis_spans = [s for s in spans.values() if service_of[s["processID"]] == "cartservice"
                   and _tags(s)["span.kind"] == CLIENT]
    assert redis_spans, "no span for the cart's Redis commands"
    place_order = next(s for s in spans.values() if s["operationName"] == f"/{checkout.grpc_service}/PlaceOrder"
                       and _tags(s)["span.kind"] == SERVER)
    assert _tags(place_order).get("rpc.grpc.status_code") in (0, None)


@pytest.mark.slow
def test_health_probes_make_no_spans(jaeger: Jaeger, traced_shop: Shop) -> None:
    # the runner's readiness checks called every service's Health/Check before the order
    for name in ORDER_PATH:
        operations = jaeger.get(f"/api/services/{name}/operations")["data"] or []
        assert not [op for op in operations if "grpc.health" in str(op) or "_healthz" in str(op)], (name, operations)


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"ENABLE_TRACING": "0", "COLLECTOR_SERVICE_ADDR": "collector:4317"}, None),
    ({"ENABLE_TRACING": "1", "COLLECTOR_SERVICE_ADDR": "collector:4317"},
     tracing.TracingSettings("collector:4317", True, "COLLECTOR_SERVICE_ADDR")),
    ({"COLLECTOR_SERVICE_ADDR": "collector:4317"}, None),  # Online Boutique: the address alone is not the switch
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317"},
     tracing.TracingSettings("http://otel:4317", True, "OTEL_EXPORTER_OTLP_ENDPOINT")),
    ({"ENABLE_TRACING": "true", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel.example:443/",
      "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4317"},
     tracing.TracingSettings("https://otel.example:443", False, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317", "OTEL_SDK_DISABLED": "true"}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317", "ENABLE_TRACING": "false"}, None),
])
def test_settings_from_env(env: dict[str, str], expected: tracing.TracingSettings | None) -> None:
    assert tracing.settings_from_env(env) == expected


@pytest.mark.parametrize(("env", "message"), [
    ({"ENABLE_TRACING": "1"}, "ENABLE_TRACING=1 needs COLLECTOR_SERVICE_ADDR"),
    ({"ENABLE_TRACING": "1", "COLLECTOR_SERVICE_ADDR": "collector"}, "COLLECTOR_SERVICE_ADDR='collector' is not a"),
    ({"ENABLE_TRACING": "maybe"}, "ENABLE_TRACING='maybe' is not a boolean"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT='otel:4317' is not an OTLP"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:99999"}, "OTEL_EXPORTER_OTLP_ENDPOINT='http://otel:99999'"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        tracing.settings_from_env(env)


def test_a_service_with_bad_tracing_settings_exits_2_naming_them() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENABLE_TRACING", "COLLECTOR_"))}
    env.update(ENABLE_TRACING="1", PORT="0", METRICS_PORT="0", LISTEN_ADDR="127.0.0.1")
    env.update({s.addr_env: "127.0.0.1:1" for s in CAT.grpc_services()})  # the frontend's callees
    for name in ("currencyservice", "frontend"):
        run = subprocess.run([sys.executable, "-m", "boutique.cli", "serve", name], env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2, (name, run.stderr)
        assert "ENABLE_TRACING=1 needs COLLECTOR_SERVICE_ADDR" in run.stderr and "Traceback" not in run.stderr


# --------------------------------------------------------------------------- off is free
_OFF_PROBE = """
import json, sys
from boutique.dev.inprocess import BackgroundService
from boutique import currency
from boutique.frontend.app import create_app
from boutique.frontend import config
from boutique import service_catalog as catalog
with BackgroundService(currency.DEFINITION, {}) as svc:
    clients_wrapped = svc.running.ctx.clients.interceptors
    tracer = svc.running.ctx.tracing
env = {"PORT": "0", "LISTEN_ADDR": "127.0.0.1",
       **{s.addr_env: "127.0.0.1:1" for s in catalog.default().grpc_services()}}
app, _ = create_app(config.from_env(env), catalog.default(), env)
print(json.dumps({"otel": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
                  "client_interceptors": len(clients_wrapped), "tracing": tracer is not None,
                  "frontend_app": type(app).__name__}))
"""


def test_tracing_off_imports_and_wraps_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENABLE_TRACING", "COLLECTOR_"))}
    run = subprocess.run([sys.executable, "-c", _OFF_PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe == {"otel": [], "client_interceptors": 0, "tracing": False, "frontend_app": "ShopMiddleware"}


# --------------------------------------------------------------------------- standard endpoint, small receiver
def test_standard_endpoint_exports_and_continues_the_callers_trace(tmp_path: Path) -> None:
    from boutique import currency

    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with OtlpReceiver() as rx:
        with BackgroundService(currency.DEFINITION, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{rx.address}"}) as svc:
            assert svc.running is not None and svc.running.ctx.tracing is not None
            with grpc.insecure_channel(svc.address) as ch:
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
                req = pb.CurrencyConversionRequest(to_code="EUR")
                getattr(req, "from").CopyFrom(pb.Money(currency_code="USD", units=10))
                rpc.CurrencyServiceStub(ch).Convert(req, timeout=5,
                                                    metadata=[("traceparent", f"00-{trace_id}-{caller_span}-01")])
        # stopping the service exported what was queued
        spans = rx.wait_for(lambda got: bool(got), timeout=10)
    assert [(s.service, s.name, s.trace_id, s.parent_id) for s in spans] == [
        ("currencyservice", "/hipstershop.CurrencyService/Convert", trace_id, caller_span)]
