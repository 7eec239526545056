"""paymentservice over real gRPC: the contract's card rules and messages (section 2.4)."""

from __future__ import annotations

import logging
import time
import uuid

import grpc
import pytest

from boutique import payment
from boutique.dev.inprocess import BackgroundService
from boutique.payment import DEFINITION
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

FUTURE_YEAR = time.localtime().tm_year + 3


@pytest.fixture(scope="module")
def stub():
    with BackgroundService(DEFINITION) as svc, grpc.insecure_channel(svc.address) as channel:
        yield rpc.PaymentServiceStub(channel)


def charge(stub, number: str, year: int = FUTURE_YEAR, month: int = 1, amount: bool = True):
    req = pb.ChargeRequest(credit_card=pb.CreditCardInfo(
        credit_card_number=number, credit_card_cvv=672,
        credit_card_expiration_year=year, credit_card_expiration_month=month))
    if amount:
        req.amount.CopyFrom(pb.Money(currency_code="USD", units=28, nanos=980_000_000))
    return stub.Charge(req, timeout=5)


def rejected(stub, number: str, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        charge(stub, number, **kw)
    return err.value


@pytest.mark.parametrize("number", ["4432801561520454", "4432-8015-6152-0454", "5555555555554444",
                                    "4432 8015 6152 0454", "5105105105105100"])
def test_accepted_cards(stub, number):
    tid = charge(stub, number).transaction_id
    assert uuid.UUID(tid).version == 4


def test_transaction_ids_differ(stub):
    assert charge(stub, "4432801561520454").transaction_id != charge(stub, "4432801561520454").transaction_id


@pytest.mark.parametrize("number", ["4222222222222", "4111111111111111110", "2223003122003222",
                                    "4432801561520455", "4432x801561520454", "1234"])
def test_invalid_cards(stub, number):
    err = rejected(stub, number)
    # the original's grpc-status is 400, which grpcio cannot send
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Credit card info is invalid"


@pytest.mark.parametrize(("number", "card_type"), [("378282246310005", "amex"),
                                                   ("4026000000000002", "visa_electron"),
                                                   ("6011111111111117", "discover"),
                                                   ("3530111333300000", "jcb"),
                                                   ("30569309025904", "diners_club_carte_blanche")])
def test_unsupported_card_types(stub, number, card_type):
    err = rejected(stub, number)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"Sorry, we cannot process {card_type} credit cards. Only VISA or MasterCard is accepted."


def _this_and_last_month() -> tuple[tuple[int, int], tuple[int, int]]:
    now = time.localtime()
    last = (now.tm_year, now.tm_mon - 1) if now.tm_mon > 1 else (now.tm_year - 1, 12)
    return (now.tm_year, now.tm_mon), last


def test_card_expiring_this_month_is_accepted(stub):
    (year, month), _ = _this_and_last_month()
    assert charge(stub, "4432801561520454", year=year, month=month).transaction_id


def test_card_expired_last_month(stub):
    _, (year, month) = _this_and_last_month()
    err = rejected(stub, "4432-8015-6152-0454", year=year, month=month)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == f"Your credit card (ending 0454) expired on {month}/{year}"


def test_expired_last4_drops_only_the_first_dash(stub):
    err = rejected(stub, "4432-8015-6152-04-54", year=2020, month=3)
    assert err.details() == "Your credit card (ending 4-54) expired on 3/2020"


def test_expiry_boundaries_and_unpadded_month():
    jan_2026 = time.strptime("2026-01-15", "%Y-%m-%d")
    card = pb.CreditCardInfo(credit_card_number="5555555555554444")
    card.credit_card_expiration_year, card.credit_card_expiration_month = 2026, 1
    assert payment.charge_error(card, jan_2026) is None
    card.credit_card_expiration_year, card.credit_card_expiration_month = 2025, 12
    assert payment.charge_error(card, jan_2026) == "Your credit card (ending 4444) expired on 12/2025"
    card.credit_card_expiration_year, card.credit_card_expiration_month = 2026, 0
    assert payment.charge_error(card, jan_2026) == "Your credit card (ending 4444) expired on 0/2026"


def test_card_type_order_and_luhn():
    assert payment.check_card("4026000000000002").card_type == "visa_electron"  # before visa
    assert payment.check_card("6304000000000000").card_type == "laser"  # before maestro
    assert payment.check_card("5555555555554444") == payment.CardCheck("mastercard", True)
    assert payment.check_card("2221000000000009") == payment.CardCheck("", False)  # 2-series unknown
    assert payment.luhn_ok("79927398713") and not payment.luhn_ok("79927398710")
    assert not payment.luhn_ok("") and not payment.luhn_ok("٤٤")  # non-ASCII digits fail


def test_missing_card(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Charge(pb.ChargeRequest(amount=pb.Money(currency_code="USD", units=1)), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("credit_card:")


@pytest.mark.parametrize("number", ["", "   "])
def test_empty_number(stub, number):
    err = rejected(stub, number)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("credit_card.credit_card_number:")


def test_missing_amount(stub):
    err = rejected(stub, "4432801561520454", amount=False)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("amount:")


def test_log_names_last_four_only(stub, caplog):
    caplog.set_level(logging.INFO, logger="paymentservice")
    tid = charge(stub, "4432-8015-6152-0454").transaction_id
    charged = [r for r in caplog.records if r.name == "paymentservice" and "charged" in r.getMessage()]
    assert charged, "the charge was not logged"
    assert charged[-1].fields["transaction_id"] == tid
    assert charged[-1].fields["card_last4"] == "0454"
    assert "4432801561520454" not in caplog.text and "4432-8015" not in caplog.text
