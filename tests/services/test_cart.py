"""cartservice over real gRPC, against a real redis-server and against the in-memory store
(contract section 2.2): semantics, the original's Redis layout, interop, concurrency, failures."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.cart import CART_TTL_SECONDS, DEFINITION, RedisStore, store_from_env
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.config import ConfigError

PRODUCTS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O")


class Cart:
    """A running cartservice (+ its Redis, if any) and a client stub."""

    def __init__(self, svc: BackgroundService, redis_client=None) -> None:
        self.svc = svc
        self.redis = redis_client
        self.channel = grpc.insecure_channel(svc.address)
        self.stub = rpc.CartServiceStub(self.channel)

    def add(self, user: str, product: str, quantity: int) -> None:
        self.stub.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id=product, quantity=quantity)),
                          timeout=5)

    def get(self, user: str) -> pb.Cart:
        return self.stub.GetCart(pb.GetCartRequest(user_id=user), timeout=5)

    def empty(self, user: str) -> None:
        self.stub.EmptyCart(pb.EmptyCartRequest(user_id=user), timeout=5)


@pytest.fixture(params=["redis", "memory"])
def cart(request, redis_server):
    if request.param == "redis":
        server = redis_server()
        with BackgroundService(DEFINITION, {"REDIS_ADDR": server.address}) as svc, server.client() as client:
            c = Cart(svc, client)
            yield c
            c.channel.close()
    else:
        with BackgroundService(DEFINITION) as svc:
            c = Cart(svc)
            yield c
            c.channel.close()


def items(cart: pb.Cart) -> list[tuple[str, int]]:
    return [(i.product_id, i.quantity) for i in cart.items]


def test_unknown_user_gets_an_empty_cart_without_user_id(cart: Cart) -> None:
    got = cart.get("nobody")
    assert got == pb.Cart()
    assert got.user_id == ""


def test_add_merges_quantities_and_appends_new_products(cart: Cart) -> None:
    cart.add("alice", "OLJCESPC7Z", 1)
    cart.add("alice", "OLJCESPC7Z", 1)  # the original's test: same item twice -> quantity 2
    cart.add("alice", "66VCHSJNUP", 3)
    cart.add("alice", "OLJCESPC7Z", 5)
    got = cart.get("alice")
    assert got.user_id == "alice"
    assert items(got) == [("OLJCESPC7Z", 7), ("66VCHSJNUP", 3)]
    assert cart.get("bob") == pb.Cart()  # carts are per user


def test_empty_cart_keeps_an_empty_cart_and_later_adds_have_no_user_id(cart: Cart) -> None:
    cart.add("carol", "1YMWWN1N4O", 2)
    cart.empty("carol")
    assert cart.get("carol") == pb.Cart()
    # As the original: the emptied cart is an empty serialized Cart, so user_id stays "".
    cart.add("carol", "L9ECAV7KIM", 1)
    got = cart.get("carol")
    assert got.user_id == ""
    assert items(got) == [("L9ECAV7KIM", 1)]
    cart.empty("never-had-a-cart")  # emptying an unknown cart is fine
    assert cart.get("never-had-a-cart") == pb.Cart()


@pytest.mark.parametrize(("call", "field"), [
    (lambda s: s.AddItem(pb.AddItemRequest(item=pb.CartItem(product_id="X", quantity=1)), timeout=5), "user_id"),
    (lambda s: s.GetCart(pb.GetCartRequest(), timeout=5), "user_id"),
    (lambda s: s.EmptyCart(pb.EmptyCartRequest(), timeout=5), "user_id"),
    (lambda s: s.AddItem(pb.AddItemRequest(user_id="u"), timeout=5), "item"),
    (lambda s: s.AddItem(pb.AddItemRequest(user_id="u", item=pb.CartItem(quantity=1)), timeout=5),
     "item.product_id"),
    (lambda s: s.AddItem(pb.AddItemRequest(user_id="u", item=pb.CartItem(product_id="X")), timeout=5),
     "item.quantity"),
    (lambda s: s.AddItem(pb.AddItemRequest(user_id="u", item=pb.CartItem(product_id="X", quantity=-3)), timeout=5),
     "item.quantity"),
    (lambda s: s.AddItem(pb.AddItemRequest(user_id="u", item=pb.CartItem(product_id="NOSUCHID", quantity=1)),
                         timeout=5), "item.product_id"),
    (lambda s: s.AddItem(pb.AddItemRequest(user_id="u" * 1_000_000, item=pb.CartItem(product_id="OLJCESPC7Z",
                                                                                    quantity=1)), timeout=5),
     "user_id"),
    (lambda s: s.GetCart(pb.GetCartRequest(user_id="u" * 129), timeout=5), "user_id"),
], ids=["add-no-user", "get-no-user", "empty-no-user", "no-item", "no-product", "zero-qty", "negative-qty",
        "unknown-product", "megabyte-user-id", "long-user-id"])
def test_invalid_requests_are_invalid_argument_naming_the_field(cart: Cart, call, field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(cart.stub)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:"), err.value.details()
    assert cart.get("u") == pb.Cart()  # nothing was stored
    if cart.redis is not None:
        assert cart.redis.keys("*") == []


def test_quantity_beyond_the_cap_is_refused_and_the_cart_kept(cart: Cart) -> None:
    with pytest.raises(grpc.RpcError) as err:
        cart.add("dave", "9SIQT8TOJO", 2**31 - 2)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "item.quantity" in err.value.details() and "1000" in err.value.details()
    cart.add("dave", "9SIQT8TOJO", 999)
    with pytest.raises(grpc.RpcError) as err:
        cart.add("dave", "9SIQT8TOJO", 2)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert items(cart.get("dave")) == [("9SIQT8TOJO", 999)]
    cart.add("dave", "9SIQT8TOJO", 1)  # exactly the cap is fine
    assert items(cart.get("dave")) == [("9SIQT8TOJO", 1000)]


def test_concurrent_adds_for_one_user_lose_nothing(cart: Cart) -> None:
    products = ["OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM"]
    calls = [(products[i % len(products)], 1 + i % 3) for i in range(120)]
    futures = [cart.stub.AddItem.future(pb.AddItemRequest(
        user_id="eve", item=pb.CartItem(product_id=p, quantity=q)), timeout=30) for p, q in calls]
    for f in futures:
        f.result()
    expected: dict[str, int] = {}
    for p, q in calls:
        expected[p] = expected.get(p, 0) + q
    got = cart.get("eve")
    assert dict(items(got)) == expected
    assert len(got.items) == len(products)  # merged, no duplicate lines


def test_health_is_serving(cart: Cart) -> None:
    health = health_pb2_grpc.HealthStub(cart.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING


# ---------------------------------------------------------------- Redis only


@pytest.fixture
def redis_cart(redis_server):
    server = redis_server()
    with BackgroundService(DEFINITION, {"REDIS_ADDR": server.address}) as svc, server.client() as client:
        c = Cart(svc, client)
        c.server = server
        yield c
        c.channel.close()


def test_redis_layout_is_the_originals(redis_cart: Cart) -> None:
    redis_cart.add("frank", "2ZYFJ3GM2N", 2)
    redis_cart.add("frank", "0PUK6V6EV0", 1)
    r = redis_cart.redis
    assert r.keys("*") == [b"frank"]  # the user id itself, no prefix
    assert r.type("frank") == b"hash"
    assert 0 < r.ttl("frank") <= CART_TTL_SECONDS  # unlike the original: abandoned carts expire
    stored = r.hgetall("frank")
    assert set(stored) == {b"absexp", b"sldexp", b"data"}
    assert stored[b"absexp"] == b"-1" and stored[b"sldexp"] == b"-1"
    assert pb.Cart.FromString(stored[b"data"]) == pb.Cart(user_id="frank", items=[
        pb.CartItem(product_id="2ZYFJ3GM2N", quantity=2), pb.CartItem(product_id="0PUK6V6EV0", quantity=1)])

    redis_cart.empty("frank")
    stored = r.hgetall("frank")
    assert stored == {b"absexp": b"-1", b"sldexp": b"-1", b"data": b""}  # key kept, zero bytes of cart
    assert 0 < r.ttl("frank") <= CART_TTL_SECONDS


def test_reads_and_extends_a_cart_written_by_the_original(redis_cart: Cart) -> None:
    r = redis_cart.redis
    original = pb.Cart(user_id="grace", items=[pb.CartItem(product_id="LS4PSXUNUM", quantity=4)])
    # What the C# cartservice (IDistributedCache on StackExchange.Redis) writes.
    r.hset("grace", mapping={"absexp": "-1", "sldexp": "-1", "data": original.SerializeToString()})
    assert redis_cart.get("grace") == original
    redis_cart.add("grace", "LS4PSXUNUM", 1)
    redis_cart.add("grace", "6E92ZMYYFZ", 2)
    assert pb.Cart.FromString(r.hget("grace", "data")) == pb.Cart(user_id="grace", items=[
        pb.CartItem(product_id="LS4PSXUNUM", quantity=5), pb.CartItem(product_id="6E92ZMYYFZ", quantity=2)])
    # A hash without the data field is "no cart", as for the original.
    r.hset("henry", mapping={"absexp": "-1", "sldexp": "-1"})
    assert redis_cart.get("henry") == pb.Cart()
    redis_cart.add("henry", "OLJCESPC7Z", 1)
    assert redis_cart.get("henry").user_id == "henry"


def test_two_replicas_sharing_redis_lose_no_concurrent_adds(redis_cart: Cart) -> None:
    """WATCH/MULTI protects the read-modify-write across processes sharing one Redis too."""
    with BackgroundService(DEFINITION, {"REDIS_ADDR": redis_cart.server.address}) as other:
        second = Cart(other)
        stubs = [redis_cart.stub, second.stub]
        futures = [stubs[i % 2].AddItem.future(pb.AddItemRequest(
            user_id="ivan", item=pb.CartItem(product_id="OLJCESPC7Z", quantity=1)), timeout=30) for i in range(100)]
        for f in futures:
            f.result()
        second.channel.close()
    assert items(redis_cart.get("ivan")) == [("OLJCESPC7Z", 100)]


def test_corrupt_or_foreign_values_are_failed_precondition(redis_cart: Cart) -> None:
    r = redis_cart.redis
    r.hset("judy", mapping={"absexp": "-1", "sldexp": "-1", "data": b"\xff\xff\xff not a protobuf"})
    r.set("kate", "a plain string, not a hash")
    for user in ("judy", "kate"):
        for call in (lambda u: redis_cart.get(u), lambda u: redis_cart.add(u, "OLJCESPC7Z", 1)):
            with pytest.raises(grpc.RpcError) as err:
                call(user)
            assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details().startswith("Can't access cart storage. ")


def test_redis_down_is_failed_precondition_and_recovers(redis_server, unused_port: int) -> None:
    """Redis not up at start: the service still starts (SERVING), calls fail with the
    contract's FAILED_PRECONDITION, and work once Redis is there."""
    with BackgroundService(DEFINITION, {"REDIS_ADDR": f"127.0.0.1:{unused_port}"}) as svc:
        c = Cart(svc)
        health = health_pb2_grpc.HealthStub(c.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        for call in (lambda: c.get("liam"), lambda: c.add("liam", "OLJCESPC7Z", 1), lambda: c.empty("liam")):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details().startswith("Can't access cart storage. ")
        server = redis_server(unused_port)
        c.add("liam", "OLJCESPC7Z", 1)
        assert items(c.get("liam")) == [("OLJCESPC7Z", 1)]
        server.stop()  # and down again mid-life
        with pytest.raises(grpc.RpcError) as err:
            c.get("liam")
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        c.channel.close()


def test_store_selection_is_logged_and_bad_addresses_are_named(caplog, redis_server) -> None:
    server = redis_server()
    with caplog.at_level(logging.INFO, logger="cartservice"):
        with BackgroundService(DEFINITION, {"REDIS_ADDR": server.address}):
            pass
        with BackgroundService(DEFINITION):
            pass
    stores = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cart store: ")]
    assert stores[0] == f"cart store: redis at {server.address}"
    assert stores[1].startswith("cart store: in-memory")

    assert isinstance(store_from_env({"REDIS_ADDR": "redis-cart:6379"}), RedisStore)
    for bad in ("redis-cart", "redis-cart:http", "redis://redis-cart:6379", "redis-cart:70000"):
        with pytest.raises(ConfigError, match="REDIS_ADDR"):
            store_from_env({"REDIS_ADDR": bad})


def test_concurrent_adds_from_many_threads(cart: Cart) -> None:
    """The same through independent channels (separate HTTP/2 connections)."""
    def worker(n: int) -> None:
        with grpc.insecure_channel(cart.svc.address) as ch:
            stub = rpc.CartServiceStub(ch)
            for _ in range(10):
                product = PRODUCTS[n % 3]
                stub.AddItem(pb.AddItemRequest(user_id="mia", item=pb.CartItem(product_id=product, quantity=1)),
                             timeout=30)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    got = dict(items(cart.get("mia")))
    assert got == {PRODUCTS[0]: 30, PRODUCTS[1]: 30, PRODUCTS[2]: 20}


def test_a_cart_holds_at_most_fifty_products_so_it_stays_small_and_readable() -> None:
    """Regression (issue 15): carts had no bound, and one over 4 MB could no longer be read."""
    from boutique.cart import MAX_LINES, CartFull, merge_item

    stored = None
    for i in range(MAX_LINES):
        stored = merge_item(stored, "u", pb.CartItem(product_id=f"P{i:03d}", quantity=1000))
    assert len(pb.Cart.FromString(stored).items) == MAX_LINES
    assert len(stored) < 4096  # far below gRPC's 4 MB message limit
    with pytest.raises(CartFull, match="at most 50 different products"):
        merge_item(stored, "u", pb.CartItem(product_id="P999", quantity=1))
