"""One valid request per gRPC service, with a check of the answer (contract values).

Keyed by the catalog's grpc_service; test_runner asserts that every gRPC service in the
catalog has a sample here, so a new catalog service cannot slip through untested.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

TIMEOUT = 10
CARD = pb.CreditCardInfo(credit_card_number="4432801561520454", credit_card_cvv=672,
                         credit_card_expiration_year=dt.date.today().year + 1, credit_card_expiration_month=1)
ADDRESS = pb.Address(street_address="1600 Amphitheatre Parkway", city="Mountain View", state="CA",
                     country="United States", zip_code=94043)


def product_catalog(ch: grpc.Channel, md: tuple = ()) -> str:
    p = rpc.ProductCatalogServiceStub(ch).GetProduct(pb.GetProductRequest(id="OLJCESPC7Z"), timeout=TIMEOUT,
                                                     metadata=md)
    assert (p.name, p.price_usd.units, p.price_usd.nanos) == ("Sunglasses", 19, 990000000)
    return "GetProduct"


def currency(ch: grpc.Channel, md: tuple = ()) -> str:
    m = rpc.CurrencyServiceStub(ch).Convert(
        pb.CurrencyConversionRequest(**{"from": pb.Money(currency_code="USD", units=19, nanos=990000000)},
                                     to_code="EUR"), timeout=TIMEOUT, metadata=md)
    assert (m.currency_code, m.units, m.nanos) == ("EUR", 17, 682441398)
    return "Convert"


def cart(ch: grpc.Channel, md: tuple = ()) -> str:
    stub, user = rpc.CartServiceStub(ch), f"runner-test-{uuid.uuid4().hex[:8]}"
    stub.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id="66VCHSJNUP", quantity=2)),
                 timeout=TIMEOUT, metadata=md)
    c = stub.GetCart(pb.GetCartRequest(user_id=user), timeout=TIMEOUT, metadata=md)
    assert [(i.product_id, i.quantity) for i in c.items] == [("66VCHSJNUP", 2)]
    return "GetCart"


def recommendation(ch: grpc.Channel, md: tuple = ()) -> str:
    r = rpc.RecommendationServiceStub(ch).ListRecommendations(
        pb.ListRecommendationsRequest(user_id="u", product_ids=["OLJCESPC7Z"]), timeout=TIMEOUT, metadata=md)
    ids = list(r.product_ids)
    assert 1 <= len(ids) <= 5 and "OLJCESPC7Z" not in ids and len(set(ids)) == len(ids)
    return "ListRecommendations"


def shipping(ch: grpc.Channel, md: tuple = ()) -> str:
    q = rpc.ShippingServiceStub(ch).GetQuote(
        pb.GetQuoteRequest(address=ADDRESS, items=[pb.CartItem(product_id="OLJCESPC7Z", quantity=1)]),
        timeout=TIMEOUT, metadata=md)
    assert (q.cost_usd.currency_code, q.cost_usd.units, q.cost_usd.nanos) == ("USD", 8, 990000000)
    return "GetQuote"


def payment(ch: grpc.Channel, md: tuple = ()) -> str:
    r = rpc.PaymentServiceStub(ch).Charge(
        pb.ChargeRequest(amount=pb.Money(currency_code="USD", units=10), credit_card=CARD),
        timeout=TIMEOUT, metadata=md)
    assert uuid.UUID(r.transaction_id)
    return "Charge"


def email(ch: grpc.Channel, md: tuple = ()) -> str:
    order = pb.OrderResult(order_id="order-1", shipping_tracking_id="AB-12-345",
                           shipping_cost=pb.Money(currency_code="USD", units=8, nanos=990000000),
                           shipping_address=ADDRESS,
                           items=[pb.OrderItem(item=pb.CartItem(product_id="OLJCESPC7Z", quantity=1),
                                               cost=pb.Money(currency_code="USD", units=19, nanos=990000000))])
    r = rpc.EmailServiceStub(ch).SendOrderConfirmation(
        pb.SendOrderConfirmationRequest(email="someone@example.com", order=order), timeout=TIMEOUT, metadata=md)
    assert isinstance(r, pb.Empty)
    return "SendOrderConfirmation"


def ad(ch: grpc.Channel, md: tuple = ()) -> str:
    r = rpc.AdServiceStub(ch).GetAds(pb.AdRequest(context_keys=["clothing"]), timeout=TIMEOUT, metadata=md)
    assert [a.redirect_url for a in r.ads] == ["/product/66VCHSJNUP"]
    return "GetAds"


def place_order(checkout: grpc.Channel, cart_ch: grpc.Channel, md: tuple = (), lines: int = 1) -> pb.OrderResult:
    """Fill a fresh cart with `lines` products, then PlaceOrder through checkout."""
    user = f"order-test-{uuid.uuid4().hex[:8]}"
    cart_stub = rpc.CartServiceStub(cart_ch)
    for pid in ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM"][:lines]:
        cart_stub.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id=pid, quantity=1)),
                          timeout=TIMEOUT)
    r = rpc.CheckoutServiceStub(checkout).PlaceOrder(
        pb.PlaceOrderRequest(user_id=user, user_currency="EUR", address=ADDRESS, email="someone@example.com",
                             credit_card=CARD), timeout=TIMEOUT, metadata=md)
    assert r.order.order_id and r.order.shipping_tracking_id
    assert len(r.order.items) == lines and all(i.cost.currency_code == "EUR" for i in r.order.items)
    assert (r.order.shipping_cost.currency_code, r.order.shipping_cost.units) == ("EUR", 7)
    assert not rpc.CartServiceStub(cart_ch).GetCart(pb.GetCartRequest(user_id=user), timeout=TIMEOUT).items
    return r.order


# grpc_service -> call(channel, metadata) that asserts the answer and returns the method name
SAMPLES: dict[str, Callable[..., str]] = {
    "hipstershop.ProductCatalogService": product_catalog,
    "hipstershop.CurrencyService": currency,
    "hipstershop.CartService": cart,
    "hipstershop.RecommendationService": recommendation,
    "hipstershop.ShippingService": shipping,
    "hipstershop.PaymentService": payment,
    "hipstershop.EmailService": email,
    "hipstershop.AdService": ad,
    # CheckoutService: PlaceOrder needs a filled cart; see place_order()
}
