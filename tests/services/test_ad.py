"""adservice over real gRPC: ads by category, random fallback (contract section 2.9)."""

from __future__ import annotations

import grpc
import pytest

from boutique.ad import DEFINITION
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

# The contract's table (facts: kept verbatim).
TABLE = [
    ("clothing", "/product/66VCHSJNUP", "Tank top for sale. 20% off."),
    ("accessories", "/product/1YMWWN1N4O", "Watch for sale. Buy one, get second kit for free"),
    ("footwear", "/product/L9ECAV7KIM", "Loafers for sale. Buy one, get second one for free"),
    ("hair", "/product/2ZYFJ3GM2N", "Hairdryer for sale. 50% off."),
    ("decor", "/product/0PUK6V6EV0", "Candle holder for sale. 30% off."),
    ("kitchen", "/product/9SIQT8TOJO", "Bamboo glass jar for sale. 10% off."),
    ("kitchen", "/product/6E92ZMYYFZ", "Mug for sale. Buy two, get third one for free"),
]
ALL = [(url, text) for _, url, text in TABLE]


def by(category: str) -> list[tuple[str, str]]:
    return [(url, text) for c, url, text in TABLE if c == category]


@pytest.fixture(scope="module")
def stub():
    with BackgroundService(DEFINITION) as svc, grpc.insecure_channel(svc.address) as channel:
        yield rpc.AdServiceStub(channel)


def ads(stub, *keys: str) -> list[tuple[str, str]]:
    return [(a.redirect_url, a.text) for a in stub.GetAds(pb.AdRequest(context_keys=list(keys)), timeout=5).ads]


@pytest.mark.parametrize("category", sorted({c for c, _, _ in TABLE}))
def test_each_category(stub, category):
    assert ads(stub, category) == by(category)


def test_kitchen_has_two_in_order(stub):
    assert ads(stub, "kitchen") == [ALL[5], ALL[6]]


def test_keys_in_request_order_with_duplicates(stub):
    assert ads(stub, "footwear", "kitchen", "footwear") == by("footwear") + by("kitchen") + by("footwear")


def test_unmatched_keys_are_skipped_when_another_matches(stub):
    assert ads(stub, "tops", "hair", "home") == by("hair")


@pytest.mark.parametrize("keys", [(), ("tops",), ("beauty", "home"), ("Kitchen",), ("",)])
def test_fallback_two_random_ads(stub, keys):
    seen = set()
    for _ in range(30):
        got = ads(stub, *keys)
        assert len(got) == 2
        assert all(ad in ALL for ad in got)
        seen.update(got)
    assert len(seen) > 2  # random, not a fixed pair


def test_fallback_draws_with_replacement(stub):
    # with 7 ads, a duplicate pair turns up with probability 1/7 per call
    assert any(len(set(ads(stub))) == 1 for _ in range(300))
