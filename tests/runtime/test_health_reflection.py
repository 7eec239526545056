"""Health protocol and server reflection on every gRPC service started by the runner."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from boutique import service_catalog as catalog_mod
from boutique.dev.shop import Shop

pytestmark = [pytest.mark.slow]
CAT = catalog_mod.default()
GRPC_SERVICES = [s.name for s in CAT.grpc_services() if s.deploy]
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_health_reports_serving_for_server_and_service_name(shop: Shop, name: str) -> None:
    with shop.channel(name) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", CAT.get(name).grpc_service):
            assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert next(watch).status == SERVING
        watch.cancel()


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_health_of_an_unknown_service_is_not_found(shop: Shop, name: str) -> None:
    with shop.channel(name) as ch, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="hipstershop.NoSuchService"),
                                             timeout=5)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_reflection_lists_and_describes_the_service(shop: Shop, name: str) -> None:
    grpc_service = CAT.get(name).grpc_service
    with shop.channel(name) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=grpc_service)]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {grpc_service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto, "no descriptor for " + grpc_service
