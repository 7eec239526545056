"""The service catalog (group_vars/all/catalog.yml) and the code agree: every gRPC service's
module declares a DEFINITION that takes its name, gRPC service, port and callees from the catalog
and registers the servicer of that gRPC service; a client of a service that is not one of its
callees is refused at start-up; the catalog's methods are exactly demo.proto's RPCs."""

from __future__ import annotations

import importlib

import pytest

from boutique import service_catalog as catalog_mod
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.config import ConfigError
from boutique.runtime.server import ServiceDefinition

CATALOG = catalog_mod.default()
GRPC_SERVICES = CATALOG.grpc_services()


def short_name(grpc_service: str) -> str:
    return grpc_service.removeprefix("hipstershop.")


@pytest.mark.parametrize("svc", GRPC_SERVICES, ids=lambda s: s.name)
def test_definition_agrees_with_the_catalog(svc: catalog_mod.Service) -> None:
    module = importlib.import_module(f"boutique.{svc.module}")
    defn = getattr(module, "DEFINITION", None)
    assert defn is not None, f"boutique.{svc.module} has no DEFINITION"
    assert defn.module == f"boutique.{svc.module}"
    assert (defn.name, defn.grpc_service, defn.default_port) == (svc.name, svc.grpc_service, svc.port)
    assert defn.callees() == tuple(c for c in svc.callees if c != CATALOG.redis.name)
    assert defn.add_servicer is getattr(rpc, f"add_{short_name(svc.grpc_service)}Servicer_to_server")


@pytest.mark.parametrize("svc", GRPC_SERVICES, ids=lambda s: s.name)
def test_catalog_methods_are_the_proto_rpcs(svc: catalog_mod.Service) -> None:
    desc = pb.DESCRIPTOR.services_by_name.get(short_name(svc.grpc_service))
    assert desc is not None, f"{svc.grpc_service} is not a service of demo.proto"
    assert [m.name for m in svc.methods] == [m.name for m in desc.methods]


def test_every_proto_service_is_in_the_catalog_once() -> None:
    in_catalog = [s.grpc_service for s in GRPC_SERVICES]
    assert len(in_catalog) == len(set(in_catalog))
    assert set(in_catalog) == {s.full_name for s in pb.DESCRIPTOR.services_by_name.values()}


def test_callees_are_grpc_services_with_an_address_variable() -> None:
    for svc in GRPC_SERVICES:
        for callee in svc.callees:
            if callee == CATALOG.redis.name:
                continue
            target = CATALOG.get(callee)
            assert target.is_grpc and target.addr_env.endswith("_ADDR"), f"{svc.name} -> {callee}"


def test_a_client_of_a_service_outside_the_catalogs_callees_is_refused_at_start_up() -> None:
    """currencyservice calls nothing: a servicer that asks for a cart client does not start."""
    def create(ctx):
        ctx.stub("cartservice", rpc.CartServiceStub)
        raise AssertionError("the stub was handed out")

    sneaky = ServiceDefinition(module="boutique.currency", add_servicer=rpc.add_CurrencyServiceServicer_to_server,
                               create=create)
    with pytest.raises(ConfigError, match=r"currencyservice asks for a client of cartservice, which is not one of "
                                          r"its callees in the catalog \(none\)"):
        BackgroundService(sneaky).start()
