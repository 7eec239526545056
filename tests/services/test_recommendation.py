"""recommendationservice over real gRPC, with a real productcatalogservice (contract section 2.8)."""

from __future__ import annotations

import time

import grpc
import pytest
from testkit import free_port

from boutique import productcatalog, recommendation
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.config import ConfigError
from boutique.runtime.server import ServiceDefinition

IDS = ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N", "0PUK6V6EV0", "LS4PSXUNUM",
       "9SIQT8TOJO", "6E92ZMYYFZ"]


@pytest.fixture(scope="module")
def stub():
    with BackgroundService(productcatalog.DEFINITION) as catalog, \
            BackgroundService(recommendation.DEFINITION, {"PRODUCT_CATALOG_SERVICE_ADDR": catalog.address}) as svc, \
            grpc.insecure_channel(svc.address) as channel:
        yield rpc.RecommendationServiceStub(channel)


def recommend(stub, *exclude: str) -> list[str]:
    req = pb.ListRecommendationsRequest(user_id="u1", product_ids=list(exclude))
    return list(stub.ListRecommendations(req, timeout=5).product_ids)


def test_five_distinct_catalog_ids(stub):
    got = recommend(stub)
    assert len(got) == 5
    assert len(set(got)) == 5
    assert set(got) <= set(IDS)


@pytest.mark.parametrize(("excluded", "expected_len"), [(IDS[:2], 5), (IDS[:4], 5), (IDS[:6], 3), (IDS[1:], 1)])
def test_excludes_the_request_ids(stub, excluded, expected_len):
    for _ in range(10):
        got = recommend(stub, *excluded)
        assert len(got) == expected_len == len(set(got))
        assert not set(got) & set(excluded)
        assert set(got) <= set(IDS)


def test_single_candidate_left(stub):
    assert recommend(stub, *IDS[1:]) == [IDS[0]]


def test_empty_when_everything_is_excluded(stub):
    assert recommend(stub, *IDS) == []
    assert recommend(stub, *IDS, "UNKNOWN", IDS[0]) == []


def test_unknown_and_duplicate_request_ids_are_harmless(stub):
    got = recommend(stub, "NOT-A-PRODUCT", IDS[0], IDS[0])
    assert len(got) == 5 and IDS[0] not in got


def test_order_and_choice_are_random(stub):
    results = {tuple(recommend(stub)) for _ in range(20)}
    assert len(results) > 1


def test_catalog_down_is_unavailable_not_unknown():
    env = {"PRODUCT_CATALOG_SERVICE_ADDR": f"127.0.0.1:{free_port()}"}  # nothing listens there
    with BackgroundService(recommendation.DEFINITION, env) as svc, grpc.insecure_channel(svc.address) as channel:
        stub = rpc.RecommendationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            recommend(stub)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "productcatalogservice" in err.value.details()
    assert "ListProducts" in err.value.details()


def test_missing_catalog_address_stops_startup():
    svc = BackgroundService(recommendation.DEFINITION, {})
    try:
        with pytest.raises(ConfigError, match="PRODUCT_CATALOG_SERVICE_ADDR"):
            svc.start()
    finally:
        svc.stop()


def test_pick_helper():
    assert recommendation.pick(IDS, set(IDS)) == []
    assert sorted(recommendation.pick(IDS, set(), k=20)) == sorted(IDS)
    assert len(recommendation.pick(IDS + IDS, set())) == 5


class MutableCatalog(rpc.ProductCatalogServiceServicer):
    """A catalog whose product ids the test changes; counts ListProducts calls."""

    def __init__(self) -> None:
        self.ids = list(IDS)
        self.list_calls = 0

    async def ListProducts(self, request, context):  # type: ignore[override]
        self.list_calls += 1
        return pb.ListProductsResponse(products=[pb.Product(id=i, name=i) for i in self.ids])


def _mutable_catalog(catalog: MutableCatalog) -> ServiceDefinition:
    real = productcatalog.DEFINITION
    return ServiceDefinition(module=real.module, add_servicer=rpc.add_ProductCatalogServiceServicer_to_server,
                             create=lambda ctx: catalog)


def _recommendation(catalog_address: str, ttl: str) -> BackgroundService:
    return BackgroundService(recommendation.DEFINITION, {"PRODUCT_CATALOG_SERVICE_ADDR": catalog_address,
                                                         "BOUTIQUE_CACHE_TTL_SECONDS": ttl})


def test_product_ids_are_kept_between_requests():
    catalog = MutableCatalog()
    with BackgroundService(_mutable_catalog(catalog)) as cat, _recommendation(cat.address, "30") as svc, \
            grpc.insecure_channel(svc.address) as channel:
        stub = rpc.RecommendationServiceStub(channel)
        results = [recommend(stub, IDS[0]) for _ in range(30)]
    assert catalog.list_calls == 1  # the original would have called it 30 times
    assert all(len(r) == 5 and set(r) <= set(IDS[1:]) for r in results)  # the same answers as without a cache


def test_a_catalog_change_shows_up_once_the_ttl_has_passed():
    catalog = MutableCatalog()
    with BackgroundService(_mutable_catalog(catalog)) as cat, _recommendation(cat.address, "0.2") as svc, \
            grpc.insecure_channel(svc.address) as channel:
        stub = rpc.RecommendationServiceStub(channel)
        assert set(recommend(stub)) <= set(IDS)
        catalog.ids = ["NEW-1", "NEW-2"]
        seen: list[set[str]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not seen or seen[-1] != {"NEW-1", "NEW-2"}):
            seen.append(set(recommend(stub)))
            time.sleep(0.02)
    assert seen[-1] == {"NEW-1", "NEW-2"}, "the new catalog never showed up"
    # every answer came from one list, the old or the new, never a mix
    assert all(s <= set(IDS) or s <= {"NEW-1", "NEW-2"} for s in seen)
    assert catalog.list_calls >= 2


def test_ttl_zero_calls_the_catalog_on_every_request():
    catalog = MutableCatalog()
    with BackgroundService(_mutable_catalog(catalog)) as cat, _recommendation(cat.address, "0") as svc, \
            grpc.insecure_channel(svc.address) as channel:
        stub = rpc.RecommendationServiceStub(channel)
        for _ in range(5):
            recommend(stub)
    assert catalog.list_calls == 5


def test_a_loaded_list_outlives_a_short_catalog_outage():
    catalog = MutableCatalog()
    cat = BackgroundService(_mutable_catalog(catalog)).start()
    try:
        with _recommendation(cat.address, "30") as svc, grpc.insecure_channel(svc.address) as channel:
            stub = rpc.RecommendationServiceStub(channel)
            recommend(stub)
            cat.stop()
            assert len(recommend(stub)) == 5  # served from memory while the catalog is down
    finally:
        cat.stop()
