"""adservice: text ads by product category (contract section 2.9).

The ads, their categories and their order are facts of the contract. GetAds
walks the request's context keys in order and appends every ad of exactly that
category (case-sensitive; a repeated key repeats its ads). With no keys, or no
ad for any of them, it returns MAX_RANDOM_ADS ads drawn at random, with
replacement, from all of them.
"""

from __future__ import annotations

import random

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.server import ServiceDefinition

MAX_RANDOM_ADS = 2

# (category, redirect_url, text) in the contract's order: an ordered multimap.
ADS: tuple[tuple[str, str, str], ...] = (
    ("clothing", "/product/66VCHSJNUP", "Tank top for sale. 20% off."),
    ("accessories", "/product/1YMWWN1N4O", "Watch for sale. Buy one, get second kit for free"),
    ("footwear", "/product/L9ECAV7KIM", "Loafers for sale. Buy one, get second one for free"),
    ("hair", "/product/2ZYFJ3GM2N", "Hairdryer for sale. 50% off."),
    ("decor", "/product/0PUK6V6EV0", "Candle holder for sale. 30% off."),
    ("kitchen", "/product/9SIQT8TOJO", "Bamboo glass jar for sale. 10% off."),
    ("kitchen", "/product/6E92ZMYYFZ", "Mug for sale. Buy two, get third one for free"),
)


class AdService(rpc.AdServiceServicer):
    def __init__(self) -> None:
        self.all_ads = [pb.Ad(redirect_url=url, text=text) for _, url, text in ADS]
        self.by_category: dict[str, list[pb.Ad]] = {}
        for (category, _, _), ad in zip(ADS, self.all_ads, strict=True):
            self.by_category.setdefault(category, []).append(ad)
        self._rng = random.Random()

    def ads_for(self, keys: list[str]) -> list[pb.Ad]:
        ads = [ad for key in keys for ad in self.by_category.get(key, ())]
        return ads or self._rng.choices(self.all_ads, k=MAX_RANDOM_ADS)

    async def GetAds(self, request: pb.AdRequest, context: grpc.aio.ServicerContext):
        return pb.AdResponse(ads=self.ads_for(list(request.context_keys)))


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_AdServiceServicer_to_server,
                               create=lambda ctx: AdService())
