"""Form validation for the frontend's POST routes (contract section 3.3).

The rules follow the original's validator tags; the messages are ours and name
the form field, so a 422 page can say exactly what is wrong. Deliberately
stricter than the original where its rules let through values that would break
the order later: numbers must fit the proto's int32 fields, and zip codes,
years and CVVs must be positive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from boutique.payment import luhn_ok  # the one Luhn check: the frontend accepts what payment accepts

INT32_MAX = 2**31 - 1
QUANTITIES = (1, 2, 3, 4, 5, 10)  # the product page's select; the rule itself is 1..10

# Active ISO 4217 alphabetic codes (the original accepts any of them in /setCurrency).
ISO4217 = frozenset(str.split("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU
MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD
RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD
XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWL
"""))

_INT = re.compile(r"^[+-]?[0-9]{1,19}$")  # Go strconv.ParseInt syntax: ASCII digits only (no fullwidth digits)
_ORDER_TOKEN = re.compile(r"^[A-Za-z0-9-]{8,64}$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


class ValidationFailed(Exception):
    """One or more form fields are wrong: errors maps the form field to what is wrong."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def valid_email(email: str) -> bool:
    """The shop's e-mail rule (also checkout's): at most 254 characters, a dotted domain."""
    return len(email) <= 254 and bool(_EMAIL.match(email))


def _int(raw: str | None) -> int | None:
    raw = (raw or "").strip()
    return int(raw) if _INT.match(raw) else None


def card_problem(number: str) -> str | None:
    """None if the number passes the original's credit_card rule, else what is wrong."""
    if not number:
        return "a card number is required"
    groups = number.split(" ")
    if any(len(g) < 3 for g in groups):
        return "each group of digits needs at least 3 digits"
    joined = "".join(groups)
    if not joined.isdigit() or not joined.isascii():
        return "only digits (and single spaces between groups) are allowed"
    if not 12 <= len(joined) <= 19:
        return "a card number has 12 to 19 digits"
    if not luhn_ok(joined):
        return "this is not a valid card number (checksum failed)"
    return None


def _text(errors: dict[str, str], form: dict[str, str], name: str, limit: int, what: str) -> str:
    value = (form.get(name) or "").strip()
    if not value:
        errors[name] = f"{what} is required"
    elif len(value) > limit:
        errors[name] = f"{what} is too long (at most {limit} characters)"
    return value


@dataclass(frozen=True)
class AddToCart:
    product_id: str
    quantity: int


def add_to_cart(form: dict[str, str]) -> AddToCart:
    errors: dict[str, str] = {}
    qty = _int(form.get("quantity"))
    if qty is None or qty == 0:
        errors["quantity"] = "a quantity is required"
    elif not 1 <= qty <= 10:
        errors["quantity"] = "the quantity must be between 1 and 10"
    product_id = (form.get("product_id") or "").strip()
    if not product_id:
        errors["product_id"] = "a product id is required"
    if errors:
        raise ValidationFailed(errors)
    return AddToCart(product_id=product_id, quantity=int(qty or 0))


def set_currency(form: dict[str, str]) -> str:
    code = (form.get("currency_code") or "").strip()
    if not code:
        raise ValidationFailed({"currency_code": "a currency code is required"})
    if code not in ISO4217:
        raise ValidationFailed({"currency_code": f"{code[:16]!r} is not an ISO 4217 currency code"})
    return code


@dataclass(frozen=True)
class Checkout:
    email: str
    street_address: str
    zip_code: int
    city: str
    state: str
    country: str
    credit_card_number: str
    credit_card_expiration_month: int
    credit_card_expiration_year: int
    credit_card_cvv: int
    order_token: str = ""  # the cart page's one-time token; "" when the form has none (load generator)


def checkout(form: dict[str, str]) -> Checkout:
    errors: dict[str, str] = {}
    email = (form.get("email") or "").strip()
    if not email:
        errors["email"] = "an email address is required"
    elif not valid_email(email):
        errors["email"] = "must be an email address with a dotted domain, like someone@example.com"
    street = _text(errors, form, "street_address", 512, "the street address")
    zip_code = _int(form.get("zip_code"))
    if zip_code is None or zip_code == 0:
        errors["zip_code"] = "a numeric zip code is required"
    elif not 0 < zip_code <= INT32_MAX:
        errors["zip_code"] = "the zip code must be a positive number"
    city = _text(errors, form, "city", 128, "the city")
    state = _text(errors, form, "state", 128, "the state")
    country = _text(errors, form, "country", 128, "the country")
    number = (form.get("credit_card_number") or "").strip()
    problem = card_problem(number)
    if problem:
        errors["credit_card_number"] = problem
    month = _int(form.get("credit_card_expiration_month"))
    if month is None or not 1 <= month <= 12:
        errors["credit_card_expiration_month"] = "the expiration month must be 1 to 12"
    year = _int(form.get("credit_card_expiration_year"))
    if year is None or year == 0:
        errors["credit_card_expiration_year"] = "an expiration year is required"
    elif not 0 < year <= INT32_MAX:
        errors["credit_card_expiration_year"] = "the expiration year must be a positive number"
    cvv = _int(form.get("credit_card_cvv"))
    if cvv is None or cvv == 0:
        errors["credit_card_cvv"] = "a numeric security code (CVV) is required"
    elif not 0 < cvv <= INT32_MAX:
        errors["credit_card_cvv"] = "the security code must be a positive number"
    token = (form.get("order_token") or "").strip()
    if token and not _ORDER_TOKEN.match(token):
        errors["order_token"] = "the order form's token is malformed; please open your cart again"
    if errors:
        raise ValidationFailed(errors)
    return Checkout(email, street, int(zip_code or 0), city, state, country, number.replace(" ", ""),
                    int(month or 0), int(year or 0), int(cvv or 0), token)
