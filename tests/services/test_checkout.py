"""checkoutservice over real gRPC (contract section 2.7).

The happy path runs against every real service in-process. The failure tests point each
dependency's address at a recording server written here: a real gRPC server implementing
just that service, which forwards to the real service, counts and records every call, and
can be told to fail a method (or answer differently). The recording payment server proves
that the card is never charged when an earlier step failed.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boutique import money
from boutique import service_catalog as catalog_mod
from boutique.checkout import DEFINITION
from boutique.dev.inprocess import BackgroundService
from boutique.money import multiply
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

CARD = pb.CreditCardInfo(credit_card_number="4432-8015-6152-0454", credit_card_cvv=672,
                         credit_card_expiration_year=2039, credit_card_expiration_month=1)
ADDRESS = pb.Address(street_address="1600 Amphitheatre Parkway", city="Mountain View", state="CA",
                     country="United States", zip_code=94043)
TRACKING = re.compile(r"^[A-Z]{2}-\d+-\d+$")
# Contract test vectors (section 2.3): USD price -> price in the column's currency.
PRICES = {
    "OLJCESPC7Z": {"USD": "19.99", "EUR": "17.682441398", "JPY": "2235.060592707"},
    "1YMWWN1N4O": {"USD": "109.99", "EUR": "97.293233083", "JPY": "12297.864661691"},
    "SHIPPING": {"USD": "8.99", "EUR": "7.952233525", "JPY": "1005.162317560"},
}


def as_money(code: str, amount: Decimal | str) -> pb.Money:
    value = Decimal(amount)
    units = int(value)  # truncates toward zero, like the Money sign rule
    nanos = int((value - units) * 1_000_000_000)
    return pb.Money(currency_code=code, units=units, nanos=nanos)


def order_request(user: str, currency: str = "EUR", **changes: Any) -> pb.PlaceOrderRequest:
    req = pb.PlaceOrderRequest(user_id=user, user_currency=currency, address=ADDRESS, email="someone@example.com",
                               credit_card=CARD)
    for name, value in changes.items():
        if value is None:
            req.ClearField(name)
        elif isinstance(value, str):
            setattr(req, name, value)
        else:
            getattr(req, name).CopyFrom(value)
    return req


# ---------------------------------------------------------------- the recording server

Fault = Callable[[Any, int], Any]  # (request, n-th call) -> None (forward) | (code, message) | response


class RecordingServer:
    """A real gRPC server implementing one hipstershop service from its descriptor. Each call
    is counted, recorded (request, remaining deadline) and appended to a shared sequence; then
    answered by the method's fault if one is set and it returns something, else forwarded to
    the real service at `upstream` (errors passed through unchanged)."""

    def __init__(self, service: str, upstream: str, sequence: list[str], lock: threading.Lock) -> None:
        desc = pb.DESCRIPTOR.services_by_name[service]
        self.service = service
        self.calls: Counter[str] = Counter()
        self.requests: dict[str, list[Any]] = defaultdict(list)
        self.deadlines: dict[str, list[float | None]] = defaultdict(list)
        self.faults: dict[str, Fault] = {}
        self.sequence, self.lock = sequence, lock
        self.channel = grpc.insecure_channel(upstream)
        handlers = {}
        for method in desc.methods:
            req_cls, resp_cls = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
            forward = self.channel.unary_unary(f"/{desc.full_name}/{method.name}",
                                               request_serializer=req_cls.SerializeToString,
                                               response_deserializer=resp_cls.FromString)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                self._handler(method.name, forward),
                request_deserializer=req_cls.FromString, response_serializer=resp_cls.SerializeToString)
        self.server = grpc.server(ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(desc.full_name, handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handler(self, method: str, forward: Any) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self.lock:
                self.calls[method] += 1
                n = self.calls[method]
                self.requests[method].append(request)
                self.deadlines[method].append(context.time_remaining())
                self.sequence.append(f"{self.service}.{method}")
            fault = self.faults.get(method)
            outcome = fault(request, n) if fault else None
            if isinstance(outcome, tuple):
                context.abort(*outcome)
            if outcome is not None:
                return outcome
            try:
                return forward(request, timeout=10)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())
        return handle

    def reset(self) -> None:
        self.calls.clear()
        self.requests.clear()
        self.deadlines.clear()
        self.faults.clear()

    def stop(self) -> None:
        self.server.stop(None)
        self.channel.close()


def fail(code: grpc.StatusCode, message: str, when: Callable[[Any], bool] = lambda r: True,
         delay: float = 0.0) -> Fault:
    def fault(request: Any, n: int) -> Any:
        if when(request):
            time.sleep(delay)
            return (code, message)
        return None
    return fault


class Shop:
    """Real services, a checkout wired straight to them, and a checkout wired to them
    through recording servers (`rec[<catalog name>]`)."""

    def __init__(self, services: dict[str, BackgroundService], stack: ExitStack) -> None:
        self.services = services
        self.sequence: list[str] = []
        lock = threading.Lock()
        cat = catalog_mod.default()
        self.rec: dict[str, RecordingServer] = {}
        env = {}
        for callee in DEFINITION.callees():
            svc = cat.get(callee)
            server = RecordingServer(svc.grpc_service.split(".")[1], services[callee].address, self.sequence, lock)
            stack.callback(server.stop)
            self.rec[callee] = server
            env[svc.addr_env] = server.address
        self.env = env
        self.checkout = stack.enter_context(BackgroundService(DEFINITION, env))
        self.channels = [grpc.insecure_channel(a) for a in (self.checkout.address, services["cartservice"].address,
                                                            services["checkoutservice"].address)]
        for ch in self.channels:
            stack.callback(ch.close)
        self.recorded = rpc.CheckoutServiceStub(self.channels[0])
        self.cart = rpc.CartServiceStub(self.channels[1])
        self.direct = rpc.CheckoutServiceStub(self.channels[2])

    def reset(self) -> None:
        self.sequence.clear()
        for server in self.rec.values():
            server.reset()

    def fill_cart(self, user: str, lines: list[tuple[str, int]]) -> None:
        for product, quantity in lines:
            self.cart.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id=product, quantity=quantity)),
                              timeout=5)

    def cart_lines(self, user: str) -> list[tuple[str, int]]:
        return [(i.product_id, i.quantity) for i in self.cart.GetCart(pb.GetCartRequest(user_id=user), timeout=5).items]

    def calls(self, callee: str, method: str) -> int:
        return self.rec[callee].calls[method]

    @property
    def charges(self) -> int:
        return self.calls("paymentservice", "Charge")


@pytest.fixture(scope="module")
def module_shop(all_services) -> Iterator[Shop]:
    with ExitStack() as stack:
        yield Shop(all_services, stack)


@pytest.fixture
def shop(module_shop: Shop) -> Shop:
    module_shop.reset()
    return module_shop


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4()}"


LINES = [("OLJCESPC7Z", 2), ("1YMWWN1N4O", 1)]


def expected_total(currency: str) -> pb.Money:
    total = sum(Decimal(PRICES[p][currency]) * q for p, q in LINES) + Decimal(PRICES["SHIPPING"][currency])
    return as_money(currency, total)


# ---------------------------------------------------------------- happy paths


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY"])
def test_place_order_with_all_real_services(shop: Shop, user: str, currency: str) -> None:
    shop.fill_cart(user, LINES)
    order = shop.direct.PlaceOrder(order_request(user, currency), timeout=10).order
    assert uuid.UUID(order.order_id).version == 1
    assert TRACKING.match(order.shipping_tracking_id), order.shipping_tracking_id
    assert order.shipping_cost == as_money(currency, PRICES["SHIPPING"][currency])
    assert order.shipping_address == ADDRESS
    assert [(i.item.product_id, i.item.quantity) for i in order.items] == LINES
    assert [i.cost for i in order.items] == [as_money(currency, PRICES[p][currency]) for p, _ in LINES]
    assert shop.cart_lines(user) == []  # emptied


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY"])
def test_calls_follow_the_contract_and_charge_the_total(shop: Shop, user: str, currency: str) -> None:
    shop.fill_cart(user, LINES)
    order = shop.recorded.PlaceOrder(order_request(user, currency), timeout=10).order
    # The total charged is zero + shipping + sum(cost x quantity).
    (charge,) = shop.rec["paymentservice"].requests["Charge"]
    assert charge.amount == expected_total(currency)
    assert charge.credit_card == CARD
    # Call counts for N=2 distinct lines: 1 GetCart, N GetProduct, N+1 Convert, 1 of each other.
    counts = Counter(shop.sequence)
    assert counts == Counter({
        "CartService.GetCart": 1, "ProductCatalogService.GetProduct": 2, "CurrencyService.Convert": 3,
        "ShippingService.GetQuote": 1, "PaymentService.Charge": 1, "ShippingService.ShipOrder": 1,
        "CartService.EmptyCart": 1, "EmailService.SendOrderConfirmation": 1})
    # Order: GetCart; the lines; then strictly GetQuote, Convert(shipping), Charge, ShipOrder, EmptyCart, email.
    assert shop.sequence[0] == "CartService.GetCart"
    assert sorted(shop.sequence[1:5]) == ["CurrencyService.Convert", "CurrencyService.Convert",
                                          "ProductCatalogService.GetProduct", "ProductCatalogService.GetProduct"]
    assert shop.sequence[5:] == ["ShippingService.GetQuote", "CurrencyService.Convert", "PaymentService.Charge",
                                 "ShippingService.ShipOrder", "CartService.EmptyCart",
                                 "EmailService.SendOrderConfirmation"]
    # Each line: its GetProduct before its Convert, with that product's USD price.
    converts = shop.rec["currencyservice"].requests["Convert"]
    assert sorted(getattr(c, "from").units for c in converts[:2]) == [19, 109]
    assert getattr(converts[2], "from") == pb.Money(currency_code="USD", units=8, nanos=990_000_000)
    assert all(c.to_code == currency for c in converts)
    # Shipping sees the cart items and the address; e-mail gets the order as returned.
    (quote,) = shop.rec["shippingservice"].requests["GetQuote"]
    assert quote.address == ADDRESS and [(i.product_id, i.quantity) for i in quote.items] == LINES
    (mail,) = shop.rec["emailservice"].requests["SendOrderConfirmation"]
    assert mail.email == "someone@example.com" and mail.order == order


def test_empty_cart_succeeds_with_total_zero(shop: Shop, user: str) -> None:
    order = shop.recorded.PlaceOrder(order_request(user, "EUR"), timeout=10).order
    assert list(order.items) == []
    assert order.shipping_cost == pb.Money(currency_code="EUR", units=0, nanos=0)
    assert TRACKING.match(order.shipping_tracking_id)
    (charge,) = shop.rec["paymentservice"].requests["Charge"]
    assert charge.amount == pb.Money(currency_code="EUR", units=0, nanos=0)
    assert shop.calls("shippingservice", "ShipOrder") == 1
    assert shop.calls("emailservice", "SendOrderConfirmation") == 1


def test_a_huge_quantity_is_priced_without_stalling(shop: Shop, user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # our cart caps a line at 1000, the original's does not: lift the cap (the cart runs in this process)
    monkeypatch.setattr("boutique.cart.MAX_LINE_QUANTITY", 2**31 - 1)
    shop.fill_cart(user, [("9SIQT8TOJO", 2_000_000_000)])  # 5.49 USD each
    # a per-unit loop (2e9 additions) would run into the call's deadline: DEADLINE_EXCEEDED
    shop.recorded.PlaceOrder(order_request(user, "USD"), timeout=30)
    (charge,) = shop.rec["paymentservice"].requests["Charge"]
    assert charge.amount == as_money("USD", Decimal("5.49") * 2_000_000_000 + Decimal("8.99"))


def test_callee_calls_carry_the_incoming_deadline(shop: Shop, user: str) -> None:
    shop.fill_cart(user, LINES)
    shop.recorded.PlaceOrder(order_request(user), timeout=1.5)
    deadlines = [d for server in shop.rec.values() for ds in server.deadlines.values() for d in ds]
    assert len(deadlines) == len(shop.sequence)
    # grpc-timeout is rounded up a little on the wire; without propagation these would be 2 s or 3 s.
    assert all(d is not None and d < 1.6 for d in deadlines), deadlines


# ---------------------------------------------------------------- failures

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
INTERNAL = grpc.StatusCode.INTERNAL
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def is_usd(units: int, nanos: int) -> Callable[[Any], bool]:
    return lambda r: getattr(r, "from").units == units and getattr(r, "from").nanos == nanos


# Faults on idempotent methods (GetCart, GetProduct, Convert, GetQuote) use codes the runtime
# does not retry, so each fault is seen exactly once.
FAILURES = [
    # (callee, method, fault, status, message, charged)
    ("cartservice", "GetCart", fail(grpc.StatusCode.FAILED_PRECONDITION, "Can't access cart storage. down"), INTERNAL,
     "cart failure: failed to get user cart during checkout: "
     "rpc error: code = FailedPrecondition desc = Can't access cart storage. down", 0),
    ("productcatalogservice", "GetProduct",
     fail(grpc.StatusCode.NOT_FOUND, "no product with ID 1YMWWN1N4O", when=lambda r: r.id == "1YMWWN1N4O"), INTERNAL,
     'failed to prepare order: failed to get product #"1YMWWN1N4O"', 0),
    ("currencyservice", "Convert", fail(INVALID, "to_code: nope", when=is_usd(19, 990_000_000)), INTERNAL,
     'failed to prepare order: failed to convert price of "OLJCESPC7Z" to EUR', 0),
    ("shippingservice", "GetQuote", fail(INTERNAL, "no quotes today"), INTERNAL,
     "shipping quote failure: failed to get shipping quote: rpc error: code = Internal desc = no quotes today", 0),
    ("currencyservice", "Convert", fail(INVALID, "rates are stale", when=is_usd(8, 990_000_000)), INTERNAL,
     "failed to convert shipping cost to currency: failed to convert currency: "
     "rpc error: code = InvalidArgument desc = rates are stale", 0),
    ("paymentservice", "Charge", fail(INVALID, "Credit card info is invalid"), INTERNAL,
     "failed to charge card: could not charge the card: rpc error: code = Code(400) desc = Credit card info is invalid",
     1),
    ("paymentservice", "Charge", fail(UNAVAILABLE, "bank offline"), INTERNAL,
     "failed to charge card: could not charge the card: rpc error: code = Unavailable desc = bank offline", 1),
    ("shippingservice", "ShipOrder", fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "no trucks"), UNAVAILABLE,
     "shipping error: shipment failed: rpc error: code = ResourceExhausted desc = no trucks", 1),
]


@pytest.mark.parametrize(("callee", "method", "fault", "code", "message", "charged"), FAILURES,
                         ids=[f"{f[1]}-{f[3].name}-{i}" for i, f in enumerate(FAILURES)])
def test_each_failing_dependency_maps_to_the_contract_status(
        shop: Shop, user: str, callee: str, method: str, fault: Fault, code: grpc.StatusCode, message: str,
        charged: int) -> None:
    shop.fill_cart(user, LINES)
    shop.rec[callee].faults[method] = fault
    with pytest.raises(grpc.RpcError) as err:
        shop.recorded.PlaceOrder(order_request(user), timeout=10)
    assert err.value.code() is code
    assert err.value.details() == message
    assert shop.charges == charged  # never charged when an earlier step failed
    # Nothing after the failing step ran: no shipment, the cart kept, no e-mail.
    assert shop.calls("shippingservice", "ShipOrder") == (1 if method == "ShipOrder" else 0)
    assert shop.calls("cartservice", "EmptyCart") == 0
    assert shop.calls("emailservice", "SendOrderConfirmation") == 0
    assert shop.cart_lines(user) == LINES


def test_a_refusal_of_the_real_payment_service_reaches_the_user(shop: Shop, user: str) -> None:
    shop.fill_cart(user, LINES)
    amex = pb.CreditCardInfo(credit_card_number="378282246310005", credit_card_cvv=1234,
                             credit_card_expiration_year=2039, credit_card_expiration_month=1)
    with pytest.raises(grpc.RpcError) as err:
        shop.recorded.PlaceOrder(order_request(user, credit_card=amex), timeout=10)
    assert err.value.code() is INTERNAL
    assert err.value.details() == (
        "failed to charge card: could not charge the card: rpc error: code = Code(400) desc = "
        "Sorry, we cannot process amex credit cards. Only VISA or MasterCard is accepted.")
    assert shop.calls("shippingservice", "ShipOrder") == 0
    assert shop.cart_lines(user) == LINES


@pytest.mark.parametrize(("callee", "method"), [("emailservice", "SendOrderConfirmation"),
                                                ("cartservice", "EmptyCart")])
def test_email_and_empty_cart_failures_do_not_fail_the_order(shop: Shop, user: str, callee: str, method: str) -> None:
    shop.fill_cart(user, LINES)
    shop.rec[callee].faults[method] = fail(INTERNAL, f"{method} is broken")  # INTERNAL: not retried
    order = shop.recorded.PlaceOrder(order_request(user), timeout=10).order
    assert TRACKING.match(order.shipping_tracking_id)
    assert shop.charges == 1
    assert shop.calls(callee, method) == 1
    assert shop.calls("emailservice", "SendOrderConfirmation") == 1  # still sent after EmptyCart failed
    assert shop.cart_lines(user) == ([] if callee == "emailservice" else LINES)


def test_the_first_failing_line_in_cart_order_is_reported(shop: Shop, user: str) -> None:
    """Lines are priced concurrently; the error is still the sequential original's."""
    shop.fill_cart(user, [("OLJCESPC7Z", 1), ("66VCHSJNUP", 1), ("1YMWWN1N4O", 1)])
    catalog = shop.rec["productcatalogservice"]
    slow_second = fail(grpc.StatusCode.NOT_FOUND, "gone", when=lambda r: r.id == "66VCHSJNUP", delay=0.3)
    fast_third = fail(grpc.StatusCode.NOT_FOUND, "gone", when=lambda r: r.id == "1YMWWN1N4O")
    catalog.faults["GetProduct"] = lambda r, n: slow_second(r, n) or fast_third(r, n)
    with pytest.raises(grpc.RpcError) as err:
        shop.recorded.PlaceOrder(order_request(user), timeout=10)
    assert err.value.details() == 'failed to prepare order: failed to get product #"66VCHSJNUP"'
    assert shop.charges == 0


