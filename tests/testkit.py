"""Helpers shared by the tests, importable from any test module or conftest as `testkit`
(pytest puts tests/ on sys.path when it loads tests/conftest.py, which re-exports these).

Skips must be rare, loud and explained: `require_tool` skips with a reason when
a system tool is missing on a developer machine, but FAILS under CI (CI=true),
where .ci/run has installed every tool and a missing one is a broken setup.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, why: str) -> str:
    """Return the path of executable `name`; skip loudly (fail under CI) if absent."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path:
        return path
    message = f"{name} is not installed ({why}); `make system-deps` installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


# Below Linux's ephemeral range (32768-60999), so no outgoing connection on this machine can take
# the port between our check and the server's bind; above every shop port at offsets up to 5400.
FREE_PORTS = range(25000, 32768)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    rng = random.Random()
    for _ in range(100):
        port = rng.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # that range is crowded: any port the kernel offers
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The shop's checkout form, filled in correctly (a VISA card payment accepts), and the prices on a page.
CHECKOUT_FORM = {
    "email": "someone@example.com", "street_address": "1600 Amphitheatre Parkway", "zip_code": "94043",
    "city": "Mountain View", "state": "CA", "country": "United States",
    "credit_card_number": "4432801561520454", "credit_card_expiration_month": "1",
    "credit_card_expiration_year": "2040", "credit_card_cvv": "672",
}


def prices(html: str) -> list[str]:
    """The prices a shop page shows, in page order."""
    return re.findall(r'class="price[^"]*">([^<]+)<', html)
