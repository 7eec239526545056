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
(no card, an empty number, no amount) we answer INVALID_ARGUMENT naming the field, and so
for a month outside 1..12, a negative or oversized amount or nanos out of range.

Idempotency (not in the original; the wire contract is unchanged): a Charge carrying the gRPC
metadata `idempotency-key` is remembered for IDEMPOTENCY_WINDOW seconds; the same key again
answers the first transaction id without charging (a different amount is ALREADY_EXISTS).
Checkout sends the key the frontend's checkout form carries, so a form submitted twice, or
retried after checkout crashed between Charge and its reply, charges once. The records live
in this process: a restart of payment within the window forgets them.
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
MAX_CHARGE_UNITS = 10**13  # more than any cart can cost in any supported currency
IDEMPOTENCY_METADATA = "idempotency-key"  # gRPC metadata: the same key never charges twice
IDEMPOTENCY_WINDOW = 600.0  # seconds a charge is remembered by its key
MAX_RECORDS = 100_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")


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


def request_problem(request: pb.ChargeRequest) -> str:
    """What is wrong with the request's shape, naming the field ("" when nothing is)."""
    if not request.HasField("credit_card"):
        return "credit_card: the card details are missing"
    card = request.credit_card
    if not card.credit_card_number.strip():
        return "credit_card.credit_card_number: the number is empty"
    if len(card.credit_card_number) > 64:
        return "credit_card.credit_card_number: longer than 64 characters"
    if not 1 <= card.credit_card_expiration_month <= 12:
        return f"credit_card.credit_card_expiration_month: must be 1 to 12, got {card.credit_card_expiration_month}"
    if not 1 <= card.credit_card_expiration_year <= 9999:
        return f"credit_card.credit_card_expiration_year: must be 1 to 9999, got {card.credit_card_expiration_year}"
    if not request.HasField("amount"):
        return "amount: the amount to charge is missing"
    amount = request.amount
    if not _CURRENCY.match(amount.currency_code):
        return f"amount.currency_code: must be a three-letter ISO 4217 code, got {amount.currency_code[:16]!r}"
    if not -999_999_999 <= amount.nanos <= 999_999_999:
        return f"amount.nanos: must be between -999999999 and 999999999, got {amount.nanos}"
    if amount.units < 0 or amount.nanos < 0:
        return f"amount: must not be negative, got units={amount.units} nanos={amount.nanos}"
    if amount.units > MAX_CHARGE_UNITS:
        return f"amount.units: at most {MAX_CHARGE_UNITS} can be charged at once, got {amount.units}"
    return ""


@dataclass(frozen=True)
class _Charged:
    transaction_id: str
    amount: tuple[str, int, int]
    expires: float


class ChargeRecords:
    """Charges by idempotency key for IDEMPOTENCY_WINDOW seconds (at most MAX_RECORDS), so a
    Charge repeated with the same key (a checkout retried after a crash) answers the first
    charge's transaction id instead of charging again. In memory: a restart of payment forgets."""

    def __init__(self, window: float = IDEMPOTENCY_WINDOW, limit: int = MAX_RECORDS) -> None:
        self.window, self.limit = window, limit
        self._by_key: dict[str, _Charged] = {}

    def get(self, key: str) -> _Charged | None:
        found = self._by_key.get(key)
        if found is not None and found.expires < time.monotonic():
            del self._by_key[key]
            return None
        return found

    def put(self, key: str, transaction_id: str, amount: tuple[str, int, int]) -> None:
        now = time.monotonic()
        if len(self._by_key) >= self.limit:
            self._by_key = {k: v for k, v in self._by_key.items() if v.expires >= now}
            while len(self._by_key) >= self.limit:  # still full of live records: drop the oldest
                del self._by_key[next(iter(self._by_key))]
        self._by_key[key] = _Charged(transaction_id, amount, now + self.window)


def idempotency_key(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_METADATA:
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


class PaymentService(rpc.PaymentServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.log = ctx.log
        self.records = ChargeRecords()

    async def Charge(self, request: pb.ChargeRequest, context: grpc.aio.ServicerContext):
        problem = request_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        card = request.credit_card
        key = idempotency_key(context)
        if len(key) > 200:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{IDEMPOTENCY_METADATA} (metadata): longer than 200 characters")
        error = charge_error(card)
        if error:
            # The original's grpc-status is 400, which grpcio cannot send: INVALID_ARGUMENT, same text.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        amount = request.amount
        money_key = (amount.currency_code, amount.units, amount.nanos)
        digits = card.credit_card_number.replace(" ", "").replace("-", "")
        if key:
            # No await between this look-up and put(): two concurrent repeats cannot both charge.
            earlier = self.records.get(key)
            if earlier is not None:
                if earlier.amount != money_key:
                    await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                        f"{IDEMPOTENCY_METADATA}: already used for a charge of a different amount")
                self.log.info("repeated charge answered with the earlier transaction", extra=logs.fields(
                    transaction_id=earlier.transaction_id, idempotency_key=key, card_last4=digits[-4:]))
                return pb.ChargeResponse(transaction_id=earlier.transaction_id)
        transaction_id = str(uuid.uuid4())
        if key:
            self.records.put(key, transaction_id, money_key)
        card_type = check_card(card.credit_card_number).card_type
        self.log.info(
            "charged %s card ending %s: %s %d.%09d", card_type, digits[-4:],
            amount.currency_code, amount.units, abs(amount.nanos),
            extra=logs.fields(transaction_id=transaction_id, card_type=card_type, card_last4=digits[-4:],
                              currency_code=amount.currency_code, units=amount.units, nanos=amount.nanos,
                              idempotency_key=key or None),
        )
        return pb.ChargeResponse(transaction_id=transaction_id)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_PaymentServiceServicer_to_server,
                               create=PaymentService)
