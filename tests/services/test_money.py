"""Money arithmetic (contract section 2.12): Go's money.Sum / MultiplySlow and renderMoney."""

from __future__ import annotations

import pytest

from boutique import money
from boutique.proto import demo_pb2 as pb


def m(units: int, nanos: int, code: str = "USD") -> pb.Money:
    return pb.Money(currency_code=code, units=units, nanos=nanos)


def parts(x: pb.Money) -> tuple[str, int, int]:
    return x.currency_code, x.units, x.nanos


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ((0, 0), (0, 0), (0, 0)),
        ((1, 500_000_000), (1, 600_000_000), (3, 100_000_000)),  # nanos carry into units
        ((-1, -500_000_000), (-1, -600_000_000), (-3, -100_000_000)),  # negative carry (truncating)
        ((1, 999_999_999), (0, 1), (2, 0)),
        ((5, 0), (0, -500_000_000), (4, 500_000_000)),  # borrow: units > 0
        ((-5, 0), (0, 500_000_000), (-4, -500_000_000)),  # borrow: units < 0
        ((2, 100_000_000), (-1, -900_000_000), (0, 200_000_000)),
        ((10, 0), (-10, 0), (0, 0)),
        # units sum to 0: Go's code borrows here and returns an invalid value; we carry (see money.add)
        ((0, 300_000_000), (0, -500_000_000), (0, -200_000_000)),
        ((0, 300_000_000), (0, 200_000_000), (0, 500_000_000)),
        ((1, 300_000_000), (-1, -500_000_000), (0, -200_000_000)),
        ((0, 600_000_000), (0, 600_000_000), (1, 200_000_000)),  # same as Go
        ((0, -600_000_000), (0, -600_000_000), (-1, -200_000_000)),
        ((19, 990_000_000), (8, 990_000_000), (28, 980_000_000)),
    ],
)
def test_sum(left, right, expected):
    result = money.add(m(*left), m(*right))
    assert parts(result) == ("USD", *expected)
    assert money.is_valid(result)


def test_sum_is_symmetric_in_value_and_keeps_left_code():
    assert parts(money.add(m(1, 0, "EUR"), m(2, 0, "EUR"))) == ("EUR", 3, 0)
    assert parts(money.add(m(1, 0, ""), m(2, 0, ""))) == ("", 3, 0)  # both empty is allowed


def test_sum_mismatching_currency():
    with pytest.raises(money.MoneyError, match=r"^mismatching currency codes$"):
        money.add(m(1, 0, "USD"), m(1, 0, "EUR"))


@pytest.mark.parametrize("bad", [m(1, -1), m(-1, 1), m(0, 1_000_000_000), m(0, -1_000_000_000)])
def test_sum_invalid(bad):
    assert not money.is_valid(bad)
    with pytest.raises(money.MoneyError, match=r"^one of the specified money values is invalid$"):
        money.add(bad, m(1, 0))
    with pytest.raises(money.MoneyError, match="invalid"):
        money.add(m(1, 0), bad)


@pytest.mark.parametrize("good", [m(0, 0), m(1, 1), m(-1, -1), m(0, 999_999_999), m(0, -999_999_999), m(5, 0)])
def test_is_valid(good):
    assert money.is_valid(good)


def test_multiply_slow():
    assert parts(money.multiply(m(8, 990_000_000), 3)) == ("USD", 26, 970_000_000)
    assert parts(money.multiply(m(19, 990_000_000), 10)) == ("USD", 199, 900_000_000)
    assert parts(money.multiply(m(-1, -600_000_000), 2)) == ("USD", -3, -200_000_000)
    assert parts(money.multiply(m(5, 490_000_000), 1)) == ("USD", 5, 490_000_000)
    assert parts(money.multiply(m(5, 490_000_000), 0)) == ("USD", 5, 490_000_000)  # k=0 returns m


def test_zero():
    assert parts(money.zero("JPY")) == ("JPY", 0, 0)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (m(17, 682_441_398, "EUR"), "€17.68"),
        (m(2235, 60_592_707, "JPY"), "¥2235.06"),
        (m(8, 990_000_000, "USD"), "$8.99"),
        (m(26, 749_997_346, "CAD"), "$26.74"),  # truncated, not rounded
        (m(15, 201_594_869, "GBP"), "£15.20"),
        (m(108, 299_648_830, "TRY"), "₺108.29"),
        (m(264, 84_507_042, "CHF"), "$264.08"),  # unknown symbol -> $
        (m(0, 0, "USD"), "$0.00"),
    ],
)
def test_render(amount, text):
    assert money.render(amount) == text
