"""Form validation rules of the frontend (contract 3.3) and the load generator's card numbers."""

from __future__ import annotations

import random

import pytest

from boutique.frontend import validation as v
from boutique.loadgen import cards

GOOD = {
    "email": "someone@example.com", "street_address": "1600 Amphitheatre Parkway", "zip_code": "94043",
    "city": "Mountain View", "state": "CA", "country": "United States",
    "credit_card_number": "4432801561520454", "credit_card_expiration_month": "1",
    "credit_card_expiration_year": "2030", "credit_card_cvv": "672",
}


def test_the_ui_defaults_pass() -> None:
    order = v.checkout(GOOD)
    assert order.zip_code == 94043 and order.credit_card_number == "4432801561520454"
    assert order.credit_card_expiration_month == 1 and order.credit_card_cvv == 672


@pytest.mark.parametrize(("field", "value"), [
    ("email", ""), ("email", "test@example"), ("email", "not-an-email"), ("email", "a@b.c om"),
    ("street_address", ""), ("street_address", "x" * 513),
    ("zip_code", ""), ("zip_code", "0"), ("zip_code", "abc"), ("zip_code", "1 2"), ("zip_code", "99999999999"),
    ("city", ""), ("city", "c" * 129), ("state", ""), ("country", "  "),
    ("credit_card_number", ""), ("credit_card_number", "4432801561520455"),  # Luhn fails
    ("credit_card_number", "4432 80 1561520454"),  # a group shorter than 3
    ("credit_card_number", "44328015615"),  # 11 digits
    ("credit_card_number", "4432-8015-6152-0454"),  # dashes are not digits for this rule
    ("credit_card_expiration_month", "0"), ("credit_card_expiration_month", "13"),
    ("credit_card_expiration_month", "x"),
    ("credit_card_expiration_year", "0"), ("credit_card_expiration_year", ""),
    ("credit_card_cvv", "0"), ("credit_card_cvv", "abc"),
])
def test_each_bad_checkout_field_is_reported_by_name(field: str, value: str) -> None:
    with pytest.raises(v.ValidationFailed) as err:
        v.checkout({**GOOD, field: value})
    assert list(err.value.errors) == [field]
    assert err.value.errors[field]


def test_card_numbers_in_groups_of_digits_pass() -> None:
    assert v.card_problem("4432 8015 6152 0454") is None
    assert v.card_problem("5555555555554444") is None


def test_several_bad_fields_are_all_reported() -> None:
    with pytest.raises(v.ValidationFailed) as err:
        v.checkout({**GOOD, "email": "x", "zip_code": "0", "credit_card_cvv": ""})
    assert set(err.value.errors) == {"email", "zip_code", "credit_card_cvv"}


@pytest.mark.parametrize(("form", "bad"), [
    ({"product_id": "X", "quantity": "0"}, "quantity"),
    ({"product_id": "X", "quantity": "11"}, "quantity"),
    ({"product_id": "X", "quantity": "-1"}, "quantity"),
    ({"product_id": "X", "quantity": "two"}, "quantity"),
    ({"product_id": "", "quantity": "1"}, "product_id"),
])
def test_add_to_cart_rules(form: dict[str, str], bad: str) -> None:
    with pytest.raises(v.ValidationFailed) as err:
        v.add_to_cart(form)
    assert bad in err.value.errors
    assert v.add_to_cart({"product_id": "OLJCESPC7Z", "quantity": "10"}).quantity == 10


def test_set_currency_accepts_any_iso4217_code_only() -> None:
    assert v.set_currency({"currency_code": "EUR"}) == "EUR"
    assert v.set_currency({"currency_code": "AUD"}) == "AUD"  # not shown in the selector, still ISO 4217
    for bad in ("", "eur", "XYZ", "EURO"):
        with pytest.raises(v.ValidationFailed) as err:
            v.set_currency({"currency_code": bad})
        assert "currency_code" in err.value.errors


def _payment_accepts(number: str) -> bool:
    """The payment service's rule (contract 2.4): 16-digit VISA that is not visa_electron, or MasterCard 51-55."""
    if len(number) != 16 or not cards.luhn_valid(number):
        return False
    if number.startswith(cards.VISA_ELECTRON_PREFIXES):
        return False
    return number.startswith("4") or number[:2] in {"51", "52", "53", "54", "55"}


def test_generated_cards_are_accepted_by_payment_and_pass_frontend_validation() -> None:
    rng = random.Random(7)
    numbers = [cards.card(rng) for _ in range(3000)]
    assert all(_payment_accepts(n) for n in numbers)
    assert all(v.card_problem(n) is None for n in numbers)
    assert any(n.startswith("5") for n in numbers) and any(n.startswith("4") for n in numbers)


def test_luhn_matches_known_numbers() -> None:
    assert cards.luhn_valid("4432801561520454") and cards.luhn_valid("5555555555554444")
    assert not cards.luhn_valid("4432801561520455")
    assert v.luhn_ok("4432801561520454") and not v.luhn_ok("4432801561520455")
