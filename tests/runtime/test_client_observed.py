"""Outgoing calls through boutique.runtime.client (ObservedChannel, no grpc.aio interceptor): the
caller's metadata and the request id both arrive, the callee's deadline caps the caller's, the
call starts when it is made, and every outcome is counted in the client metrics."""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import REGISTRY

from boutique import service_catalog as catalog_mod
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.client import Clients, ObservedChannel

CAT = catalog_mod.default()


class RecordingAds(rpc.AdServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.time_remaining: list[float | None] = []
        self.release = asyncio.Event()
        self.hold = False

    async def GetAds(self, request, context):  # type: ignore[override]
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        self.time_remaining.append(context.time_remaining())
        if self.hold:
            await self.release.wait()
        return pb.AdResponse(ads=[pb.Ad(redirect_url="/product/X", text="x")])


async def _serve(servicer: RecordingAds) -> tuple[grpc.aio.Server, Clients]:
    server = grpc.aio.server()
    rpc.add_AdServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, Clients(CAT, {CAT.get("adservice").addr_env: f"127.0.0.1:{port}"}, None)


def _count(code: str) -> float:
    return REGISTRY.get_sample_value("grpc_client_handled_total", {
        "grpc_service": "hipstershop.AdService", "grpc_method": "GetAds", "grpc_code": code}) or 0.0


async def test_caller_metadata_and_request_id_both_arrive() -> None:
    ads = RecordingAds()
    server, clients = await _serve(ads)
    token = logs.request_id.set("rid-123")
    try:
        stub = clients.stub("adservice", rpc.AdServiceStub)
        await stub.GetAds(pb.AdRequest(), metadata=(("x-caller", "frontend"),))
        await stub.GetAds(pb.AdRequest(), metadata=grpc.aio.Metadata(("x-caller", "again")))
        await stub.GetAds(pb.AdRequest())
    finally:
        logs.request_id.reset(token)
        await clients.close()
        await server.stop(0)
    assert [(m.get("x-caller"), m.get("x-request-id")) for m in ads.metadata] == [
        ("frontend", "rid-123"), ("again", "rid-123"), (None, "rid-123")]


async def test_the_callee_timeout_caps_a_longer_caller_deadline_but_not_a_shorter_one() -> None:
    ads = RecordingAds()
    server, clients = await _serve(ads)
    limit = CAT.get("adservice").timeout
    try:
        stub = clients.stub("adservice", rpc.AdServiceStub)
        await stub.GetAds(pb.AdRequest(), timeout=limit * 20)
        await stub.GetAds(pb.AdRequest(), timeout=limit / 4)
    finally:
        await clients.close()
        await server.stop(0)
    capped, shorter = ads.time_remaining
    assert capped is not None and capped <= limit + 0.05
    assert shorter is not None and shorter <= limit / 4 + 0.05


async def test_a_call_starts_when_made_and_a_cancelled_one_is_counted() -> None:
    ads = RecordingAds()
    ads.hold = True
    server, clients = await _serve(ads)
    cancelled_before, ok_before = _count("CANCELLED"), _count("OK")
    try:
        stub = clients.stub("adservice", rpc.AdServiceStub)
        first = stub.GetAds(pb.AdRequest(), timeout=5)  # not awaited yet: already on its way
        for _ in range(200):
            if ads.metadata:
                break
            await asyncio.sleep(0.01)
        assert len(ads.metadata) == 1
        task = asyncio.ensure_future(stub.GetAds(pb.AdRequest(), timeout=5))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        ads.release.set()
        response = await first
    finally:
        await clients.close()
        await server.stop(0)
    assert response.ads[0].redirect_url == "/product/X"
    assert _count("CANCELLED") == cancelled_before + 1
    assert _count("OK") == ok_before + 1


async def test_the_channel_passes_everything_else_through() -> None:
    ads = RecordingAds()
    server, clients = await _serve(ads)
    try:
        channel = clients.channel("adservice")
        assert isinstance(channel, ObservedChannel)
        await asyncio.wait_for(channel.channel_ready(), 5)  # grpc.aio.Channel's own method
        assert channel.get_state() is grpc.ChannelConnectivity.READY
    finally:
        await clients.close()
        await server.stop(0)
