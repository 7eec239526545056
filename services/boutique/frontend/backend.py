"""The frontend's calls to the backend services.

Every call has a deadline: required calls use the callee's catalog timeout (set
by the runtime's channel service config); optional data (ads, recommendations)
has a short deadline of its own and degrades to "not shown" on any error.

The product list and the supported currencies change only with a new catalog or rates file:
they are kept in memory (boutique.runtime.cache.RefreshingValue) and refreshed in the background
once BOUTIQUE_CACHE_TTL_SECONDS old (default 30; never served 2x that old; 0 = a call per page).
Converted prices are kept per (amount, currency) for the same time (TtlMemo): Convert is a pure
function of its request and the currency service's rate table, and a home page would otherwise
convert eight prices on every view.

`Backend.all(*coroutines)` is the fan-out: with FRONTEND_FANOUT=concurrent the
independent calls of a page run together (asyncio.gather); with sequential they
run one after another, which exists only to measure what the fan-out buys.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.cache import RefreshingValue, TtlMemo
from boutique.runtime.client import Clients, service_config
from boutique.runtime.config import TLSFiles, cache_ttl
from boutique.service_catalog import Catalog, Service

T = TypeVar("T")
log = logging.getLogger("frontend.backend")


class BackendError(Exception):
    """A required backend call failed; the page cannot be shown."""

    def __init__(self, what: str, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(f"{what} failed: {code.name}: {detail}")
        self.what, self.code, self.detail = what, code, detail


def _describe(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or ""
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
    return grpc.StatusCode.INTERNAL, type(exc).__name__


class FrontendClients(Clients):
    """The runtime's Clients (retry policy for idempotent methods, the callee's catalog
    timeout as the default deadline, request-id propagation, client metrics), with
    faster reconnects: a backend that restarts is found again within about two
    seconds instead of gRPC's default backoff of up to two minutes, so degraded
    pages (no ads, no recommendations) recover quickly. Backend also passes every
    call's deadline explicitly (grpcio applies service-config timeouts early,
    grpc/grpc#34547, #40633)."""

    def __init__(self, catalog: Catalog, env: Mapping[str, str], tls: TLSFiles | None,
                 interceptors: Sequence[Any] = ()) -> None:
        me = catalog.by_module("frontend")  # a stub of anything but its catalog callees is refused
        super().__init__(catalog, env, tls, interceptors, caller=me.name, allowed=me.callees)
        self.timeouts = {name: catalog.get(name).timeout for name in catalog.services}
        self.caches: list[RefreshingValue[Any]] = []  # closed before the channels

    async def close(self) -> None:
        for cache in self.caches:
            await cache.close()
        await super().close()

    def channel_options(self, svc: Service) -> list[tuple[str, Any]]:
        config = service_config(svc)
        for method in config["methodConfig"]:
            method.pop("timeout", None)  # deadlines are set per call
        return [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000)]


