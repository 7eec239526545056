"""productcatalogservice: the shop's nine products (contract section 2.1).

The catalog is services/boutique/data/products.json in proto-JSON (camelCase)
form, parsed with google.protobuf.json_format into a ListProductsResponse once
at start-up. ListProducts returns it in file order; GetProduct matches the id
exactly; SearchProducts is a case-insensitive substring match on name or
description, in file order (an empty query matches everything).

EXTRA_LATENCY (a Go duration such as `5.5s`, `100ms` or `1m30s`) is slept at the
start of every RPC; an invalid value stops start-up with a ConfigError naming
the variable.

Deliberately left out: the original's SIGUSR1/SIGUSR2 "reload the catalog on
every request" switch. It is a demo of a performance bug, not behaviour
callers rely on. Also deliberately different: an empty id in GetProduct is
INVALID_ARGUMENT (the original answers NOT_FOUND), and a negative
EXTRA_LATENCY is rejected (Go would accept it and not sleep).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from importlib import resources

import grpc
from google.protobuf import json_format

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.config import ConfigError
from boutique.runtime.server import ServiceContext, ServiceDefinition

MAX_ECHOED_ID = 64

# Go's time.ParseDuration units, in seconds.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_COMPONENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str, name: str = "EXTRA_LATENCY") -> float:
    """Seconds in a Go duration string ('5.5s', '100ms', '1h2m3s', '0').

    Raises ConfigError naming `name` when the text is not a duration or is negative.
    """
    raw = text.strip()
    body = raw[1:] if raw[:1] in "+-" else raw
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        m = _COMPONENT.match(body, pos)
        if not m:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ConfigError(f"{name}={text!r} is not a duration (use a Go duration such as 5.5s, 100ms or 1m30s)")
    if raw.startswith("-") and total > 0:
        raise ConfigError(f"{name}={text!r} must not be negative")
    return total


def extra_latency(env: Mapping[str, str]) -> float:
    raw = env.get("EXTRA_LATENCY", "").strip()
    return parse_go_duration(raw) if raw else 0.0


def load_products() -> list[pb.Product]:
    """The catalog from data/products.json, in file order."""
    text = resources.files("boutique.data").joinpath("products.json").read_text(encoding="utf-8")
    parsed = json_format.Parse(text, pb.ListProductsResponse())
    return list(parsed.products)


class ProductCatalogService(rpc.ProductCatalogServiceServicer):
    def __init__(self, products: list[pb.Product], latency: float = 0.0) -> None:
        self.latency = latency
        self._all = pb.ListProductsResponse(products=products)
        self._by_id = {p.id: p for p in products}
        # (product, lower-cased name, lower-cased description) for SearchProducts
        self._search = [(p, p.name.lower(), p.description.lower()) for p in products]

    async def _delay(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)

    async def ListProducts(self, request: pb.Empty, context: grpc.aio.ServicerContext):
        await self._delay()
        return self._all

    async def GetProduct(self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext):
        await self._delay()
        if not request.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: a product ID is required")
        product = self._by_id.get(request.id)
        if product is None:
            # The id is echoed only up to MAX_ECHOED_ID characters: a 16 KB id would not fit
            # gRPC's metadata limit and the caller would see INTERNAL instead of NOT_FOUND.
            shown = request.id if len(request.id) <= MAX_ECHOED_ID else f"{request.id[:MAX_ECHOED_ID]}..."
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product with ID {shown}")
        return product

    async def SearchProducts(self, request: pb.SearchProductsRequest, context: grpc.aio.ServicerContext):
        await self._delay()
        query = request.query.lower()
        results = [p for p, name, desc in self._search if query in name or query in desc]
        return pb.SearchProductsResponse(results=results)


def create(ctx: ServiceContext) -> ProductCatalogService:
    latency = extra_latency(ctx.env)
    products = load_products()
    ctx.log.info("catalog loaded: %d products, extra latency %.3fs", len(products), latency)
    return ProductCatalogService(products, latency)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_ProductCatalogServiceServicer_to_server,
                               create=create)
