"""The shop with mutual TLS on every gRPC hop: the frontend's clients use the TLS_* files."""

from __future__ import annotations

import httpx
import pytest

from boutique.dev.shop import start_on_free_offset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_frontend_talks_mutual_tls_to_every_backend() -> None:
    shop = start_on_free_offset(mtls=True, redis=False, env={"BOUTIQUE_ACCESS_LOG": "errors"})
    try:
        env = shop.env_for("frontend")
        assert env["TLS_CERT_FILE"].endswith("frontend.pem") and env["TLS_CA_FILE"]
        with httpx.Client(base_url=shop.base_url, timeout=20) as c:
            assert "Sunglasses" in c.get("/").text
            c.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "2"})
            r = c.post("/cart/checkout", data={
                "email": "a@example.com", "street_address": "1 Main St", "zip_code": "10001", "city": "NYC",
                "state": "NY", "country": "US", "credit_card_number": "5555555555554444",
                "credit_card_expiration_month": "12", "credit_card_expiration_year": "2040",
                "credit_card_cvv": "123"})
            assert r.status_code == 200 and '<dd class="total-paid">$48.97</dd>' in r.text
    finally:
        shop.stop()
