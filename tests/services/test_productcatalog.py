"""productcatalogservice over real gRPC: the contract's nine products (section 2.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import pytest

from boutique import productcatalog
from boutique.dev.inprocess import BackgroundService
from boutique.productcatalog import DEFINITION, parse_go_duration
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.config import ConfigError

# id, name, (units, nanos), categories, picture: the contract's table, in its order.
CONTRACT = [
    ("OLJCESPC7Z", "Sunglasses", (19, 990_000_000), ["accessories"], "/static/img/products/sunglasses.jpg"),
    ("66VCHSJNUP", "Tank Top", (18, 990_000_000), ["clothing", "tops"], "/static/img/products/tank-top.jpg"),
    ("1YMWWN1N4O", "Watch", (109, 990_000_000), ["accessories"], "/static/img/products/watch.jpg"),
    ("L9ECAV7KIM", "Loafers", (89, 990_000_000), ["footwear"], "/static/img/products/loafers.jpg"),
    ("2ZYFJ3GM2N", "Hairdryer", (24, 990_000_000), ["hair", "beauty"], "/static/img/products/hairdryer.jpg"),
    ("0PUK6V6EV0", "Candle Holder", (18, 990_000_000), ["decor", "home"], "/static/img/products/candle-holder.jpg"),
    ("LS4PSXUNUM", "Salt & Pepper Shakers", (18, 490_000_000), ["kitchen"],
     "/static/img/products/salt-and-pepper-shakers.jpg"),
    ("9SIQT8TOJO", "Bamboo Glass Jar", (5, 490_000_000), ["kitchen"], "/static/img/products/bamboo-glass-jar.jpg"),
    ("6E92ZMYYFZ", "Mug", (8, 990_000_000), ["kitchen"], "/static/img/products/mug.jpg"),
]
IDS = [row[0] for row in CONTRACT]


def row(p: pb.Product):
    return (p.id, p.name, (p.price_usd.units, p.price_usd.nanos), list(p.categories), p.picture)


@pytest.fixture(scope="module")
def stub():
    with BackgroundService(DEFINITION) as svc, grpc.insecure_channel(svc.address) as channel:
        yield rpc.ProductCatalogServiceStub(channel)


def test_list_products_is_the_contract_catalog(stub):
    products = stub.ListProducts(pb.Empty(), timeout=5).products
    assert [row(p) for p in products] == CONTRACT
    assert all(p.price_usd.currency_code == "USD" for p in products)
    assert all(len(p.description) > 40 for p in products)  # our own descriptions, none left empty


@pytest.mark.parametrize("expected", CONTRACT, ids=IDS)
def test_get_product(stub, expected):
    assert row(stub.GetProduct(pb.GetProductRequest(id=expected[0]), timeout=5)) == expected


@pytest.mark.parametrize("missing", ["NOPE", "oljcespc7z", " OLJCESPC7Z"])
def test_get_unknown_product_is_not_found(stub, missing):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetProduct(pb.GetProductRequest(id=missing), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"no product with ID {missing}"


def test_get_empty_id_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetProduct(pb.GetProductRequest(id=""), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("id:")


def search(stub, query: str) -> list[str]:
    return [p.id for p in stub.SearchProducts(pb.SearchProductsRequest(query=query), timeout=5).results]


def test_search_by_name_case_insensitive(stub):
    assert search(stub, "WATCH") == ["1YMWWN1N4O"]
    assert search(stub, "salt & pepper") == ["LS4PSXUNUM"]
    assert search(stub, "loaf") == ["L9ECAV7KIM"]


def test_search_matches_description_too_in_file_order(stub):
    products = {p.id: p for p in stub.ListProducts(pb.Empty(), timeout=5).products}
    word = products["9SIQT8TOJO"].description.split()[0]  # a word that is not in the name
    expected = [i for i in IDS if word.lower() in (products[i].name + " " + products[i].description).lower()]
    assert "9SIQT8TOJO" in expected
    assert search(stub, word.upper()) == expected
    # "glass" is in two names (Sunglasses, Bamboo Glass Jar): file order
    glass = search(stub, "glass")
    assert glass[:1] == ["OLJCESPC7Z"] and "9SIQT8TOJO" in glass
    assert glass == [i for i in IDS if i in glass]


def test_search_empty_query_matches_all(stub):
    assert search(stub, "") == IDS


def test_search_no_match(stub):
    assert search(stub, "xylophone-zeppelin") == []


def test_extra_latency_is_slept_on_every_rpc():
    with BackgroundService(DEFINITION, {"EXTRA_LATENCY": "150ms"}) as svc, \
            grpc.insecure_channel(svc.address) as channel:
        stub = rpc.ProductCatalogServiceStub(channel)
        calls = [lambda: stub.ListProducts(pb.Empty(), timeout=5),
                 lambda: stub.GetProduct(pb.GetProductRequest(id="6E92ZMYYFZ"), timeout=5),
                 lambda: stub.SearchProducts(pb.SearchProductsRequest(query="mug"), timeout=5)]
        for call in calls:
            start = time.perf_counter()
            call()
            assert time.perf_counter() - start >= 0.15


@pytest.mark.parametrize(("text", "seconds"), [("5.5s", 5.5), ("100ms", 0.1), ("1m30s", 90.0), ("0", 0.0),
                                               ("1h", 3600.0), ("250us", 0.00025), (".5s", 0.5), ("2.s", 2.0),
                                               ("1h2m3.5s", 3723.5), ("+1s", 1.0), ("10ns", 1e-8)])
def test_parse_go_duration(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5", "abc", "5 s", "1.5.5s", "s", ".s", "1d", "-1s", "5sec", "1s2"])
def test_parse_go_duration_rejects(bad):
    with pytest.raises(ConfigError, match="EXTRA_LATENCY"):
        parse_go_duration(bad)


def test_unset_or_blank_extra_latency_is_zero():
    assert productcatalog.extra_latency({}) == 0.0
    assert productcatalog.extra_latency({"EXTRA_LATENCY": "  "}) == 0.0


def test_bad_extra_latency_stops_startup():
    svc = BackgroundService(DEFINITION, {"EXTRA_LATENCY": "5 seconds"})
    try:
        with pytest.raises(ConfigError, match="EXTRA_LATENCY='5 seconds'"):
            svc.start()
    finally:
        svc.stop()


def test_bad_extra_latency_process_exit_code():
    env = {**os.environ, "EXTRA_LATENCY": "fast", "PORT": "0", "METRICS_PORT": "0", "LISTEN_ADDR": "127.0.0.1"}
    # what `boutique serve productcatalogservice` runs: the runtime's serve() with this DEFINITION
    code = "import sys; from boutique.runtime.server import serve; from boutique.productcatalog import DEFINITION; " \
           "sys.exit(serve(DEFINITION))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "EXTRA_LATENCY='fast' is not a duration" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_file_is_camel_case_proto_json():
    import json
    from importlib import resources

    raw = json.loads(resources.files("boutique.data").joinpath("products.json").read_text(encoding="utf-8"))
    assert list(raw) == ["products"]
    for product in raw["products"]:
        assert set(product) == {"id", "name", "description", "picture", "priceUsd", "categories"}
        assert set(product["priceUsd"]) == {"currencyCode", "units", "nanos"}
    assert [row(p) for p in productcatalog.load_products()] == CONTRACT
