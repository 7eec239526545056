"""currencyservice over real gRPC: every test vector of the contract (section 2.3)."""

from __future__ import annotations

import grpc
import pytest

from boutique.currency import DEFINITION
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

CODES = ["EUR", "USD", "JPY", "BGN", "CZK", "DKK", "GBP", "HUF", "PLN", "RON", "SEK", "CHF", "ISK", "NOK", "HRK",
         "RUB", "TRY", "AUD", "BRL", "CAD", "CNY", "HKD", "IDR", "ILS", "INR", "KRW", "MXN", "MYR", "NZD", "PHP",
         "SGD", "THB", "ZAR"]

COLUMNS = ("EUR", "USD", "JPY", "GBP", "TRY", "CAD")
# USD amount -> the live service's answers for COLUMNS, in units.nanos form.
VECTORS = {
    "19.99": ("17.682441398", "19.990000000", "2235.060592707", "15.201594869", "108.299648830", "26.749997346"),
    "18.99": ("16.797877046", "18.990000000", "2123.251658614", "14.441134896", "102.881957543", "25.411828395"),
    "109.99": ("97.293233083", "109.990000000", "12297.864661691", "83.642992481", "595.891864663",
               "147.185203007"),
    "89.99": ("79.601946042", "89.990000000", "10061.685979708", "68.433793012", "487.538038923", "120.421823972"),
    "24.99": ("22.105263158", "24.990000000", "2794.105263171", "19.003894736", "135.388105263", "33.440842105"),
    "18.49": ("16.355594870", "18.490000000", "2067.347191568", "14.060904909", "100.173111900", "24.742743919"),
    "5.49": ("4.856258293", "5.490000000", "613.831048235", "4.174925254", "29.743125167", "7.346547545"),
    "8.99": ("7.952233525", "8.990000000", "1005.162317560", "6.836535161", "48.705044670", "12.030138876"),
}


def money(code: str, text: str) -> pb.Money:
    units, _, frac = text.partition(".")
    return pb.Money(currency_code=code, units=int(units), nanos=int(frac.ljust(9, "0")) if frac else 0)


@pytest.fixture(scope="module")
def stub():
    with BackgroundService(DEFINITION) as svc, grpc.insecure_channel(svc.address) as channel:
        yield rpc.CurrencyServiceStub(channel)


def convert(stub, source: pb.Money, to: str) -> pb.Money:
    req = pb.CurrencyConversionRequest(to_code=to)
    getattr(req, "from").CopyFrom(source)
    return stub.Convert(req, timeout=5)


def test_supported_currencies_in_file_order(stub):
    codes = list(stub.GetSupportedCurrencies(pb.Empty(), timeout=5).currency_codes)
    assert len(codes) == 33
    assert codes == CODES


@pytest.mark.parametrize("usd", list(VECTORS))
@pytest.mark.parametrize("column", range(len(COLUMNS)))
def test_contract_vectors(stub, usd, column):
    to = COLUMNS[column]
    got = convert(stub, money("USD", usd), to)
    want = money(to, VECTORS[usd][column])
    assert (got.currency_code, got.units, got.nanos) == (to, want.units, want.nanos)


def test_chf_to_eur(stub):
    got = convert(stub, money("CHF", "300"), "EUR")
    assert (got.currency_code, got.units, got.nanos) == ("EUR", 264, 84_507_042)


def test_negative_is_not_normalised(stub):
    got = convert(stub, pb.Money(currency_code="EUR", units=0, nanos=-1), "USD")
    assert (got.currency_code, got.units, got.nanos) == ("USD", -3, -130_500_002)


def test_same_currency_round_trip(stub):
    got = convert(stub, money("EUR", "17.5"), "EUR")
    assert (got.units, got.nanos) == (17, 500_000_000)


@pytest.mark.parametrize(("source", "to", "field"), [("XXX", "USD", "from.currency_code"),
                                                     ("USD", "ABC", "to_code"), ("USD", "", "to_code"),
                                                     ("usd", "EUR", "from.currency_code")])
def test_unknown_code_is_invalid_argument(stub, source, to, field):
    with pytest.raises(grpc.RpcError) as err:
        convert(stub, money(source, "1"), to)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}: unsupported currency code")


def test_missing_from_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Convert(pb.CurrencyConversionRequest(to_code="USD"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from" in err.value.details()
