"""The frontend's HTTP surface (contract section 3) against the real backend services in-process."""

from __future__ import annotations

import json
import re
import uuid

import grpc
import pytest
from prometheus_client import REGISTRY
from testkit import CHECKOUT_FORM, prices

from boutique import money
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

PRODUCT_IDS = ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0",
               "LS4PSXUNUM", "9SIQT8TOJO", "6E92ZMYYFZ"]
CHECKOUT = CHECKOUT_FORM


def convert(address: str, usd: pb.Money, to: str) -> pb.Money:
    with grpc.insecure_channel(address) as ch:
        req = pb.CurrencyConversionRequest(to_code=to)
        getattr(req, "from").CopyFrom(usd)
        return rpc.CurrencyServiceStub(ch).Convert(req, timeout=5)


def test_home_lists_every_product_in_dollars_with_a_session_cookie(shop) -> None:
    r = shop.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for pid in PRODUCT_IDS:
        assert f'href="/product/{pid}"' in r.text
    assert prices(r.text)[:3] == ["$19.99", "$18.99", "$109.99"]
    cookie = r.headers["set-cookie"]
    assert re.match(r"shop_session-id=[0-9a-f-]{36}; Max-Age=172800; Path=/", cookie)
    # currency selector: the whitelisted codes, in the currency service's order
    assert re.findall(r'<option value="([A-Z]{3})"', r.text) == ["EUR", "USD", "JPY", "GBP", "TRY", "CAD"]
    assert 'href="#main"' in r.text and 'alt="Sunglasses"' in r.text  # skip link, alt text


def test_prices_follow_the_currency_cookie_and_match_convert(shop, backends) -> None:
    r = shop.client.post("/setCurrency", data={"currency_code": "JPY"}, headers={"referer": f"{shop.url}/cart"})
    assert r.status_code == 302 and r.headers["location"] == "/cart"
    assert "shop_currency=JPY; Max-Age=172800" in r.headers["set-cookie"]
    r = shop.client.get("/", cookies={"shop_currency": "JPY"})
    expected = money.render(convert(backends["currencyservice"].address,
                                    pb.Money(currency_code="USD", units=19, nanos=990_000_000), "JPY"))
    assert expected == "¥2235.06"
    assert prices(r.text)[0] == expected
    assert '<option value="JPY" selected>' in r.text


def test_set_currency_without_referer_or_from_elsewhere_goes_home(shop) -> None:
    assert shop.client.post("/setCurrency", data={"currency_code": "EUR"}).headers["location"] == "/"
    r = shop.client.post("/setCurrency", data={"currency_code": "EUR"}, headers={"referer": "https://evil.example/x"})
    assert r.headers["location"] == "/"


def test_unknown_currency_cookie_falls_back_to_dollars(shop) -> None:
    r = shop.client.get("/", cookies={"shop_currency": "AUD"})  # ISO code the service knows, not whitelisted
    assert r.status_code == 200
    r = shop.client.get("/", cookies={"shop_currency": "ZWL"})  # ISO code the service does not support
    assert r.status_code == 200 and prices(r.text)[0] == "$19.99"


def test_set_currency_rejects_a_non_iso_code_naming_the_field(shop) -> None:
    r = shop.client.post("/setCurrency", data={"currency_code": "XYZ"})
    assert r.status_code == 422 and "currency_code" in r.text


def test_cart_merges_quantities_and_totals_with_shipping(shop) -> None:
    c = shop.client
    c.cookies.set("shop_session-id", str(uuid.uuid4()))
    r = c.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "2"})
    assert r.status_code == 302 and r.headers["location"] == "/cart"
    c.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "3"})
    c.post("/cart", data={"product_id": "6E92ZMYYFZ", "quantity": "1"})
    r = c.get("/cart")
    assert r.status_code == 200
    assert "Quantity: 5" in r.text and "Quantity: 1" in r.text
    assert '<span class="badge"' in r.text and ">6</span>" in r.text
    assert '<dd class="shipping">$8.99</dd>' in r.text
    assert '<dd class="total-amount">$117.93</dd>' in r.text  # 5 x 19.99 + 8.99 + 8.99


def test_checkout_shows_order_and_empties_the_cart(shop) -> None:
    c = shop.client
    c.cookies.set("shop_session-id", str(uuid.uuid4()))
    c.post("/cart", data={"product_id": "1YMWWN1N4O", "quantity": "2"})
    r = c.post("/cart/checkout", data=CHECKOUT)
    assert r.status_code == 200
    assert re.search(r'class="order-id">[0-9a-f-]{36}<', r.text)
    assert re.search(r'class="tracking-id">[A-Z]{2}-\d+-\d+<', r.text)
    assert '<dd class="total-paid">$228.97</dd>' in r.text  # 2 x 109.99 + 8.99
    assert 'name="currency_code"' not in r.text  # the selector is hidden on the order page
    assert "Your cart is empty" in c.get("/cart").text


@pytest.mark.parametrize("field", sorted(CHECKOUT))
def test_checkout_validation_is_422_naming_the_field(shop, field: str) -> None:
    bad = {"email": "test@example", "zip_code": "0", "credit_card_number": "4432801561520455",
           "credit_card_expiration_month": "13", "credit_card_expiration_year": "x", "credit_card_cvv": "0"}
    r = shop.client.post("/cart/checkout", data={**CHECKOUT, field: bad.get(field, "")})
    assert r.status_code == 422
    assert f"<code>{field}</code>" in r.text
    assert "Traceback" not in r.text


