"""Property-based fuzzing of every RPC of every backend service, all running in-process and
wired together (the cart on its in-memory store).

The RPC list comes from demo.proto's descriptors, so a new RPC is fuzzed automatically.
Requests are random protobuf messages built field by field from the descriptors: missing
sub-messages and fields, extreme and negative numbers, unicode, empty and long strings, mixed
with meaningful values by field name (HINTS: real product ids, currency codes, a valid card) so
that calls also get deep into the services (orders that go through). Properties:
  * no call ends UNKNOWN, or with any code outside OK, INVALID_ARGUMENT, NOT_FOUND,
    FAILED_PRECONDITION; checkout may also return INTERNAL and UNAVAILABLE, and only with the
    messages of the contract's error mapping; AddItem may be RESOURCE_EXHAUSTED by the cart's caps;
  * no server breaks: afterwards every service still answers health checks SERVING.

BOUTIQUE_FUZZ_EXAMPLES (default 40 per RPC, 120 for PlaceOrder) and BOUTIQUE_FUZZ_RANDOM=1
(a fresh random seed instead of the reproducible derandomized run) widen the search.
"""

from __future__ import annotations

import functools
import os

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boutique import service_catalog as catalog_mod
from boutique.proto import demo_pb2 as pb

EXAMPLES = int(os.environ.get("BOUTIQUE_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = os.environ.get("BOUTIQUE_FUZZ_RANDOM", "") != "1"

OK_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION}
# Checkout's error mapping (contract 2.7) plus our total computation's failure.
CHECKOUT_MESSAGES = {
    grpc.StatusCode.INTERNAL: (
        "cart failure: failed to get user cart during checkout: ",
        'failed to prepare order: failed to get product #"',
        'failed to prepare order: failed to convert price of "',
        "shipping quote failure: failed to get shipping quote: ",
        "failed to convert shipping cost to currency: failed to convert currency: ",
        "failed to charge card: could not charge the card: ",
        "failed to calculate the order total: ",
    ),
    grpc.StatusCode.UNAVAILABLE: ("shipping error: shipment failed: ",),
}

PRODUCT_IDS = ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0", "LS4PSXUNUM",
               "9SIQT8TOJO", "6E92ZMYYFZ"]
STRINGS = [
    "", " ", *PRODUCT_IDS, "NOSUCHPROD", "USD", "EUR", "JPY", "TRY", "usd", "XXX", "EURO",
    "4432801561520454", "4432-8015-6152-0454", "5555555555554444", "378282246310005", "4026000000000002",
    "someone@example.com", "not an e-mail", "fuzz-user-1", "fuzz-user-2", "kitchen", "clothing", "accessories",
    "ünïcødé ☃ 𝔘𝔫𝔦", "\x00\x01", "'; DROP TABLE carts; --", "%s%n{0}", "<script>alert(1)</script>", "x" * 5000,
]
INTEGERS = [0, 1, -1, 2, 12, 13, 2020, 2039, 99, 999_999_999, -999_999_999, 1_000_000_000, 2**31 - 1, -(2**31),
            2**53 + 1, 2**63 - 1, -(2**63), 2**32, 2**64 - 1]
BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


# Meaningful values by field name, used for "sane" requests (see message()), so that calls also
# pass validation and reach deep paths (a PlaceOrder that succeeds). Other fields: random only.
CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "GBP", "TRY", "CAD"])
HINTS: dict[str, st.SearchStrategy] = {
    "currency_code": CURRENCIES, "to_code": CURRENCIES, "user_currency": CURRENCIES,
    "credit_card_number": st.sampled_from(["4432801561520454", "5555555555554444", "4432-8015-6152-0454"]),
    "credit_card_expiration_year": st.integers(2030, 2040), "credit_card_expiration_month": st.integers(1, 12),
    "email": st.just("someone@example.com"), "user_id": st.sampled_from(["fuzz-user-1", "fuzz-user-2"]),
    "id": st.sampled_from(PRODUCT_IDS), "product_id": st.sampled_from(PRODUCT_IDS),
    "product_ids": st.sampled_from(PRODUCT_IDS), "units": st.integers(0, 1000),
    "nanos": st.integers(0, 999_999_999), "quantity": st.integers(1, 10),
}


def integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([v for v in INTEGERS if lo <= v <= hi]), st.integers(lo, hi))


def scalar(field: FieldDescriptor, sane: bool) -> st.SearchStrategy:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, sane)
    if sane and field.name in HINTS:
        return HINTS[field.name]
    return anything(field)


def anything(field: FieldDescriptor) -> st.SearchStrategy:
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(STRINGS), st.text(max_size=40))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if field.type == FieldDescriptor.TYPE_DOUBLE
                         else 32)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if field.type in BOUNDS:
        return integers(*BOUNDS[field.type])
    raise AssertionError(f"no strategy for {field.full_name} (type {field.type})")


@functools.cache
def message(desc: Descriptor, sane: bool) -> st.SearchStrategy:
    """A random message of type `desc`. Chaos (sane=False): every field may be absent (a
    sub-message missing), every value random. Sane: every field present, named fields drawn
    from HINTS, repeated fields non-empty; the rest still random."""
    cls = message_factory.GetMessageClass(desc)
    fields = {f.name: st.lists(scalar(f, sane), min_size=int(sane), max_size=4) if f.is_repeated
              else scalar(f, sane) for f in desc.fields}
    if sane:
        return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


def requests(desc: Descriptor) -> st.SearchStrategy:
    return st.one_of(message(desc, False), message(desc, True))


RPCS = [(svc.full_name, m) for svc in pb.DESCRIPTOR.services_by_name.values() for m in svc.methods]


@pytest.fixture(scope="module")
def channels(all_services):
    by_grpc = {s.grpc_service: s.name for s in catalog_mod.default().grpc_services()}
    chans = {name: grpc.insecure_channel(svc.address) for name, svc in all_services.items()}
    yield {grpc_service: chans[name] for grpc_service, name in by_grpc.items() if name in chans}, chans
    for ch in chans.values():
        ch.close()


def check_outcome(method: MethodDescriptor, code: grpc.StatusCode, details: str, request) -> None:
    where = f"/{method.containing_service.full_name}/{method.name}"
    if method.containing_service.name == "CheckoutService" and code in CHECKOUT_MESSAGES:
        assert details.startswith(CHECKOUT_MESSAGES[code]), f"{where} -> {code.name} {details!r} for {request!r}"
        return
    if where == "/hipstershop.CartService/AddItem" and code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert "a cart holds at most" in details, f"{where} -> {details!r}"  # the cart's caps (issue 15)
        return
    assert code in OK_CODES, f"{where} -> {code.name} {details!r} for {request!r}"


@pytest.mark.parametrize(("service", "method"), RPCS, ids=[f"{s.split('.')[1]}.{m.name}" for s, m in RPCS])
def test_random_requests_never_break_a_service(channels, service: str, method: MethodDescriptor) -> None:
    by_service, all_channels = channels
    assert service in by_service, f"{service} has no running service: is it in the catalog?"
    req_cls = message_factory.GetMessageClass(method.input_type)
    resp_cls = message_factory.GetMessageClass(method.output_type)
    call = by_service[service].unary_unary(f"/{service}/{method.name}", request_serializer=req_cls.SerializeToString,
                                           response_deserializer=resp_cls.FromString)
    examples = EXAMPLES * 3 if method.name == "PlaceOrder" else EXAMPLES
    seen: set[str] = set()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(request=requests(method.input_type))
    def fuzz(request) -> None:
        try:
            response = call(request, timeout=10)
            assert isinstance(response, resp_cls)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        seen.add(code.name)
        if method.name == "PlaceOrder" and code is grpc.StatusCode.OK:
            assert response.order.order_id
        check_outcome(method, code, details, request)

    fuzz()
    assert seen, "no request was sent"
    for name, ch in all_channels.items():
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, f"{name} is not SERVING after fuzzing {method.name}"


def test_every_rpc_of_the_proto_is_fuzzed() -> None:
    names = {f"{s}/{m.name}" for s, m in RPCS}
    for svc in catalog_mod.default().grpc_services():
        for m in svc.methods:
            assert f"{svc.grpc_service}/{m.name}" in names
    assert len(RPCS) >= 15
