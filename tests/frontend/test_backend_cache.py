"""The frontend's in-memory product list, currency list and converted prices
(BOUTIQUE_CACHE_TTL_SECONDS): fewer backend calls, the same pages."""

from __future__ import annotations

from prometheus_client import REGISTRY
from testkit import prices


def served(service: str, method: str) -> float:
    """Calls the in-process backends answered OK (server-side metric)."""
    return REGISTRY.get_sample_value("grpc_server_handled_total", {
        "grpc_service": f"hipstershop.{service}", "grpc_method": method, "grpc_code": "OK"}) or 0.0


def counts() -> tuple[float, float, float]:
    return (served("CurrencyService", "Convert"), served("ProductCatalogService", "ListProducts"),
            served("CurrencyService", "GetSupportedCurrencies"))


def test_repeated_home_pages_reuse_lists_and_conversions(make_frontend) -> None:
    fe = make_frontend()
    first = fe.client.get("/", cookies={"shop_currency": "EUR"})
    assert first.status_code == 200
    before = counts()
    pages = [fe.client.get("/", cookies={"shop_currency": "EUR"}) for _ in range(5)]
    assert counts() == before  # no Convert, ListProducts or GetSupportedCurrencies for these five
    assert all(prices(p.text) == prices(first.text) for p in pages)
    assert prices(first.text)[0] == "€17.68"  # 19.99 USD in EUR, the contract's test vector


def test_a_new_currency_is_converted_once(make_frontend) -> None:
    fe = make_frontend()
    fe.client.get("/", cookies={"shop_currency": "EUR"})
    convert_before = counts()[0]
    fe.client.get("/", cookies={"shop_currency": "GBP"})
    after_first = counts()[0]
    fe.client.get("/", cookies={"shop_currency": "GBP"})
    assert after_first - convert_before == 8  # the nine products have eight distinct prices
    assert counts()[0] == after_first


def test_ttl_zero_asks_the_backends_on_every_page(make_frontend) -> None:
    fe = make_frontend(BOUTIQUE_CACHE_TTL_SECONDS="0")
    cached = make_frontend()
    fe.client.get("/")
    before = counts()
    page = fe.client.get("/")
    convert, list_products, currencies = (b - a for a, b in zip(before, counts(), strict=True))
    assert (convert, list_products, currencies) == (8, 1, 1)
    assert prices(page.text) == prices(cached.client.get("/").text)  # the cache changes calls, not pages
