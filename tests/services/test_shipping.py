"""shippingservice over real gRPC: quotes and tracking ids (contract section 2.5)."""

from __future__ import annotations

import re

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.shipping import DEFINITION

TRACKING = re.compile(r"^[A-Y]{2}-\d+-\d+$")


@pytest.fixture(scope="module")
def channel():
    with BackgroundService(DEFINITION) as svc, grpc.insecure_channel(svc.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return rpc.ShippingServiceStub(channel)


def items(*quantities: int) -> list[pb.CartItem]:
    return [pb.CartItem(product_id=f"P{i}", quantity=q) for i, q in enumerate(quantities)]


ADDRESS = pb.Address(street_address="Muffin Man", city="London", state="", country="UK", zip_code=1)


@pytest.mark.parametrize("quantities", [(1,), (3, 2), (10,)])
def test_quote_is_flat_rate(stub, quantities):
    cost = stub.GetQuote(pb.GetQuoteRequest(address=ADDRESS, items=items(*quantities)), timeout=5).cost_usd
    assert (cost.currency_code, cost.units, cost.nanos) == ("USD", 8, 990_000_000)


@pytest.mark.parametrize("quantities", [()])
def test_quote_for_nothing_is_zero(stub, quantities):
    cost = stub.GetQuote(pb.GetQuoteRequest(address=ADDRESS, items=items(*quantities)), timeout=5).cost_usd
    assert (cost.currency_code, cost.units, cost.nanos) == ("USD", 0, 0)


def test_quote_without_address(stub):
    cost = stub.GetQuote(pb.GetQuoteRequest(items=items(2)), timeout=5).cost_usd
    assert (cost.units, cost.nanos) == (8, 990_000_000)


def ship(stub, address: pb.Address) -> str:
    return stub.ShipOrder(pb.ShipOrderRequest(address=address, items=items(1)), timeout=5).tracking_id


def test_tracking_id_format(stub):
    tracking = ship(stub, ADDRESS)  # salt "Muffin Man, London, " is 20 bytes long
    assert TRACKING.match(tracking), tracking
    assert len(tracking) == 18
    assert re.fullmatch(r"[A-Y]{2}-20\d{3}-10\d{7}", tracking), tracking


def test_tracking_id_uses_utf8_length(stub):
    # "Bahnhofstraße 1, Zürich, ZH" is 27 characters but 29 bytes, like Go's len()
    tracking = ship(stub, pb.Address(street_address="Bahnhofstraße 1", city="Zürich", state="ZH"))
    assert re.fullmatch(r"[A-Y]{2}-29\d{3}-14\d{7}", tracking), tracking


def test_tracking_ids_are_distinct_and_never_z(stub):
    ids = [ship(stub, ADDRESS) for _ in range(100)]
    assert len(set(ids)) == len(ids)
    assert all(TRACKING.match(t) for t in ids)
    assert "Z" not in "".join(t[:2] for t in ids)


def test_ship_without_address_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ShipOrder(pb.ShipOrderRequest(items=items(1)), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("address:")


def test_server_reflection(channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "hipstershop.ShippingService" in services
