"""paymentservice: validates the card and hands back a transaction id (contract section 2.4).

Charge runs the original's checks in its order:
  1. card type by prefix (the first matching rule of CARD_TYPES), then the Luhn
     check and the length of that type, after stripping spaces and dashes;
  2. only `visa` and `mastercard` are accepted;
  3. the card must not have expired (local time; the current month is fine);
then logs the charge (card type and last four digits only, never the number)
and returns a uuid4 transaction id. Nothing is actually charged.

Status codes: the original sends its three business errors with the
non-standard grpc-status 400. grpcio cannot emit a status outside the
standard codes, so we send INVALID_ARGUMENT with the exact same message text
(the only thing checkout passes on). Where the original crashes with UNKNOWN
(no card, an empty number, no amount) we answer INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.server import ServiceContext, ServiceDefinition

ACCEPTED_TYPES = ("visa", "mastercard")


def _bin_ranges(*ranges: tuple[int, int]) -> str:
    """A regex alternative for inclusive ranges of equally long card prefixes."""
    return "|".join(str(n) for lo, hi in ranges for n in range(lo, hi + 1))


@dataclass(frozen=True)
class CardType:
    name: str
    prefix: re.Pattern[str]
    lengths: tuple[int, ...]


# The card types of simple-card-validator 1.1.0 in its matching order: the
# first prefix that matches decides the type; the length must then fit it.
# Visa and Mastercard are 16 digits only; the Mastercard 2-series is unknown.
# The maestro and rupay prefix lists follow the contract's table as far as it
# spells them out (rupay: the published RuPay BIN ranges). They only decide
# which rejection text a non-Visa/Mastercard number gets.
CARD_TYPES: tuple[CardType, ...] = (
    CardType("amex", re.compile(r"^3[47]"), (15,)),
    CardType("diners_club_carte_blanche", re.compile(r"^30[0-5]"), (14,)),
    CardType("diners_club_international", re.compile(r"^3(?:[689]|09)"), (14,)),
    CardType("jcb", re.compile(r"^35(?:2[89]|[3-8]\d)"), (16,)),
    CardType("laser", re.compile(r"^(?:6304|670[69]|6771)"), (16, 17, 18, 19)),
    CardType("visa_electron", re.compile(r"^(?:4026|417500|4508|4844|491[37])"), (16,)),
    CardType("visa", re.compile(r"^4"), (16,)),
    CardType("mastercard", re.compile(r"^5[1-5]"), (16,)),
    CardType(
        "maestro",
        re.compile(r"^(?:5018|5020|5038|5044|5081|6304|6759|676[1-3]|6220|603845|504834|504817|504645)"),
        tuple(range(12, 20)),
    ),
    CardType(
        "rupay",
        re.compile("^(?:" + _bin_ranges((508500, 508999), (606985, 607984), (608001, 608500), (652150, 653149))
                   + ")"),
        (16,),
    ),
    CardType(
        "discover",
        re.compile(r"^(?:6011|" + _bin_ranges((622126, 622925)) + r"|64[4-9]|65)"),
        (16,),
    ),
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum; anything but ASCII digits fails."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class CardCheck:
    card_type: str  # "" when no rule matched
    valid: bool


def check_card(number: str) -> CardCheck:
    """Type, Luhn and length of a card number (spaces and dashes are ignored)."""
    digits = number.replace(" ", "").replace("-", "")
    for card_type in CARD_TYPES:
        if card_type.prefix.match(digits):
            valid = luhn_ok(digits) and len(digits) in card_type.lengths
            return CardCheck(card_type.name, valid)
    return CardCheck("", False)


def last_four(number: str) -> str:
    """The original's `<last4>`: the number with only its FIRST '-' removed, last 4 characters."""
    return number.replace("-", "", 1)[-4:]


def charge_error(card: pb.CreditCardInfo, now: time.struct_time | None = None) -> str | None:
    """The business error for `card` (exact contract text), or None when it is accepted."""
    number = card.credit_card_number
    check = check_card(number)
    if not check.valid:
        return "Credit card info is invalid"
    if check.card_type not in ACCEPTED_TYPES:
        return f"Sorry, we cannot process {check.card_type} credit cards. Only VISA or MasterCard is accepted."
    now = now or time.localtime()
    year, month = card.credit_card_expiration_year, card.credit_card_expiration_month
    if now.tm_year * 12 + now.tm_mon > year * 12 + month:
        return f"Your credit card (ending {last_four(number)}) expired on {month}/{year}"
    return None


class PaymentService(rpc.PaymentServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.log = ctx.log

    async def Charge(self, request: pb.ChargeRequest, context: grpc.aio.ServicerContext):
        if not request.HasField("credit_card"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "credit_card: the card details are missing")
        card = request.credit_card
        if not card.credit_card_number.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "credit_card.credit_card_number: the number is empty")
        if not request.HasField("amount"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount: the amount to charge is missing")
        error = charge_error(card)
        if error:
            # The original's grpc-status is 400, which grpcio cannot send: INVALID_ARGUMENT, same text.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        transaction_id = str(uuid.uuid4())
        amount = request.amount
        digits = card.credit_card_number.replace(" ", "").replace("-", "")
        card_type = check_card(card.credit_card_number).card_type
        self.log.info(
            "charged %s card ending %s: %s %d.%09d", card_type, digits[-4:],
            amount.currency_code, amount.units, abs(amount.nanos),
            extra=logs.fields(transaction_id=transaction_id, card_type=card_type, card_last4=digits[-4:],
                              currency_code=amount.currency_code, units=amount.units, nanos=amount.nanos),
        )
        return pb.ChargeResponse(transaction_id=transaction_id)


DEFINITION = ServiceDefinition(
    name="paymentservice",
    grpc_service="hipstershop.PaymentService",
    default_port=50051,
    add_servicer=rpc.add_PaymentServiceServicer_to_server,
    create=PaymentService,
)
