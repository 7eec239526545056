"""Card numbers the payment service accepts (contract section 2.4).

Faker's visa numbers are classed visa_electron about 0.5% of the time (prefixes
4026/417500/4508/4844/4913/4917) and payment rejects those; we generate only
numbers payment takes: 16-digit Luhn-valid VISA outside those prefixes, or
16-digit MasterCard 51-55.
"""

from __future__ import annotations

import random

VISA_ELECTRON_PREFIXES = ("4026", "417500", "4508", "4844", "4913", "4917")


def luhn_check_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # these digits are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def visa(rng: random.Random | None = None) -> str:
    rng = rng or random
    while True:
        body = "4" + "".join(str(rng.randrange(10)) for _ in range(14))
        if not body.startswith(VISA_ELECTRON_PREFIXES):
            return body + luhn_check_digit(body)


def mastercard(rng: random.Random | None = None) -> str:
    rng = rng or random
    body = f"5{rng.randint(1, 5)}" + "".join(str(rng.randrange(10)) for _ in range(13))
    return body + luhn_check_digit(body)


def card(rng: random.Random | None = None) -> str:
    """A VISA most of the time, a MasterCard one time in four."""
    rng = rng or random
    return mastercard(rng) if rng.random() < 0.25 else visa(rng)