def test_a_cart_line_without_quantity_is_refused_before_pricing(shop: Shop, user: str) -> None:
    """The original cart stores quantity 0 (and the original checkout would charge one unit)."""
    bad = pb.Cart(user_id=user, items=[pb.CartItem(product_id="OLJCESPC7Z", quantity=1),
                                       pb.CartItem(product_id="L9ECAV7KIM", quantity=0)])
    shop.rec["cartservice"].faults["GetCart"] = lambda r, n: bad
    with pytest.raises(grpc.RpcError) as err:
        shop.recorded.PlaceOrder(order_request(user), timeout=10)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert '"L9ECAV7KIM" has quantity 0' in err.value.details()
    assert shop.calls("productcatalogservice", "GetProduct") == 0
    assert shop.charges == 0


def test_an_unreachable_dependency_is_reported_as_unavailable(all_services, unused_port: int, user: str) -> None:
    cat = catalog_mod.default()
    env = {cat.get(c).addr_env: all_services[c].address for c in DEFINITION.callees()}
    env["CART_SERVICE_ADDR"] = f"127.0.0.1:{unused_port}"  # nothing listens there
    with (BackgroundService(DEFINITION, env) as checkout, grpc.insecure_channel(checkout.address) as ch,
          pytest.raises(grpc.RpcError) as err):
        rpc.CheckoutServiceStub(ch).PlaceOrder(order_request(user), timeout=10)
    assert err.value.code() is INTERNAL
    # Unavailable (connection refused), after the runtime's retries for the idempotent GetCart.
    assert err.value.details().startswith("cart failure: failed to get user cart during checkout: rpc error: code = ")


