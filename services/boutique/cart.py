"""cartservice: shopping carts per user, in Redis or in memory (contract section 2.2).

Store selection (logged at start-up):
  REDIS_ADDR=host:port  Redis, with the original cart's layout so that this service and the
                        original C# cartservice can share one Redis:
                          key   <user_id>            (no prefix)
                          value HASH {absexp: "-1", sldexp: "-1", data: <serialized hipstershop.Cart>}
                          no TTL; reads are HMGET key absexp sldexp data; a missing key or a
                          missing data field means "no cart".
  (unset)               an in-process store with the same semantics (one process only: with
                        BOUTIQUE_WORKERS > 1 every worker has its own carts).

Semantics (as the original): AddItem creates Cart{user_id, [item]} for a new user, adds the
quantity to an existing line with the same product_id, else appends; the whole cart is written
back. GetCart of an unknown user is Cart{} (user_id ""). EmptyCart stores an empty serialized
Cart (zero bytes in `data`); it does not delete the key, so the cart's user_id is "" afterwards.

Concurrency: AddItem is a read-modify-write. In Redis it runs as an optimistic transaction
(WATCH key; HMGET; MULTI; HSET; EXEC, retried when another writer touched the key in between),
so concurrent AddItems for one user never lose an update, also against an original cartservice
writing the same key. (A Lua script would need a protobuf codec in Lua; WATCH/MULTI keeps the
cart logic in Python.) The in-memory store mutates without an await in between, which is atomic
on the event loop.

Deliberate differences from the original (it accepts all of these, or fails with UNKNOWN):
  * empty user_id                  -> INVALID_ARGUMENT
  * AddItem without item           -> INVALID_ARGUMENT (the original dereferences null: UNKNOWN)
  * empty item.product_id          -> INVALID_ARGUMENT
  * item.quantity < 1              -> INVALID_ARGUMENT (the original stores 0 and negative amounts)
  * a line that would exceed int32 -> FAILED_PRECONDITION (the original overflows)
  * a user_id over MAX_USER_ID characters, or a product_id that is not in the catalog's
    data file                      -> INVALID_ARGUMENT naming the field
  * a cart holds at most MAX_LINES products and MAX_LINE_QUANTITY of each; more is
    RESOURCE_EXHAUSTED (so no cart grows past a few KB and every cart stays readable)
  * Redis keys get a TTL of CART_TTL_SECONDS, renewed by every AddItem and EmptyCart (the
    original sets none), so abandoned carts do not fill Redis
Storage failures (Redis unreachable, a corrupt value) are FAILED_PRECONDITION
"Can't access cart storage. <error>", as in the contract.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Protocol

import grpc
import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, WatchError

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.config import host_port
from boutique.runtime.server import ServiceContext, ServiceDefinition

INT32_MAX = 2**31 - 1
HASH_FIELDS = ("absexp", "sldexp", "data")
NO_EXPIRY = b"-1"
# Redis timeouts: well inside callers' per-try timeout for the cart (catalog: 800ms).
REDIS_CONNECT_TIMEOUT = 0.3
REDIS_SOCKET_TIMEOUT = 0.5
# Optimistic AddItem transaction: attempts before giving up under extreme contention.
MAX_TRANSACTION_ATTEMPTS = 200
# What a cart may hold, and how long an untouched cart lives (the session cookie lives 48 h).
MAX_USER_ID = 128
MAX_LINES = 50
MAX_LINE_QUANTITY = 1000
CART_TTL_SECONDS = 7 * 86400


def known_product_ids() -> frozenset[str]:
    """The ids of the catalog's products (the same data file productcatalogservice serves)."""
    from boutique.productcatalog import load_products

    return frozenset(p.id for p in load_products())


class StorageError(Exception):
    """The store cannot be read or written; reported as FAILED_PRECONDITION."""


class QuantityOverflow(Exception):
    """Adding the item would push a cart line past the int32 range."""


class CartFull(Exception):
    """Adding the item would exceed MAX_LINES lines or MAX_LINE_QUANTITY of one product."""


