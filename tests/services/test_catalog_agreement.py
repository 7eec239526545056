"""The service catalog (group_vars/all/catalog.yml) and the code agree: every gRPC service's
module declares a DEFINITION with the catalog's name, gRPC service, contract port and callees,
and the catalog's methods are exactly the RPCs demo.proto declares for that service."""

from __future__ import annotations

import importlib

import pytest

from boutique import catalog as catalog_mod
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

CATALOG = catalog_mod.default()
GRPC_SERVICES = CATALOG.grpc_services()


def short_name(grpc_service: str) -> str:
    return grpc_service.removeprefix("hipstershop.")


@pytest.mark.parametrize("svc", GRPC_SERVICES, ids=lambda s: s.name)
def test_definition_agrees_with_the_catalog(svc: catalog_mod.Service) -> None:
    module = importlib.import_module(f"boutique.{svc.module}")
    defn = getattr(module, "DEFINITION", None)
    assert defn is not None, f"boutique.{svc.module} has no DEFINITION"
    assert defn.name == svc.name
    assert defn.grpc_service == svc.grpc_service
    assert defn.default_port == svc.port, f"{svc.name}: DEFINITION port {defn.default_port}, catalog {svc.port}"
    expected_callees = [c for c in svc.callees if c != CATALOG.redis.name]
    assert sorted(defn.callees) == sorted(expected_callees), f"{svc.name}: callees differ from the catalog"
    assert len(set(defn.callees)) == len(defn.callees)
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
