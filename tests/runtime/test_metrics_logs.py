"""Observability of the runtime: JSON access logs with request ids (propagated to callees),
client metrics, the catalog's retry policy (idempotent methods only) and deadlines."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from runtime_samples import SAMPLES, place_order
from runtime_shop import scrape

from boutique import service_catalog as catalog_mod
from boutique.dev.shop import Shop
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.client import Clients

pytestmark = [pytest.mark.slow]
CAT = catalog_mod.default()


def _json(line: str) -> dict:
    try:
        obj = json.loads(line)
    except ValueError:
        return {}  # not a log record (e.g. a native library's warning)
    return obj if isinstance(obj, dict) else {}


def log_lines(path: Path, request_id: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
    """JSON lines of a service log carrying `request_id`; waits (a moment) for `count` of them,
    since the server may write its access line just after the client has its answer."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for line in path.read_text().splitlines():
            obj = _json(line)
            if obj.get("request_id") == request_id:
                found.append(obj)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_access_log_is_json_with_request_id_from_metadata(shop: Shop) -> None:
    rid = f"test-{uuid.uuid4().hex}"
    with shop.channel("currencyservice") as ch:
        started = time.monotonic()
        SAMPLES["hipstershop.CurrencyService"](ch, (("x-request-id", rid),))
        client_ms = (time.monotonic() - started) * 1000
        with pytest.raises(grpc.RpcError):
            rpc.CurrencyServiceStub(ch).Convert(
                pb.CurrencyConversionRequest(**{"from": pb.Money(currency_code="XXX", units=1)}, to_code="EUR"),
                timeout=5, metadata=(("x-request-id", rid),))
    lines = log_lines(shop.log_path("currencyservice"), rid, count=2)
    by_status = {line["status"]: line for line in lines if "status" in line}
    ok, bad = by_status["OK"], by_status["INVALID_ARGUMENT"]
    assert ok["service"] == "currencyservice"
    assert ok["method"] == "/hipstershop.CurrencyService/Convert"
    # in milliseconds, and measured inside the call the client waited for
    assert isinstance(ok["duration_ms"], float | int) and 0 <= ok["duration_ms"] <= client_ms
    assert ok["severity"] == "INFO" and ok["timestamp"].endswith("Z")
    assert bad["method"] == ok["method"]


def test_request_id_is_propagated_to_callees(shop: Shop) -> None:
    # checkout calls its callees on every order (recommendation keeps the product list in memory)
    rid = f"test-{uuid.uuid4().hex}"
    with shop.channel("checkoutservice") as checkout, shop.channel("cartservice") as cart:
        place_order(checkout, cart, (("x-request-id", rid),))
    caller = log_lines(shop.log_path("checkoutservice"), rid)
    callee = log_lines(shop.log_path("cartservice"), rid, count=2)
    assert any(line.get("method") == "/hipstershop.CheckoutService/PlaceOrder" for line in caller)
    assert {line.get("method") for line in callee if line.get("status") == "OK"} >= {
        "/hipstershop.CartService/GetCart", "/hipstershop.CartService/EmptyCart"}, callee


def test_a_request_without_id_gets_one(shop: Shop) -> None:
    path = shop.log_path("adservice")
    seen = len(path.read_text().splitlines())
    with shop.channel("adservice") as ch:
        SAMPLES["hipstershop.AdService"](ch)
    deadline, lines = time.monotonic() + 5, []
    while not lines and time.monotonic() < deadline:
        lines = [obj for obj in map(_json, path.read_text().splitlines()[seen:])
                 if obj.get("method") == "/hipstershop.AdService/GetAds"]
        time.sleep(0.05)
    assert lines and len(lines[-1]["request_id"]) == 32  # a fresh uuid4 hex