def merge_item(stored: bytes | None, user_id: str, item: pb.CartItem) -> bytes:
    """The serialized cart after adding `item` to the stored cart (None = no cart)."""
    if item.quantity > MAX_LINE_QUANTITY:
        raise CartFull(f"item.quantity: a cart holds at most {MAX_LINE_QUANTITY} of one product, "
                       f"got {item.quantity}")
    if stored is None:
        cart = pb.Cart(user_id=user_id, items=[pb.CartItem(product_id=item.product_id, quantity=item.quantity)])
        return cart.SerializeToString()
    cart = parse_cart(stored)
    for line in cart.items:
        if line.product_id == item.product_id:
            total = line.quantity + item.quantity
            if total > INT32_MAX:
                raise QuantityOverflow(
                    f"item.quantity: the cart would hold {total} of {item.product_id!r}, more than {INT32_MAX}")
            if total > MAX_LINE_QUANTITY:
                raise CartFull(f"item.quantity: a cart holds at most {MAX_LINE_QUANTITY} of one product; "
                               f"it has {line.quantity} of {item.product_id!r}")
            line.quantity = total
            break
    else:
        if len(cart.items) >= MAX_LINES:
            raise CartFull(f"item: a cart holds at most {MAX_LINES} different products")
        cart.items.add(product_id=item.product_id, quantity=item.quantity)
    return cart.SerializeToString()


def parse_cart(data: bytes) -> pb.Cart:
    try:
        return pb.Cart.FromString(data)
    except DecodeError as exc:
        raise StorageError(f"the stored cart is not a serialized hipstershop.Cart: {exc}") from None


