"""The service benchmark's Python load client (used when ghz is not available).

N client processes (grpc.aio, pre-serialised requests, responses left as bytes) share a job's
calls in flight. Latency is measured client-side, from just before the call to its completion,
for calls started inside the measuring window; each process also reports its own CPU time in
that window. PlaceOrder jobs use carts the processes filled beforehand ("fill" jobs).
"""

from __future__ import annotations

import array
import asyncio
import multiprocessing as mp
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection

from boutique.proto import demo_pb2 as pb

CART_LINES = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O")
ADDRESS = pb.Address(street_address="1600 Amphitheatre Parkway", city="Mountain View", state="CA",
                     country="United States", zip_code=94043)


def card() -> pb.CreditCardInfo:
    return pb.CreditCardInfo(credit_card_number="4432801561520454", credit_card_cvv=672,
                             credit_card_expiration_year=time.gmtime().tm_year + 1,
                             credit_card_expiration_month=1)


@dataclass
class Job:
    kind: str  # "unary" | "fill" (carts for orders) | "order"
    target: str
    path: str
    payload: bytes
    concurrency: int
    start_at: float  # time.monotonic() (CLOCK_MONOTONIC: the same clock in every process)
    warmup: float
    duration: float
    cart_target: str = ""
    prefill: int = 0  # orders: carts to fill before start_at


@dataclass
class Part:
    latencies: bytes  # array('d') of seconds
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    ended_early: float = 0.0  # orders: when the pre-filled carts ran out (0 = not)
    cpu_seconds: float = 0.0  # this client process's CPU time inside the measuring window


async def _window_cpu(start: float, end: float) -> float:
    """CPU time this process spends between the monotonic instants start and end."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    return time.process_time() - cpu0


async def _unary(job: Job) -> Part:
    import grpc

    lat = array.array("d")
    errors: Counter[str] = Counter()
    first_error = ""
    async with grpc.aio.insecure_channel(job.target) as channel:
        call = channel.unary_unary(job.path)  # bytes in, bytes out: no protobuf work in the client
        await asyncio.wait_for(channel.channel_ready(), 10)
        measure_from = job.start_at + job.warmup
        end = measure_from + job.duration
        await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
        clock = time.monotonic

        async def worker() -> None:
            nonlocal first_error
            payload, append = job.payload, lat.append
            while True:
                t0 = clock()
                if t0 >= end:
                    return
                try:
                    await call(payload, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    first_error = first_error or f"{exc.code().name}: {exc.details()}"
                    continue
                if t0 >= measure_from:
                    append(clock() - t0)

        cpu = asyncio.ensure_future(_window_cpu(measure_from, end))
        await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    return Part(lat.tobytes(), dict(errors), first_error, cpu_seconds=await cpu)


_FILLED: list[str] = []  # users whose 3-line carts this client process has filled


async def fill_carts(cart_target: str, users: list[str], parallel: int = 16) -> None:
    """Put CART_LINES into each user's cart (before measuring, outside the measurement)."""
    import grpc

    from boutique.proto import demo_pb2_grpc as rpc

    queue = list(users)
    async with grpc.aio.insecure_channel(cart_target) as ch:
        stub = rpc.CartServiceStub(ch)

        async def filler() -> None:
            while queue:
                user = queue.pop()
                for pid in CART_LINES:
                    await stub.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id=pid, quantity=1)),
                                       timeout=10)

        await asyncio.gather(*(filler() for _ in range(parallel)))


async def _fill(job: Job) -> Part:
    """Fill job.prefill carts for the orders this client process will place."""
    users = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(job.prefill)]
    await fill_carts(job.cart_target, users)
    _FILLED[:] = users
    return Part(b"")


async def _orders(job: Job) -> Part:
    import grpc

    lat = array.array("d")
    errors: Counter[str] = Counter()
    first_error = ""
    ended_early = 0.0
    users = _FILLED
    async with grpc.aio.insecure_channel(job.target) as checkout_ch:
        place = checkout_ch.unary_unary(job.path)
        await asyncio.wait_for(checkout_ch.channel_ready(), 10)
        template = pb.PlaceOrderRequest(user_currency="EUR", address=ADDRESS, email="bench@example.com",
                                        credit_card=card())
        measure_from = job.start_at + job.warmup
        end = measure_from + job.duration
        await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
        clock = time.monotonic

        async def worker() -> None:
            nonlocal first_error, ended_early
            while True:
                t0 = clock()
                if t0 >= end:
                    return
                if not users:
                    ended_early = ended_early or t0
                    return
                req = pb.PlaceOrderRequest()
                req.CopyFrom(template)
                req.user_id = users.pop()
                try:
                    await place(req.SerializeToString(), timeout=20)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    first_error = first_error or f"{exc.code().name}: {exc.details()}"
                    continue
                if t0 >= measure_from:
                    lat.append(clock() - t0)

        cpu = asyncio.ensure_future(_window_cpu(measure_from, end))
        await asyncio.gather(*(worker() for _ in range(job.concurrency)))
    return Part(lat.tobytes(), dict(errors), first_error, ended_early, await cpu)


def _client_main(conn: Connection) -> None:
    """A load-client process: runs jobs sent over `conn` until it gets None."""
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            runner = {"unary": _unary, "fill": _fill, "order": _orders}[job.kind]
            part = asyncio.run(runner(job))
        except Exception as exc:  # reported to the parent, which fails the run with it
            part = Part(b"", {"CLIENT_ERROR": 1}, f"{type(exc).__name__}: {exc}")
        conn.send(part)


class ClientPool:
    """N client processes; `run(job)` splits the job's concurrency across them."""

    def __init__(self, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_main, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def start(self, job: Job) -> int:
        """Send the job to the clients; returns how many got a share."""
        n = min(len(self.conns), job.concurrency)
        shares = [job.concurrency // n + (1 if i < job.concurrency % n else 0) for i in range(n)]
        for conn, share in zip(self.conns[:n], shares, strict=True):
            conn.send(Job(**{**asdict(job), "concurrency": share,
                             "prefill": -(-job.prefill // n) if job.prefill else 0}))
        return n

    def collect(self, n: int) -> list[Part]:
        return [conn.recv() for conn in self.conns[:n]]

    def run(self, job: Job) -> list[Part]:
        return self.collect(self.start(job))

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=5)
