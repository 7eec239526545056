"""Money arithmetic of the contract (section 2.12): Go's money package semantics.

Division and remainder are Go's truncating ones, not Python's flooring // and %.
"""

from __future__ import annotations

from boutique.proto import demo_pb2 as pb

NANOS_PER_UNIT = 1_000_000_000
NANOS_MAX = 999_999_999
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

CURRENCY_SYMBOLS = {"USD": "$", "CAD": "$", "JPY": "¥", "EUR": "€", "TRY": "₺", "GBP": "£"}


class MoneyError(ValueError):
    """Invalid money value or mismatching currencies."""


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def is_valid(m: pb.Money) -> bool:
    signs_match = m.nanos == 0 or m.units == 0 or _sign(m.nanos) == _sign(m.units)
    return signs_match and -NANOS_MAX <= m.nanos <= NANOS_MAX


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _trunc_rem(a: int, b: int) -> int:
    return a - b * _trunc_div(a, b)


def add(left: pb.Money, right: pb.Money) -> pb.Money:
    """Sum of two amounts of the same currency (Go money.Sum)."""
    if not is_valid(left) or not is_valid(right):
        raise MoneyError("one of the specified money values is invalid")
    if left.currency_code != right.currency_code:
        raise MoneyError("mismatching currency codes")
    units = left.units + right.units
    nanos = left.nanos + right.nanos
    # Deliberate fix: Go tests `(u == 0 && n == 0) || (u > 0 && n >= 0) || (u < 0 && n <= 0)`, so a
    # sum whose units are 0 but nanos are not (0.3 + 0.2, 1.3 + -1.5) takes its borrow branch and
    # comes out invalid ({1, -500000000}). Here units == 0 carries like matching signs, which
    # gives the same result as Go wherever Go's result is valid.
    if (units == 0 or nanos == 0) or _sign(units) == _sign(nanos):
        units += _trunc_div(nanos, NANOS_PER_UNIT)
        nanos = _trunc_rem(nanos, NANOS_PER_UNIT)
    elif units > 0:
        units -= 1
        nanos += NANOS_PER_UNIT
    else:
        units += 1
        nanos -= NANOS_PER_UNIT
    return pb.Money(currency_code=left.currency_code, units=units, nanos=nanos)


def multiply(m: pb.Money, k: int) -> pb.Money:
    """Go MultiplySlow(m, k) (k-1 repeated Sums; k=0 returns m) in constant time.

    For a valid Money every partial sum has the sign of m, so each Sum takes the
    "signs agree" branch and the k-fold sum is simply the exact total, normalised with
    truncating division: that is what is computed here. Invalid input fails like Sum.
    """
    if k < 0:
        raise MoneyError(f"cannot multiply money by a negative quantity {k}")
    if k <= 1:
        return pb.Money(currency_code=m.currency_code, units=m.units, nanos=m.nanos)
    if not is_valid(m):
        raise MoneyError("one of the specified money values is invalid")
    total = (m.units * NANOS_PER_UNIT + m.nanos) * k
    units = abs(total) // NANOS_PER_UNIT
    nanos = abs(total) - units * NANOS_PER_UNIT
    if total < 0:
        units, nanos = -units, -nanos
    if not INT64_MIN <= units <= INT64_MAX:
        raise MoneyError(f"{m.currency_code} amount x {k} is out of the int64 range")
    return pb.Money(currency_code=m.currency_code, units=units, nanos=nanos)


def multiply_slow(m: pb.Money, k: int) -> pb.Money:
    """The literal Go MultiplySlow: m added to itself k-1 times (k=0 returns m).

    Kept as the reference `multiply` is proven equal to (tests/services/test_checkout.py).
    """
    out = pb.Money(currency_code=m.currency_code, units=m.units, nanos=m.nanos)
    for _ in range(max(k, 1) - 1):
        out = add(out, m)
    return out


def zero(currency_code: str) -> pb.Money:
    return pb.Money(currency_code=currency_code, units=0, nanos=0)


def render(m: pb.Money) -> str:
    """The frontend's renderMoney: symbol, units, '.', cents truncated (%02d)."""
    symbol = CURRENCY_SYMBOLS.get(m.currency_code, "$")
    return f"{symbol}{m.units}.{_trunc_div(m.nanos, 10_000_000):02d}"
