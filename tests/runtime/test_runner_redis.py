"""The local runner's Redis keeps carts across a restart (issue 15): it runs with an append-only
file in the shop's work folder (beside the log folder), as the cluster's Redis does."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from testkit import require_tool

from boutique.dev.shop import start_on_free_offset
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

pytestmark = [pytest.mark.slow]


def _cart(channel: grpc.Channel, user: str) -> list[tuple[str, int]]:
    got = rpc.CartServiceStub(channel).GetCart(pb.GetCartRequest(user_id=user), timeout=10)
    return [(i.product_id, i.quantity) for i in got.items]


@pytest.mark.parametrize("kill", [False, True], ids=["SIGTERM", "SIGKILL"])
def test_carts_survive_a_redis_restart(tmp_path: Path, kill: bool) -> None:
    require_tool("redis-server", "the cart keeps carts in Redis")
    logs = tmp_path / "logs"
    with start_on_free_offset(redis=True, services=["cartservice"], log_dir=logs) as shop, \
            shop.channel("cartservice") as ch:
        rpc.CartServiceStub(ch).AddItem(pb.AddItemRequest(
            user_id="ruth", item=pb.CartItem(product_id="OLJCESPC7Z", quantity=3)), timeout=10)
        if kill:
            time.sleep(1.5)  # appendfsync everysec: a write older than a second is on disk
        shop.restart_redis(kill=kill)
        assert _cart(ch, "ruth") == [("OLJCESPC7Z", 3)]
    assert any((tmp_path / "redis").rglob("*.aof")), "the append-only file lives in the work folder"