def test_add_to_cart_validation_and_unknown_product(shop) -> None:
    r = shop.client.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "11"})
    assert r.status_code == 422 and "<code>quantity</code>" in r.text
    assert shop.client.post("/cart", data={"product_id": "NOPE", "quantity": "1"}).status_code == 404


def test_product_page_and_unknown_product(shop) -> None:
    r = shop.client.get("/product/66VCHSJNUP")
    assert r.status_code == 200
    assert "<h1>Tank Top</h1>" in r.text and "$18.99" in r.text
    assert re.findall(r'<option value="(\d+)">', r.text) == ["1", "2", "3", "4", "5", "10"]
    assert 'name="product_id" value="66VCHSJNUP"' in r.text
    r = shop.client.get("/product/NOPE")
    assert r.status_code == 404 and "NOPE" in r.text and "request id" in r.text


def test_plain_routes_and_method_errors(shop) -> None:
    c = shop.client
    r = c.get("/no/such/page")
    assert (r.status_code, r.text, r.headers["content-type"]) == (404, "404 page not found\n",
                                                                  "text/plain; charset=utf-8")
    r = c.delete("/cart")
    assert r.status_code == 405 and r.content == b""
    assert c.get("/cart/checkout").status_code == 405
    assert c.get("/robots.txt").text == "User-agent: *\nDisallow: /"
    assert c.post("/_healthz").text == "ok"
    assert c.head("/").status_code == 200
    r = c.get("/static/img/products/watch.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"


def test_product_meta_is_go_style_json(shop) -> None:
    r = shop.client.get("/product-meta/OLJCESPC7Z")
    assert r.status_code == 200
    assert json.loads(r.text) == {
        "id": "OLJCESPC7Z", "name": "Sunglasses", "description": json.loads(r.text)["description"],
        "picture": "/static/img/products/sunglasses.jpg",
        "price_usd": {"currency_code": "USD", "units": 19, "nanos": 990000000}, "categories": ["accessories"]}
    assert shop.client.get("/product-meta/NOPE").status_code == 404


def test_logout_expires_every_cookie(shop) -> None:
    r = shop.client.get("/logout", cookies={"shop_session-id": "abc", "shop_currency": "EUR"})
    assert r.status_code == 302 and r.headers["location"] == "/"
    cookies = r.headers.get_list("set-cookie")
    assert any(c.startswith("shop_session-id=abc;") and "Max-Age=0" in c for c in cookies)
    assert any(c.startswith("shop_currency=EUR;") and "Max-Age=0" in c for c in cookies)


def test_footer_shows_session_and_a_fresh_request_id(shop) -> None:
    ids = set()
    for _ in range(2):
        r = shop.client.get("/", cookies={"shop_session-id": "my-session"})
        assert "my-session" in r.text and "set-cookie" not in r.headers
        ids.add(re.search(r"request-id: <code>([0-9a-f-]{36})</code>", r.text).group(1))
    assert len(ids) == 2


def test_metrics_count_by_route_template(shop) -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("http_requests_total",
                                         {"route": "/product/{id}", "method": "GET", "status": "200"}) or 0.0

    before = count()
    shop.client.get("/product/OLJCESPC7Z")
    shop.client.get("/product/9SIQT8TOJO")
    assert count() == before + 2
    assert REGISTRY.get_sample_value("http_request_duration_seconds_count",
                                     {"route": "/product/{id}", "method": "GET"}) >= 2


def test_base_url_prefixes_every_route_and_link(make_frontend) -> None:
    fe = make_frontend(BASE_URL="/online-boutique/")
    c = fe.client
    r = c.get("/online-boutique/")
    assert r.status_code == 200
    assert 'href="/online-boutique/product/OLJCESPC7Z"' in r.text
    assert 'src="/online-boutique/static/img/products/sunglasses.jpg"' in r.text
    assert 'action="/online-boutique/setCurrency"' in r.text
    assert "Path=/online-boutique" in r.headers["set-cookie"]
    assert c.get("/").status_code == 404
    assert c.get("/online-boutique/_healthz").text == "ok"
    r = c.post("/online-boutique/cart", data={"product_id": "OLJCESPC7Z", "quantity": "1"})
    assert r.headers["location"] == "/online-boutique/cart"


def test_banner_platform_and_shared_session(make_frontend) -> None:
    fe = make_frontend(FRONTEND_MESSAGE="Spring sale <b>today</b>", ENV_PLATFORM="aws",
                       ENABLE_SINGLE_SHARED_SESSION="true", FRONTEND_FANOUT="sequential")
    r = fe.client.get("/")
    assert r.status_code == 200
    assert "Spring sale &lt;b&gt;today&lt;/b&gt;" in r.text  # escaped
    assert 'class="platform platform-aws"' in r.text
    assert "shop_session-id=12345678-1234-1234-1234-123456789123;" in r.headers["set-cookie"]
    other = make_frontend(ENV_PLATFORM="mars")
    assert 'class="platform platform-local"' in other.client.get("/").text
