"""Handlers wrapped once at registration (boutique.runtime.server._WrappingRegistrar), with no
grpc.aio.ServerInterceptor: unary methods (the service's and health Check) are observed, an
unexpected exception is INTERNAL, streaming methods pass through, wrappers nest in order."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from boutique import currency
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import server as server_mod
from boutique.runtime.server import ServiceDefinition


def handled(service: str, method: str, code: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_handled_total", {
        "grpc_service": service, "grpc_method": method, "grpc_code": code}) or 0.0


class Broken(rpc.CurrencyServiceServicer):
    async def Convert(self, request, context):  # type: ignore[override]
        raise ZeroDivisionError("a bug")


BROKEN = ServiceDefinition(module="boutique.currency", add_servicer=rpc.add_CurrencyServiceServicer_to_server,
                           create=lambda ctx: Broken())


def test_service_and_health_calls_are_counted_and_watch_streams() -> None:
    convert_before = handled("hipstershop.CurrencyService", "Convert", "OK")
    check_before = handled("grpc.health.v1.Health", "Check", "OK")
    with BackgroundService(currency.DEFINITION) as svc, grpc.insecure_channel(svc.address) as ch:
        rpc.CurrencyServiceStub(ch).Convert(pb.CurrencyConversionRequest(
            **{"from": pb.Money(currency_code="USD", units=1)}, to_code="EUR"), timeout=5)
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # a stream, passed through
        watch.cancel()
    assert handled("hipstershop.CurrencyService", "Convert", "OK") == convert_before + 1
    assert handled("grpc.health.v1.Health", "Check", "OK") == check_before + 1


def test_an_unexpected_exception_is_internal_naming_the_method() -> None:
    before = handled("hipstershop.CurrencyService", "Convert", "INTERNAL")
    with BackgroundService(BROKEN) as svc, grpc.insecure_channel(svc.address) as ch, \
            pytest.raises(grpc.RpcError) as err:
        rpc.CurrencyServiceStub(ch).Convert(pb.CurrencyConversionRequest(), timeout=5)
    assert err.value.code() is grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error while handling Convert"  # no traceback text
    assert handled("hipstershop.CurrencyService", "Convert", "INTERNAL") == before + 1


class _Recorder:
    def __init__(self) -> None:
        self.registered: dict[str, grpc.RpcMethodHandler] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.registered.update({f"/{service}/{k}": v for k, v in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: tuple) -> None:
        self.generic.extend(handlers)


async def test_wrappers_apply_first_outermost_and_once_per_method() -> None:
    calls: list[str] = []

    def tag(name: str) -> server_mod.metrics.HandlerWrapper:
        def wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
            inner = handler.unary_unary

            async def tagged(request, context):  # type: ignore[no-untyped-def]
                calls.append(name)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(tagged, handler.request_deserializer,
                                                       handler.response_serializer)
        return wrap

    recorder = _Recorder()
    registrar = server_mod._WrappingRegistrar(recorder, [tag("outer"), tag("inner")])  # type: ignore[arg-type]
    rpc.add_CurrencyServiceServicer_to_server(currency.CurrencyService(), registrar)
    handler = recorder.registered["/hipstershop.CurrencyService/GetSupportedCurrencies"]
    await handler.unary_unary(pb.Empty(), None)
    assert calls == ["outer", "inner"]
    details = type("Details", (), {"method": "/hipstershop.CurrencyService/GetSupportedCurrencies",
                                    "invocation_metadata": ()})()
    first, again = (recorder.generic[0].service(details) for _ in range(2))
    assert first is again  # the generic path builds its wrapped handler once, too
