"""recommendationservice: up to five other products (contract section 2.8).

ListRecommendations takes every product id of productcatalogservice, drops the
ids in the request and returns up to MAX_RECOMMENDATIONS distinct ids from
the rest, in random order (empty when everything is excluded). user_id is
ignored, as in the original.

Deliberate difference: the original calls ListProducts on every request; we keep
the product ids in memory (boutique.runtime.cache.RefreshingValue) and refresh
them in the background once they are BOUTIQUE_CACHE_TTL_SECONDS old (default 30):
a product added to or removed from the catalog shows up here within about that
time, and never later than twice it. 0 restores a call per request.

Deliberate difference: when the catalog cannot be reached the original
answers UNKNOWN "Exception calling application"; we answer UNAVAILABLE with a
message naming productcatalogservice and its status, so callers can tell a
dependency outage from a bug. The call to the catalog carries the catalog's
deadline and retry policy (from the service catalog, via ctx.stub).
"""

from __future__ import annotations

import random

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.cache import RefreshingValue
from boutique.runtime.server import ServiceContext, ServiceDefinition

MAX_RECOMMENDATIONS = 5
CATALOG = "productcatalogservice"


def pick(all_ids: list[str], exclude: set[str], k: int = MAX_RECOMMENDATIONS,
         rng: random.Random | None = None) -> list[str]:
    """Up to k distinct ids of `all_ids` not in `exclude`, in random order."""
    candidates = list(dict.fromkeys(i for i in all_ids if i not in exclude))
    return (rng or random).sample(candidates, min(k, len(candidates)))


class RecommendationService(rpc.RecommendationServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.catalog = ctx.stub(CATALOG, rpc.ProductCatalogServiceStub)
        self.log = ctx.log
        self.product_ids: RefreshingValue[list[str]] = RefreshingValue(
            self._load_product_ids, ttl=ctx.config.cache_ttl, what=f"the product ids of {CATALOG}", log=ctx.log)
        ctx.on_close(self.product_ids.close)

    async def _load_product_ids(self) -> list[str]:
        products = await self.catalog.ListProducts(pb.Empty())
        return list(dict.fromkeys(p.id for p in products.products))

    async def ListRecommendations(self, request: pb.ListRecommendationsRequest,
                                  context: grpc.aio.ServicerContext):
        try:
            all_ids = await self.product_ids.get()
        except grpc.aio.AioRpcError as exc:
            self.log.warning("%s ListProducts failed: %s %s", CATALOG, exc.code().name, exc.details())
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"{CATALOG} is unavailable: ListProducts failed with {exc.code().name}: {exc.details()}",
            )
        ids = pick(all_ids, set(request.product_ids))
        return pb.ListRecommendationsResponse(product_ids=ids)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_RecommendationServiceServicer_to_server,
                               create=RecommendationService)