class Backend:
    def __init__(self, clients: FrontendClients, *, concurrent: bool, ad_timeout: float,
                 recommendation_timeout: float):
        self.concurrent = concurrent
        self.ad_timeout = ad_timeout
        self.recommendation_timeout = recommendation_timeout
        t = clients.timeouts  # each callee's catalog timeout: the deadline of required calls
        self.t_catalog, self.t_currency, self.t_cart = (t["productcatalogservice"], t["currencyservice"],
                                                        t["cartservice"])
        self.t_shipping, self.t_checkout = t["shippingservice"], t["checkoutservice"]
        self.recommendation_timeout = min(recommendation_timeout, t["recommendationservice"])
        self.ad_timeout = min(ad_timeout, t["adservice"])
        self.products = clients.stub("productcatalogservice", rpc.ProductCatalogServiceStub)
        self.currency = clients.stub("currencyservice", rpc.CurrencyServiceStub)
        self.cart = clients.stub("cartservice", rpc.CartServiceStub)
        self.recommendations = clients.stub("recommendationservice", rpc.RecommendationServiceStub)
        self.shipping = clients.stub("shippingservice", rpc.ShippingServiceStub)
        self.checkout = clients.stub("checkoutservice", rpc.CheckoutServiceStub)
        self.ads = clients.stub("adservice", rpc.AdServiceStub)
        ttl = cache_ttl(clients.env)
        self._currencies: RefreshingValue[list[str]] = RefreshingValue(
            self._load_currencies, ttl, what="the supported currencies", log=log)
        self._products: RefreshingValue[list[pb.Product]] = RefreshingValue(
            self._load_products, ttl, what="the product list", log=log)
        clients.caches += [self._currencies, self._products]
        self._converted: TtlMemo[tuple[str, int, int, str], pb.Money] = TtlMemo(ttl)

    # -- fan-out -----------------------------------------------------------------------------
    async def all(self, *aws: Awaitable[Any]) -> list[Any]:
        """Results of independent calls in order; the first failure is raised after all ended."""
        if not self.concurrent:
            return [await aw for aw in aws]
        results = await asyncio.gather(*aws, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    async def _required(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            code, detail = _describe(exc)
            raise BackendError(what, code, detail) from None

    async def _optional(self, what: str, call: Awaitable[T]) -> T | None:
        try:
            return await call
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            code, detail = _describe(exc)
            log.warning("optional call %s failed: %s", what, code.name,
                        extra=logs.fields(call=what, status=code.name, detail=detail))
            return None

    # -- calls -------------------------------------------------------------------------------
    async def supported_currencies(self) -> list[str]:
        return list(await self._currencies.get())

    async def _load_currencies(self) -> list[str]:
        call = self.currency.GetSupportedCurrencies(pb.Empty(), timeout=self.t_currency)
        r = await self._required("currency GetSupportedCurrencies", call)
        return list(r.currency_codes)

    async def list_products(self) -> list[pb.Product]:
        """The catalog's products (shared: callers read them, never change them)."""
        return list(await self._products.get())

    async def _load_products(self) -> list[pb.Product]:
        call = self.products.ListProducts(pb.Empty(), timeout=self.t_catalog)
        r = await self._required("product catalog ListProducts", call)
        return list(r.products)

    async def get_product(self, product_id: str) -> pb.Product:
        return await self._required("product catalog GetProduct",
                                    self.products.GetProduct(pb.GetProductRequest(id=product_id),
                                                             timeout=self.t_catalog))

    async def get_product_optional(self, product_id: str) -> pb.Product | None:
        return await self._optional("product catalog GetProduct",
                                    self.products.GetProduct(pb.GetProductRequest(id=product_id),
                                                             timeout=self.recommendation_timeout))

    async def cart_items(self, user_id: str) -> list[pb.CartItem]:
        call = self.cart.GetCart(pb.GetCartRequest(user_id=user_id), timeout=self.t_cart)
        r = await self._required("cart GetCart", call)
        return list(r.items)

    async def add_item(self, user_id: str, product_id: str, quantity: int) -> None:
        item = pb.CartItem(product_id=product_id, quantity=quantity)
        await self._required("cart AddItem", self.cart.AddItem(pb.AddItemRequest(user_id=user_id, item=item),
                                                                  timeout=self.t_cart))

    async def empty_cart(self, user_id: str) -> None:
        await self._required("cart EmptyCart", self.cart.EmptyCart(pb.EmptyCartRequest(user_id=user_id),
                                                                      timeout=self.t_cart))

    async def convert(self, money: pb.Money, to_code: str) -> pb.Money:
        """`money` in `to_code` (shared: callers read it, never change it)."""
        async def load() -> pb.Money:
            req = pb.CurrencyConversionRequest(to_code=to_code)
            getattr(req, "from").CopyFrom(money)
            return await self._required("currency Convert", self.currency.Convert(req, timeout=self.t_currency))

        return await self._converted.get((money.currency_code, money.units, money.nanos, to_code), load)

    async def shipping_quote(self, items: Sequence[pb.CartItem]) -> pb.Money:
        # The original sends no address (the quote ignores it); an empty one is sent so
        # a strict shipping implementation has nothing to dereference.
        req = pb.GetQuoteRequest(address=pb.Address(), items=list(items))
        r = await self._required("shipping GetQuote", self.shipping.GetQuote(req, timeout=self.t_shipping))
        return r.cost_usd

    async def recommendations_for(self, user_id: str, product_ids: Sequence[str]) -> list[str] | None:
        req = pb.ListRecommendationsRequest(user_id=user_id, product_ids=list(product_ids))
        r = await self._optional("recommendation ListRecommendations",
                                 self.recommendations.ListRecommendations(req, timeout=self.recommendation_timeout))
        return None if r is None else list(r.product_ids)

    async def ads_for(self, context_keys: Sequence[str]) -> list[pb.Ad]:
        r = await self._optional("ad GetAds", self.ads.GetAds(pb.AdRequest(context_keys=list(context_keys)),
                                                              timeout=self.ad_timeout))
        return [] if r is None else list(r.ads)

    async def place_order(self, req: pb.PlaceOrderRequest, order_token: str = "") -> pb.OrderResult:
        """PlaceOrder; `order_token` (the checkout form's) goes along as idempotency-key metadata,
        so a resubmitted form never charges twice (checkout and payment keep the attempt)."""
        metadata = (("idempotency-key", f"{req.user_id}/{order_token}"),) if order_token else None
        r = await self._required("checkout PlaceOrder",
                                 self.checkout.PlaceOrder(req, timeout=self.t_checkout, metadata=metadata))
        return r.order
