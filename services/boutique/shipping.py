"""shippingservice: flat-rate quotes and made-up tracking ids (contract section 2.5).

GetQuote ignores the address (it may be absent): nothing to ship (the item
quantities sum to 0) costs $0.00, anything else a flat $8.99.

ShipOrder returns a tracking id built from the salt
"<street_address>, <city>, <state>":
    L1 L2 "-" len(salt) DDD "-" len(salt)//2 DDDDDDD
with L1, L2 random capitals from A..Y (Z never occurs, as in the original) and
D random digits; len() counts UTF-8 bytes, like Go's len(string).

Deliberate differences: a GetQuote line with a quantity below 1 is INVALID_ARGUMENT
naming it (the original quotes $0.00 for [1, -1]); ShipOrder without an address is INVALID_ARGUMENT (the
original dereferences nil and panics). The runtime registers server
reflection for every service, which covers the original's reflection here.
"""

from __future__ import annotations

import random

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.server import ServiceContext, ServiceDefinition

FLAT_RATE_UNITS, FLAT_RATE_NANOS = 8, 990_000_000  # $8.99 (8.99 split with modf, cents truncated)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXY"  # 65 + rand(25): no Z
_rng = random.SystemRandom()


def quote(items: list[pb.CartItem]) -> pb.Money:
    """$0.00 when the quantities sum to 0 (the original's test), else the flat $8.99."""
    if sum(item.quantity for item in items) == 0:
        return pb.Money(currency_code="USD", units=0, nanos=0)
    return pb.Money(currency_code="USD", units=FLAT_RATE_UNITS, nanos=FLAT_RATE_NANOS)


def _digits(n: int) -> str:
    return "".join(_rng.choice("0123456789") for _ in range(n))


def tracking_id(salt: str) -> str:
    size = len(salt.encode("utf-8"))
    return f"{_rng.choice(_LETTERS)}{_rng.choice(_LETTERS)}-{size}{_digits(3)}-{size // 2}{_digits(7)}"


def salt_of(address: pb.Address) -> str:
    return f"{address.street_address}, {address.city}, {address.state}"


class ShippingService(rpc.ShippingServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.log = ctx.log

    async def GetQuote(self, request: pb.GetQuoteRequest, context: grpc.aio.ServicerContext):
        # Deliberate: the original sums any quantities, so [1, -1] ships for $0.00. No items at
        # all (an empty cart) is still $0.00; a line with a quantity below 1 is refused.
        for i, item in enumerate(request.items):
            if item.quantity < 1:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"items[{i}].quantity: must be at least 1, got {item.quantity}")
        return pb.GetQuoteResponse(cost_usd=quote(list(request.items)))

    async def ShipOrder(self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext):
        if not request.HasField("address"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "address: the shipping address is missing")
        tracking = tracking_id(salt_of(request.address))
        self.log.info("shipment created", extra=logs.fields(tracking_id=tracking, items=len(request.items)))
        return pb.ShipOrderResponse(tracking_id=tracking)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_ShippingServiceServicer_to_server,
                               create=ShippingService)