def test_missing_callee_addresses_fail_at_start_naming_the_variable() -> None:
    from boutique.runtime.config import ConfigError

    with pytest.raises(ConfigError, match="PRODUCT_CATALOG_SERVICE_ADDR"):
        BackgroundService(DEFINITION, {}).start()


@pytest.mark.parametrize(("changes", "field"), [
    ({"user_id": ""}, "user_id"),
    ({"user_currency": ""}, "user_currency"),
    ({"user_currency": "eur"}, "user_currency"),
    ({"user_currency": "EURO"}, "user_currency"),
    ({"address": None}, "address"),
    ({"email": ""}, "email"),
    ({"credit_card": None}, "credit_card"),
])
def test_invalid_input_is_invalid_argument_before_any_call(shop: Shop, user: str, changes: dict, field: str) -> None:
    shop.fill_cart(user, LINES)
    with pytest.raises(grpc.RpcError) as err:
        shop.recorded.PlaceOrder(order_request(user, **changes), timeout=10)
    assert err.value.code() is INVALID
    assert err.value.details().startswith(f"{field}: "), err.value.details()
    assert shop.sequence == []


# ---------------------------------------------------------------- money


@settings(max_examples=300, deadline=None, database=None)
@given(units=st.integers(0, 10**6), nanos=st.integers(0, 999_999_999), negative=st.booleans(),
       k=st.integers(0, 60), code=st.sampled_from(["EUR", "USD", ""]))
def test_multiply_equals_multiply_slow(units: int, nanos: int, negative: bool, k: int, code: str) -> None:
    sign = -1 if negative else 1
    m = pb.Money(currency_code=code, units=sign * units, nanos=sign * nanos)
    assert multiply(m, k) == money.multiply_slow(m, k)


def test_multiply_refuses_invalid_money_like_sum() -> None:
    bad = pb.Money(currency_code="EUR", units=1, nanos=-5)
    assert multiply(bad, 1) == bad  # MultiplySlow with k=1 never calls Sum
    with pytest.raises(money.MoneyError, match="invalid"):
        multiply(bad, 2)
    with pytest.raises(money.MoneyError):
        multiply(pb.Money(currency_code="EUR", units=2**62), 4)  # beyond int64