class CartStore(Protocol):
    description: str

    async def get(self, user_id: str) -> bytes | None: ...

    async def add_item(self, user_id: str, item: pb.CartItem) -> None: ...

    async def empty(self, user_id: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Carts in a dict of serialized Carts: the same semantics as Redis, one process only."""

    description = "in-memory (REDIS_ADDR not set; carts are lost on restart and not shared between processes)"

    def __init__(self) -> None:
        self._carts: dict[str, bytes] = {}

    async def get(self, user_id: str) -> bytes | None:
        return self._carts.get(user_id)

    async def add_item(self, user_id: str, item: pb.CartItem) -> None:
        # No await between read and write: atomic on the event loop.
        self._carts[user_id] = merge_item(self._carts.get(user_id), user_id, item)

    async def empty(self, user_id: str) -> None:
        self._carts[user_id] = pb.Cart().SerializeToString()  # b"": like the original, keep the key

    async def close(self) -> None:
        self._carts.clear()


class RedisStore:
    """Carts in Redis hashes, in the original cartservice's layout (see the module doc)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.description = f"redis at {address}"
        self.redis = aioredis.Redis(
            host=host.strip("[]"),
            port=int(port),
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            # One quick retry covers a connection dropped by a Redis restart; the default
            # (10 retries with backoff) would outlast every caller's deadline.
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        )

    @staticmethod
    def _data(values: list[bytes | None]) -> bytes | None:
        return values[2]  # HMGET order: absexp, sldexp, data

    async def get(self, user_id: str) -> bytes | None:
        try:
            values = await self.redis.hmget(user_id, HASH_FIELDS)
        except RedisError as exc:
            raise StorageError(str(exc) or type(exc).__name__) from None
        return self._data(values)

    def _record(self, data: bytes) -> dict[str, bytes]:
        return {"absexp": NO_EXPIRY, "sldexp": NO_EXPIRY, "data": data}

    ttl = CART_TTL_SECONDS

    async def add_item(self, user_id: str, item: pb.CartItem) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for attempt in range(MAX_TRANSACTION_ATTEMPTS):
                    try:
                        await pipe.watch(user_id)
                        stored = self._data(await pipe.hmget(user_id, HASH_FIELDS))
                        updated = merge_item(stored, user_id, item)
                        pipe.multi()
                        pipe.hset(user_id, mapping=self._record(updated))
                        pipe.expire(user_id, self.ttl)
                        await pipe.execute()
                        return
                    except WatchError:
                        # Someone else wrote this cart between our read and write: re-read.
                        await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
                raise StorageError(f"cart of {user_id!r} changed concurrently {MAX_TRANSACTION_ATTEMPTS} times; "
                                   "gave up adding the item")
        except RedisError as exc:
            raise StorageError(str(exc) or type(exc).__name__) from None

    async def empty(self, user_id: str) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(user_id, mapping=self._record(pb.Cart().SerializeToString()))
                pipe.expire(user_id, self.ttl)
                await pipe.execute()
        except RedisError as exc:
            raise StorageError(str(exc) or type(exc).__name__) from None

    async def ping(self) -> None:
        try:
            await self.redis.ping()
        except RedisError as exc:
            raise StorageError(str(exc) or type(exc).__name__) from None

    async def close(self) -> None:
        await self.redis.aclose()


def store_from_env(env: Mapping[str, str]) -> CartStore:
    """REDIS_ADDR (host:port) selects Redis; without it the in-memory store. A malformed
    REDIS_ADDR is a ConfigError naming the variable."""
    if env.get("REDIS_ADDR", "").strip():
        return RedisStore(host_port("REDIS_ADDR", env, purpose="the cart's Redis"))
    return MemoryStore()


def _storage_message(exc: StorageError) -> str:
    return f"Can't access cart storage. {exc}"


class CartService(rpc.CartServiceServicer):
    def __init__(self, store: CartStore, log, products: frozenset[str] | None = None) -> None:
        self.store = store
        self.log = log
        self.products = known_product_ids() if products is None else products

    async def _user_id(self, user_id: str, context: grpc.aio.ServicerContext) -> None:
        # Deliberate: the original accepts an empty user_id and keys a cart on "".
        if not user_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id: must not be empty")
        if len(user_id) > MAX_USER_ID:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"user_id: at most {MAX_USER_ID} characters, got {len(user_id)}")

    async def AddItem(self, request: pb.AddItemRequest, context: grpc.aio.ServicerContext):
        await self._user_id(request.user_id, context)
        # Deliberate: the original fails with UNKNOWN without item and stores any quantity.
        if not request.HasField("item"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "item: is missing")
        item = request.item
        if not item.product_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "item.product_id: must not be empty")
        if item.quantity < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"item.quantity: must be at least 1, got {item.quantity}")
        if item.product_id not in self.products:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"item.product_id: {item.product_id[:64]!r} is not a product of the catalog")
        try:
            await self.store.add_item(request.user_id, item)
        except CartFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except QuantityOverflow as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except StorageError as exc:
            await self._storage_failed(exc, context)
        return pb.Empty()

    async def GetCart(self, request: pb.GetCartRequest, context: grpc.aio.ServicerContext):
        await self._user_id(request.user_id, context)
        try:
            stored = await self.store.get(request.user_id)
            # Like the original: an unknown user gets Cart{} whose user_id is "".
            return pb.Cart() if stored is None else parse_cart(stored)
        except StorageError as exc:
            await self._storage_failed(exc, context)

    async def EmptyCart(self, request: pb.EmptyCartRequest, context: grpc.aio.ServicerContext):
        await self._user_id(request.user_id, context)
        try:
            await self.store.empty(request.user_id)
        except StorageError as exc:
            await self._storage_failed(exc, context)
        return pb.Empty()

    async def _storage_failed(self, exc: StorageError, context: grpc.aio.ServicerContext) -> None:
        self.log.warning("cart storage failed: %s", exc, extra=logs.fields(store=self.store.description))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, _storage_message(exc))


async def create(ctx: ServiceContext) -> CartService:
    store = store_from_env(ctx.env)
    ctx.on_close(store.close)
    ctx.log.info("cart store: %s", store.description, extra=logs.fields(store=store.description))
    if isinstance(store, RedisStore):
        if ctx.tracing:
            ctx.tracing.instrument_redis(store.redis)  # a span per Redis command / transaction
        # Like the original, a Redis that is not up yet does not stop the service: calls
        # fail with FAILED_PRECONDITION until it is reachable. Say so early in the log.
        try:
            await store.ping()
        except StorageError as exc:
            ctx.log.warning("redis at %s is not reachable yet: %s", store.address, exc)
    return CartService(store, ctx.log)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_CartServiceServicer_to_server, create=create)
