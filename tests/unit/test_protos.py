"""The committed stubs match protos/demo.proto, and the proto holds the contract's
wire shape (section 1 of the contract): services, RPCs, messages, field numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from boutique.proto import demo_pb2

ROOT = Path(__file__).resolve().parents[2]

# (message, field number) -> (name, type, repeated); the contract's table 1.2.
S, I32, I64, MSG = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_INT32,
                    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_MESSAGE)
CONTRACT_FIELDS = {
    "CartItem": {1: ("product_id", S), 2: ("quantity", I32)},
    "AddItemRequest": {1: ("user_id", S), 2: ("item", MSG)},
    "EmptyCartRequest": {1: ("user_id", S)},
    "GetCartRequest": {1: ("user_id", S)},
    "Cart": {1: ("user_id", S), 2: ("items", MSG)},
    "Empty": {},
    "ListRecommendationsRequest": {1: ("user_id", S), 2: ("product_ids", S)},
    "ListRecommendationsResponse": {1: ("product_ids", S)},
    "Product": {1: ("id", S), 2: ("name", S), 3: ("description", S), 4: ("picture", S),
                5: ("price_usd", MSG), 6: ("categories", S)},
    "ListProductsResponse": {1: ("products", MSG)},
    "GetProductRequest": {1: ("id", S)},
    "SearchProductsRequest": {1: ("query", S)},
    "SearchProductsResponse": {1: ("results", MSG)},
    "GetQuoteRequest": {1: ("address", MSG), 2: ("items", MSG)},
    "GetQuoteResponse": {1: ("cost_usd", MSG)},
    "ShipOrderRequest": {1: ("address", MSG), 2: ("items", MSG)},
    "ShipOrderResponse": {1: ("tracking_id", S)},
    "Address": {1: ("street_address", S), 2: ("city", S), 3: ("state", S), 4: ("country", S), 5: ("zip_code", I32)},
    "Money": {1: ("currency_code", S), 2: ("units", I64), 3: ("nanos", I32)},
    "GetSupportedCurrenciesResponse": {1: ("currency_codes", S)},
    "CurrencyConversionRequest": {1: ("from", MSG), 2: ("to_code", S)},
    "CreditCardInfo": {1: ("credit_card_number", S), 2: ("credit_card_cvv", I32),
                       3: ("credit_card_expiration_year", I32), 4: ("credit_card_expiration_month", I32)},
    "ChargeRequest": {1: ("amount", MSG), 2: ("credit_card", MSG)},
    "ChargeResponse": {1: ("transaction_id", S)},
    "OrderItem": {1: ("item", MSG), 2: ("cost", MSG)},
    "OrderResult": {1: ("order_id", S), 2: ("shipping_tracking_id", S), 3: ("shipping_cost", MSG),
                    4: ("shipping_address", MSG), 5: ("items", MSG)},
    "SendOrderConfirmationRequest": {1: ("email", S), 2: ("order", MSG)},
    "PlaceOrderRequest": {1: ("user_id", S), 2: ("user_currency", S), 3: ("address", MSG), 5: ("email", S),
                          6: ("credit_card", MSG)},
    "PlaceOrderResponse": {1: ("order", MSG)},
    "AdRequest": {1: ("context_keys", S)},
    "AdResponse": {1: ("ads", MSG)},
    "Ad": {1: ("redirect_url", S), 2: ("text", S)},
}
REPEATED = {("Cart", "items"), ("ListRecommendationsRequest", "product_ids"), ("ListRecommendationsResponse",
            "product_ids"), ("Product", "categories"), ("ListProductsResponse", "products"),
            ("SearchProductsResponse", "results"), ("GetQuoteRequest", "items"), ("ShipOrderRequest", "items"),
            ("GetSupportedCurrenciesResponse", "currency_codes"), ("OrderResult", "items"),
            ("AdRequest", "context_keys"), ("AdResponse", "ads")}

CONTRACT_RPCS = {
    "CartService": {"AddItem": ("AddItemRequest", "Empty"), "GetCart": ("GetCartRequest", "Cart"),
                    "EmptyCart": ("EmptyCartRequest", "Empty")},
    "RecommendationService": {"ListRecommendations": ("ListRecommendationsRequest", "ListRecommendationsResponse")},
    "ProductCatalogService": {"ListProducts": ("Empty", "ListProductsResponse"),
                              "GetProduct": ("GetProductRequest", "Product"),
                              "SearchProducts": ("SearchProductsRequest", "SearchProductsResponse")},
    "ShippingService": {"GetQuote": ("GetQuoteRequest", "GetQuoteResponse"),
                        "ShipOrder": ("ShipOrderRequest", "ShipOrderResponse")},
    "CurrencyService": {"GetSupportedCurrencies": ("Empty", "GetSupportedCurrenciesResponse"),
                        "Convert": ("CurrencyConversionRequest", "Money")},
    "PaymentService": {"Charge": ("ChargeRequest", "ChargeResponse")},
    "EmailService": {"SendOrderConfirmation": ("SendOrderConfirmationRequest", "Empty")},
    "CheckoutService": {"PlaceOrder": ("PlaceOrderRequest", "PlaceOrderResponse")},
    "AdService": {"GetAds": ("AdRequest", "AdResponse")},
}


def test_committed_stubs_match_what_grpcio_tools_generates(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True)
    committed = ROOT / "services" / "boutique" / "proto"
    for name in ("demo_pb2.py", "demo_pb2_grpc.py", "demo_pb2.pyi"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run `make protos` and commit the result"
        )


def test_package_and_services_are_the_contracts() -> None:
    assert demo_pb2.DESCRIPTOR.package == "hipstershop"
    services = demo_pb2.DESCRIPTOR.services_by_name
    assert set(services) == set(CONTRACT_RPCS)
    for service, rpcs in CONTRACT_RPCS.items():
        methods = services[service].methods_by_name
        assert set(methods) == set(rpcs), service
        for rpc, (req, resp) in rpcs.items():
            assert methods[rpc].input_type.name == req, f"{service}.{rpc} request"
            assert methods[rpc].output_type.name == resp, f"{service}.{rpc} response"


def test_every_message_field_number_and_type_is_the_contracts() -> None:
    messages = demo_pb2.DESCRIPTOR.message_types_by_name
    assert set(messages) == set(CONTRACT_FIELDS)
    for message, fields in CONTRACT_FIELDS.items():
        actual = {f.number: f for f in messages[message].fields}
        assert set(actual) == set(fields), f"{message} field numbers"
        for number, (name, ftype) in fields.items():
            field = actual[number]
            assert field.name == name, f"{message}.{number}"
            assert field.type == ftype, f"{message}.{name} type"
            assert field.is_repeated == ((message, name) in REPEATED), f"{message}.{name} label"


def test_place_order_field_4_stays_reserved() -> None:
    place_order = demo_pb2.DESCRIPTOR.message_types_by_name["PlaceOrderRequest"]
    assert 4 not in place_order.fields_by_number
    assert "reserved 4;" in (ROOT / "protos" / "demo.proto").read_text()
