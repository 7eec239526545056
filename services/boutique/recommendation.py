"""recommendationservice: up to five other products (contract section 2.8).

ListRecommendations asks productcatalogservice for every product, drops the
ids in the request and returns up to MAX_RECOMMENDATIONS distinct ids from
the rest, in random order (empty when everything is excluded). user_id is
ignored, as in the original.

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

    async def ListRecommendations(self, request: pb.ListRecommendationsRequest,
                                  context: grpc.aio.ServicerContext):
        try:
            products = await self.catalog.ListProducts(pb.Empty())
        except grpc.aio.AioRpcError as exc:
            self.log.warning("%s ListProducts failed: %s %s", CATALOG, exc.code().name, exc.details())
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"{CATALOG} is unavailable: ListProducts failed with {exc.code().name}: {exc.details()}",
            )
        ids = pick([p.id for p in products.products], set(request.product_ids))
        return pb.ListRecommendationsResponse(product_ids=ids)


DEFINITION = ServiceDefinition(
    name="recommendationservice",
    grpc_service="hipstershop.RecommendationService",
    default_port=8080,
    add_servicer=rpc.add_RecommendationServiceServicer_to_server,
    create=RecommendationService,
    callees=(CATALOG,),
)