def test_client_metrics_are_recorded_by_the_caller(shop: Shop) -> None:
    target = shop.metrics_targets()["checkoutservice"]
    labels = {"grpc_service": "hipstershop.CartService", "grpc_method": "GetCart"}
    key = ("grpc_client_handled_total", tuple(sorted({**labels, "grpc_code": "OK"}.items())))
    hist = ("grpc_client_handling_seconds_count", tuple(sorted(labels.items())))
    before = scrape(target)
    with shop.channel("checkoutservice") as checkout, shop.channel("cartservice") as cart:
        for _ in range(3):
            place_order(checkout, cart)
    after = scrape(target)
    assert after[key] >= before.get(key, 0.0) + 3
    assert after[hist] >= before.get(hist, 0.0) + 3


class FlakyCart(rpc.CartServiceServicer):
    """Fails the first attempt of every method with UNAVAILABLE; counts attempts."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    async def _flaky(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.attempts[method] = self.attempts.get(method, 0) + 1
        if self.attempts[method] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt fails")

    async def GetCart(self, request, context):  # type: ignore[override]
        await self._flaky("GetCart", context)
        return pb.Cart(user_id=request.user_id)

    async def AddItem(self, request, context):  # type: ignore[override]
        await self._flaky("AddItem", context)
        return pb.Empty()


class SlowAds(rpc.AdServiceServicer):
    def __init__(self) -> None:
        self.time_remaining: float | None = None
        self.attempts = 0

    async def GetAds(self, request, context):  # type: ignore[override]
        self.attempts += 1
        self.time_remaining = context.time_remaining()
        await asyncio.sleep(5)
        return pb.AdResponse()


async def _server(add, servicer) -> tuple[grpc.aio.Server, str]:  # type: ignore[no-untyped-def]
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _client_count(service: str, method: str, code: str) -> float:
    return REGISTRY.get_sample_value("grpc_client_handled_total",
                                     {"grpc_service": service, "grpc_method": method, "grpc_code": code}) or 0.0


async def test_idempotent_method_is_retried_on_unavailable_and_non_idempotent_is_not() -> None:
    methods = {m.name: m.idempotent for m in CAT.get("cartservice").methods}
    assert methods["GetCart"] and not methods["AddItem"]  # what the catalog says
    servicer = FlakyCart()
    server, address = await _server(rpc.add_CartServiceServicer_to_server, servicer)
    clients = Clients(CAT, {CAT.get("cartservice").addr_env: address}, None)
    ok_before = _client_count("hipstershop.CartService", "GetCart", "OK")
    try:
        stub = clients.stub("cartservice", rpc.CartServiceStub)
        cart = await stub.GetCart(pb.GetCartRequest(user_id="u1"))
        assert cart.user_id == "u1"
        assert servicer.attempts["GetCart"] == 2  # failed once, retried by the channel's policy
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AddItem(pb.AddItemRequest(user_id="u1", item=pb.CartItem(product_id="X", quantity=1)))
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert servicer.attempts["AddItem"] == 1  # never retried: not idempotent
    finally:
        await clients.close()
        await server.stop(0)
    # client metrics count the outcome of the call as the caller saw it
    assert _client_count("hipstershop.CartService", "GetCart", "OK") == ok_before + 1
    assert _client_count("hipstershop.CartService", "AddItem", "UNAVAILABLE") >= 1


async def test_catalog_deadline_is_applied_to_calls() -> None:
    timeout = CAT.get("adservice").timeout
    servicer = SlowAds()
    server, address = await _server(rpc.add_AdServiceServicer_to_server, servicer)
    clients = Clients(CAT, {CAT.get("adservice").addr_env: address}, None)
    try:
        stub = clients.stub("adservice", rpc.AdServiceStub)
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetAds(pb.AdRequest(context_keys=["clothing"]))
        elapsed = time.monotonic() - start
    finally:
        await clients.close()
        await server.stop(0)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed >= timeout * 0.9  # not cut early; the server's sleep (5 s) would have answered OK
    # the deadline travels to the server (grpc-timeout header; its encoding rounds up a little)
    assert servicer.time_remaining is not None and servicer.time_remaining <= timeout + 0.05
    assert servicer.attempts == 1  # DEADLINE_EXCEEDED is not retried
