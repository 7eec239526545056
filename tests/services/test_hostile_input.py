"""Regression tests of issue 15 for the gRPC services: bad input from an internal caller is
INVALID_ARGUMENT naming the field (never UNKNOWN or INTERNAL, never a Python class name),
and a repeated Charge or PlaceOrder with the same idempotency key charges once.

Every service runs in-process on real sockets (the `all_services` fixture)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
GOOD_CARD = pb.CreditCardInfo(credit_card_number="4432801561520454", credit_card_cvv=672,
                              credit_card_expiration_year=2099, credit_card_expiration_month=1)
ADDRESS = pb.Address(street_address="1600 Amphitheatre Parkway", city="Mountain View", state="CA",
                     country="United States", zip_code=94043)


@pytest.fixture(scope="module")
def channels(all_services):
    opened = {name: grpc.insecure_channel(svc.address) for name, svc in all_services.items()}
    yield opened
    for ch in opened.values():
        ch.close()


def rejected(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10, **kwargs)
    return err.value


def _methods() -> list[tuple[str, str]]:
    out = []
    for service in pb.DESCRIPTOR.services_by_name.values():
        out += [(service.full_name, m.name) for m in service.methods]
    return out


SERVICE_OF = {
    "hipstershop.CartService": "cartservice", "hipstershop.RecommendationService": "recommendationservice",
    "hipstershop.ProductCatalogService": "productcatalogservice", "hipstershop.ShippingService": "shippingservice",
    "hipstershop.CurrencyService": "currencyservice", "hipstershop.PaymentService": "paymentservice",
    "hipstershop.EmailService": "emailservice", "hipstershop.CheckoutService": "checkoutservice",
    "hipstershop.AdService": "adservice",
}


@pytest.mark.parametrize(("service", "method"), _methods())
def test_request_bytes_that_do_not_decode_are_invalid_argument(channels, service: str, method: str) -> None:
    """Defect 6: garbage bytes gave UNKNOWN "Unexpected <class '...DecodeError'>" in all nine services."""
    name = SERVICE_OF[service]
    if name not in channels:
        pytest.skip(f"{name} is not deployed")
    call = channels[name].unary_unary(f"/{service}/{method}")  # raw bytes in, raw bytes out
    err = rejected(call, b"\xff\xff\xff\xff garbage")
    assert err.code() is INVALID, (err.code(), err.details())
    assert "request" in err.details() and "hipstershop." in err.details()
    assert "<class" not in err.details() and "DecodeError" not in err.details()


def test_health_check_with_garbage_is_invalid_argument(channels) -> None:
    call = channels["cartservice"].unary_unary("/grpc.health.v1.Health/Check")
    err = rejected(call, b"\xff\xff\xff")
    assert err.code() is INVALID and "<class" not in err.details()


def test_a_huge_product_id_is_not_found_not_internal(channels) -> None:
    """Defect 4: a 16 KB id was echoed into the NOT_FOUND message past gRPC's metadata limit."""
    stub = rpc.ProductCatalogServiceStub(channels["productcatalogservice"])
    err = rejected(stub.GetProduct, pb.GetProductRequest(id="X" * 20_000))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert len(err.details()) < 200


@pytest.mark.parametrize(("units", "src", "dst"), [
    (10**15, "EUR", "IDR"), (-(2**63), "EUR", "JPY"), (2**63 - 1, "USD", "JPY")])
def test_convert_overflow_is_invalid_argument(channels, units: int, src: str, dst: str) -> None:
    """Defect 5: a result that does not fit int64 was INTERNAL."""
    stub = rpc.CurrencyServiceStub(channels["currencyservice"])
    req = pb.CurrencyConversionRequest(to_code=dst)
    getattr(req, "from").CopyFrom(pb.Money(currency_code=src, units=units))
    err = rejected(stub.Convert, req)
    assert err.code() is INVALID and err.details().startswith("from.units:"), err.details()


@pytest.mark.parametrize(("units", "nanos", "field"), [(1, 2_000_000_000, "from.nanos"), (-1, 5, "from:"),
                                                       (3, -5, "from:")])
def test_convert_refuses_invalid_money(channels, units: int, nanos: int, field: str) -> None:
    stub = rpc.CurrencyServiceStub(channels["currencyservice"])
    req = pb.CurrencyConversionRequest(to_code="EUR")
    getattr(req, "from").CopyFrom(pb.Money(currency_code="USD", units=units, nanos=nanos))
    err = rejected(stub.Convert, req)
    assert err.code() is INVALID and err.details().startswith(field), err.details()


