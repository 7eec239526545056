"""Swapping in a service that runs elsewhere: `boutique run --addr NAME=HOST:PORT`, and an inherited
<X>_SERVICE_ADDR for a service `--only` left out (real processes, real gRPC)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from boutique import productcatalog
from boutique import service_catalog as catalog_mod
from boutique.dev.inprocess import BackgroundService
from boutique.dev.shop import Shop, ShopError, start_on_free_offset
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runner import table
from boutique.runtime import metrics

CAT = catalog_mod.default()
CATALOG_ENV = CAT.get("productcatalogservice").addr_env


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[BackgroundService]:
    """A product catalog that is not the shop's: stands in for an original Online Boutique service."""
    with BackgroundService(productcatalog.DEFINITION) as svc:
        yield svc


def _list_products_served() -> float:
    return metrics.SERVER_HANDLED.labels("hipstershop.ProductCatalogService", "ListProducts", "OK")._value.get()


def _recommend(shop: Shop) -> list[str]:
    with shop.channel("recommendationservice") as ch:
        reply = rpc.RecommendationServiceStub(ch).ListRecommendations(
            pb.ListRecommendationsRequest(user_id="u1", product_ids=["OLJCESPC7Z"]), timeout=10)
    return list(reply.product_ids)


@pytest.mark.slow
def test_addr_points_the_callers_at_the_service_elsewhere(elsewhere: BackgroundService) -> None:
    everything = Shop(port_offset=1000, addresses={"productcatalogservice": elsewhere.address})
    assert "productcatalogservice" not in everything.names and "recommendationservice" in everything.names
    shop = start_on_free_offset(services=["recommendationservice"], redis=False,
                                addresses={"productcatalogservice": elsewhere.address})
    try:
        assert shop.names == ["recommendationservice"]
        assert shop.env_for("recommendationservice")[CATALOG_ENV] == elsewhere.address
        assert f"productcatalogservice  elsewhere: {elsewhere.address} (--addr)" in table(shop)
        before = _list_products_served()
        assert _recommend(shop), "no recommendations"
        assert _list_products_served() == before + 1  # the one elsewhere answered
    finally:
        shop.stop()


@pytest.mark.slow
def test_an_inherited_addr_is_used_for_a_service_only_left_out(elsewhere: BackgroundService,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CATALOG_ENV, elsewhere.address)
    both = Shop(port_offset=1000, services=["recommendationservice", "productcatalogservice"], redis=False)
    assert both.env_for("recommendationservice")[CATALOG_ENV] == both.address("productcatalogservice")  # ours wins
    shop = start_on_free_offset(services=["recommendationservice"], redis=False)
    try:
        assert CATALOG_ENV not in shop.env_for("recommendationservice")  # inherited, not overwritten
        before = _list_products_served()
        assert _recommend(shop)
        assert _list_products_served() == before + 1
    finally:
        shop.stop()


def test_addr_for_redis_replaces_the_private_redis_server() -> None:
    shop = Shop(port_offset=1000, services=["cartservice"], addresses={CAT.redis.name: "127.0.0.1:6390"})
    assert shop.env_for("cartservice")["REDIS_ADDR"] == "127.0.0.1:6390"
    assert not shop._want_redis()  # no redis-server of ours


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"addresses": {"nosuch": "127.0.0.1:1"}}, "--addr nosuch=127.0.0.1:1: unknown service 'nosuch'"),
    ({"addresses": {"cartservice": "cart"}}, "--addr cartservice='cart': 'cart' is not a HOST:PORT address"),
    ({"addresses": {"cartservice": "127.0.0.1:0"}}, "is not a HOST:PORT address"),
    ({"addresses": {"frontend": "127.0.0.1:8080"}}, "none of the services the runner starts calls frontend"),
    ({"addresses": {"cartservice": "127.0.0.1:7070"}, "services": ["cartservice"]},
     "--only cartservice and --addr cartservice=127.0.0.1:7070"),
])
def test_bad_addr_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ShopError, match=message.replace("(", r"\(").replace("?", r"\?")):
        Shop(**kwargs)


@pytest.mark.parametrize(("argv", "message"), [
    (["--addr", "cartservice"], "--addr 'cartservice': expected NAME=HOST:PORT"),
    (["--addr", "cartservice=127.0.0.1:1", "--addr", "cartservice=127.0.0.1:2"], "--addr cartservice given twice"),
    (["--addr", "nosuch=127.0.0.1:1"], "unknown service 'nosuch'"),
])
def test_boutique_run_rejects_bad_addr_before_starting_anything(argv: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "boutique.cli", "run", "--port-offset", "4999", *argv],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert "starting" not in run.stdout