@pytest.mark.parametrize(("amount", "month", "field"), [
    (pb.Money(currency_code="USD", units=-5), 1, "amount:"),
    (pb.Money(currency_code="USD", units=0, nanos=-1), 1, "amount:"),
    (pb.Money(currency_code="USD", units=10**15), 1, "amount.units"),
    (pb.Money(currency_code="USD", units=1, nanos=1_500_000_000), 1, "amount.nanos"),
    (pb.Money(currency_code="usd", units=1), 1, "amount.currency_code"),
    (pb.Money(currency_code="USD", units=1), 13, "credit_card.credit_card_expiration_month"),
    (pb.Money(currency_code="USD", units=1), -5, "credit_card.credit_card_expiration_month"),
])
def test_payment_refuses_bad_amounts_and_months_naming_the_field(channels, amount, month: int, field: str) -> None:
    stub = rpc.PaymentServiceStub(channels["paymentservice"])
    card = pb.CreditCardInfo()
    card.CopyFrom(GOOD_CARD)
    card.credit_card_expiration_month = month
    err = rejected(stub.Charge, pb.ChargeRequest(amount=amount, credit_card=card))
    assert err.code() is INVALID and err.details().startswith(field), err.details()


def test_payment_with_the_same_idempotency_key_charges_once(channels) -> None:
    stub = rpc.PaymentServiceStub(channels["paymentservice"])
    key = (("idempotency-key", f"test/{uuid.uuid4()}"),)
    req = pb.ChargeRequest(amount=pb.Money(currency_code="USD", units=12, nanos=500_000_000), credit_card=GOOD_CARD)
    first = stub.Charge(req, timeout=10, metadata=key)
    again = stub.Charge(req, timeout=10, metadata=key)
    assert again.transaction_id == first.transaction_id
    other = stub.Charge(req, timeout=10, metadata=(("idempotency-key", f"test/{uuid.uuid4()}"),))
    assert other.transaction_id != first.transaction_id
    unkeyed = [stub.Charge(req, timeout=10).transaction_id for _ in range(2)]
    assert unkeyed[0] != unkeyed[1]  # without a key, as the original: every call charges
    req.amount.units = 13
    err = rejected(stub.Charge, req, metadata=key)
    assert err.code() is grpc.StatusCode.ALREADY_EXISTS and "idempotency-key" in err.details()


def test_checkout_refuses_an_invalid_email(channels) -> None:
    stub = rpc.CheckoutServiceStub(channels["checkoutservice"])
    req = pb.PlaceOrderRequest(user_id="u-email", user_currency="USD", email="not an address",
                               address=ADDRESS, credit_card=GOOD_CARD)
    err = rejected(stub.PlaceOrder, req)
    assert err.code() is INVALID and err.details().startswith("email:"), err.details()


def test_a_repeated_place_order_with_the_same_key_returns_the_same_order(channels) -> None:
    cart = rpc.CartServiceStub(channels["cartservice"])
    user = f"u-{uuid.uuid4()}"
    cart.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id="OLJCESPC7Z", quantity=2)), timeout=10)
    stub = rpc.CheckoutServiceStub(channels["checkoutservice"])
    req = pb.PlaceOrderRequest(user_id=user, user_currency="USD", email="someone@example.com",
                               address=ADDRESS, credit_card=GOOD_CARD)
    key = (("idempotency-key", f"{user}/{uuid.uuid4()}"),)
    first = stub.PlaceOrder(req, timeout=20, metadata=key).order
    again = stub.PlaceOrder(req, timeout=20, metadata=key).order
    assert again.order_id == first.order_id and again.shipping_tracking_id == first.shipping_tracking_id
    assert len(first.items) == 1 and first.items[0].item.quantity == 2


def test_shipping_refuses_lines_below_one(channels) -> None:
    """The original quotes $0.00 for quantities summing to 0, such as [1, -1]."""
    stub = rpc.ShippingServiceStub(channels["shippingservice"])
    items = [pb.CartItem(product_id="OLJCESPC7Z", quantity=1), pb.CartItem(product_id="66VCHSJNUP", quantity=-1)]
    err = rejected(stub.GetQuote, pb.GetQuoteRequest(address=ADDRESS, items=items))
    assert err.code() is INVALID and err.details().startswith("items[1].quantity"), err.details()
    assert stub.GetQuote(pb.GetQuoteRequest(), timeout=10).cost_usd.units == 0  # an empty cart ships free
