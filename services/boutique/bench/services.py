"""gRPC service benchmark: requests/s and p50/p99 latency per RPC, and PlaceOrder end to end.

    python -m boutique.bench.services --out artifacts/bench-services.json    (make bench-services)

What it does:
  * starts the shop with the local runner (boutique.runner.Shop, real processes on 127.0.0.1,
    redis when installed) with BOUTIQUE_ACCESS_LOG=errors, as production would log;
  * per RPC, drives ONE server process with a fixed number of calls in flight (default 16),
    then the same with BOUTIQUE_WORKERS=2 (two processes sharing the port, SO_REUSEPORT);
  * PlaceOrder end to end (checkout -> cart, catalog, currency, shipping, payment, email) with
    3-line carts filled beforehand, at 8 concurrent orders;
  * prints a table and writes JSON.

The load client runs in separate processes (grpc.aio, pre-serialised requests, responses
left as bytes) so the client's own cost stays low; latency is measured client-side, from
just before the call to its completion, for calls started inside the measuring window.
The client shares the machine with the servers: on a 2-core box they compete for CPU, so
the figures are a floor, not what the servers do with cores of their own.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from boutique import catalog as catalog_mod
from boutique.proto import demo_pb2 as pb

DEFAULT_RPCS = ("Convert", "GetSupportedCurrencies", "GetProduct", "ListProducts", "GetQuote", "GetCart",
                "GetAds", "ListRecommendations", "Charge")
CART_LINES = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O")
BENCH_USER = "bench-user"
# targets of the issue (2-core machine, client on the same machine)
TARGETS = {"Convert": (7000.0, 10.0), "GetProduct": (7000.0, 10.0)}  # rps >=, p99 ms <
PLACE_ORDER_P99_MS = 60.0
ADDRESS = pb.Address(street_address="1600 Amphitheatre Parkway", city="Mountain View", state="CA",
                     country="United States", zip_code=94043)


def _card() -> pb.CreditCardInfo:
    return pb.CreditCardInfo(credit_card_number="4432801561520454", credit_card_cvv=672,
                             credit_card_expiration_year=time.gmtime().tm_year + 1,
                             credit_card_expiration_month=1)


def _payloads() -> dict[str, Callable[[], Any]]:
    """One valid request per RPC the benchmark knows how to call."""
    return {
        "Convert": lambda: pb.CurrencyConversionRequest(
            **{"from": pb.Money(currency_code="USD", units=19, nanos=990000000)}, to_code="EUR"),
        "GetSupportedCurrencies": pb.Empty,
        "GetProduct": lambda: pb.GetProductRequest(id="OLJCESPC7Z"),
        "ListProducts": pb.Empty,
        "SearchProducts": lambda: pb.SearchProductsRequest(query="glass"),
        "GetQuote": lambda: pb.GetQuoteRequest(address=ADDRESS,
                                               items=[pb.CartItem(product_id=p, quantity=1) for p in CART_LINES]),
        "GetCart": lambda: pb.GetCartRequest(user_id=BENCH_USER),
        "GetAds": lambda: pb.AdRequest(context_keys=["clothing", "kitchen"]),
        "ListRecommendations": lambda: pb.ListRecommendationsRequest(user_id="u", product_ids=["OLJCESPC7Z"]),
        "Charge": lambda: pb.ChargeRequest(amount=pb.Money(currency_code="USD", units=42, nanos=500000000),
                                           credit_card=_card()),
    }


def service_of(cat: catalog_mod.Catalog, rpc: str) -> catalog_mod.Service:
    """The catalog service that serves method `rpc`."""
    for svc in cat.grpc_services():
        if any(m.name == rpc for m in svc.methods):
            return svc
    raise SystemExit(f"no catalog service serves an RPC named {rpc!r}")


# ----------------------------------------------------------------- client side (own processes)
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


async def _fill(job: Job) -> Part:
    """Fill job.prefill carts with CART_LINES (before the orders run, outside the measurement)."""
    import grpc

    from boutique.proto import demo_pb2_grpc as rpc

    users = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(job.prefill)]
    async with grpc.aio.insecure_channel(job.cart_target) as cart_ch:
        cart = rpc.CartServiceStub(cart_ch)
        queue = list(users)

        async def filler() -> None:
            while queue:
                user = queue.pop()
                for pid in CART_LINES:
                    await cart.AddItem(pb.AddItemRequest(user_id=user, item=pb.CartItem(product_id=pid, quantity=1)),
                                       timeout=10)

        await asyncio.gather(*(filler() for _ in range(16)))
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
                                        credit_card=_card())
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


# ----------------------------------------------------------------------------- measurement
def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def _process_tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return [pid, *(int(x) for x in out.split())]


@dataclass
class Result:
    rpc: str
    service: str
    workers: int
    concurrency: int
    calls: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: dict[str, int]
    server_cpu_percent: float  # of one core, summed over the service's processes, in the window
    server_cpu_us_per_call: float  # server CPU time per measured call (load-independent cost)
    client_cpu_us_per_call: float  # the load client's CPU time per call, all client processes
    duration_s: float
    note: str = ""
    cpu_us_per_call_by_service: dict[str, float] = field(default_factory=dict)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def measure(pool: ClientPool, job: Job, rpc: str, service: str, workers: int,
            server_pids: dict[str, list[int]]) -> Result:
    """Run `job`; server_pids: service name -> its processes (CPU is summed over all of them)."""
    n = pool.start(job)
    # server CPU over exactly the measuring window
    time.sleep(max(0.0, job.start_at + job.warmup - time.monotonic()))
    before = {name: _cpu_seconds(pids) for name, pids in server_pids.items()}
    time.sleep(max(0.0, job.start_at + job.warmup + job.duration - time.monotonic()))
    by_service = {name: _cpu_seconds(pids) - before[name] for name, pids in server_pids.items()}
    cpu0, cpu1 = 0.0, sum(by_service.values())
    parts = pool.collect(n)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    notes = []
    duration = job.duration
    for part in parts:
        arr = array.array("d")
        arr.frombytes(part.latencies)
        lat.extend(arr)
        errors.update(part.errors)
        if part.first_error:
            notes.append(part.first_error)
        if part.ended_early:
            duration = min(duration, part.ended_early - (job.start_at + job.warmup))
            notes.append("ran out of pre-filled carts early")
    client_cpu = sum(p.cpu_seconds for p in parts)
    lat.sort()
    ms = [x * 1000 for x in lat]
    return Result(rpc=rpc, service=service, workers=workers, concurrency=job.concurrency, calls=len(lat),
                  rps=round(len(lat) / duration, 1) if duration > 0 else 0.0,
                  p50_ms=round(_percentile(ms, 0.50), 3), p99_ms=round(_percentile(ms, 0.99), 3),
                  mean_ms=round(statistics.fmean(ms), 3) if ms else float("nan"), errors=dict(errors),
                  server_cpu_percent=round(100 * (cpu1 - cpu0) / job.duration, 1),
                  server_cpu_us_per_call=round(1e6 * (cpu1 - cpu0) / len(lat), 1) if lat else float("nan"),
                  client_cpu_us_per_call=round(1e6 * client_cpu / len(lat), 1) if lat else float("nan"),
                  duration_s=round(duration, 2),
                  cpu_us_per_call_by_service={k: round(1e6 * v / len(lat), 1) for k, v in by_service.items()}
                  if lat and len(by_service) > 1 else {},
                  note="; ".join(dict.fromkeys(notes)))


def _fill_bench_cart(shop: Any) -> None:
    import grpc

    from boutique.proto import demo_pb2_grpc as rpc

    with grpc.insecure_channel(shop.address("cartservice")) as ch:
        stub = rpc.CartServiceStub(ch)
        stub.EmptyCart(pb.EmptyCartRequest(user_id=BENCH_USER), timeout=5)
        for pid in CART_LINES:
            stub.AddItem(pb.AddItemRequest(user_id=BENCH_USER, item=pb.CartItem(product_id=pid, quantity=1)),
                         timeout=5)


def run_mode(pool: ClientPool, cat: catalog_mod.Catalog, args: argparse.Namespace, workers: int) -> list[Result]:
    from boutique.runner import start_on_free_offset

    payloads = _payloads()
    env = {"BOUTIQUE_ACCESS_LOG": "errors", "LOG_LEVEL": "warning"}
    names = {service_of(cat, r).name for r in args.rpc}
    if args.orders:
        names |= {"checkoutservice", *cat.get("checkoutservice").callees}
    names -= {cat.redis.name}
    service_env = {n: {"BOUTIQUE_WORKERS": str(workers)} for n in names} if workers > 1 else {}
    shop = start_on_free_offset(services=sorted(names), env=env, service_env=service_env,
                                log_dir=args.log_dir / f"workers-{workers}" if args.log_dir else None)
    results: list[Result] = []
    with shop:
        print(f"\n== {workers} server process(es) per service; shop on port offset {shop.port_offset}; "
              f"logs in {shop.log_dir}", flush=True)
        if "GetCart" in args.rpc:
            _fill_bench_cart(shop)
        for rpc in args.rpc:
            svc = service_of(cat, rpc)
            job = Job(kind="unary", target=shop.address(svc.name), path=f"/{svc.grpc_service}/{rpc}",
                      payload=payloads[rpc]().SerializeToString(), concurrency=args.concurrency,
                      start_at=time.monotonic() + 0.5, warmup=args.warmup, duration=args.duration)
            res = measure(pool, job, rpc, svc.name, workers, {svc.name: _process_tree(shop.pid(svc.name) or 0)})
            print(_row(res), flush=True)
            results.append(res)
        if args.orders:
            svc = cat.get("checkoutservice")
            # carts for the whole run at up to args.max_order_rate orders/s, filled before measuring
            fill = Job(kind="fill", target="", path="", payload=b"", concurrency=len(pool.conns), start_at=0.0,
                       warmup=0.0, duration=0.0, cart_target=shop.address("cartservice"),
                       prefill=int(args.max_order_rate * (args.warmup + args.duration)))
            pool.run(fill)
            job = Job(kind="order", target=shop.address(svc.name), path=f"/{svc.grpc_service}/PlaceOrder",
                      payload=b"", concurrency=args.order_concurrency, start_at=time.monotonic() + 0.5,
                      warmup=args.warmup, duration=args.duration)
            pids = {n: _process_tree(shop.pid(n) or 0) for n in shop.names}
            if shop.redis_pid:
                pids[cat.redis.name] = [shop.redis_pid]
            res = measure(pool, job, "PlaceOrder", svc.name, workers, pids)
            res.note = "; ".join(x for x in ("3-line carts, end to end; cpu = all services", res.note) if x)
            print(_row(res), flush=True)
            print("    server CPU per order (us): " + ", ".join(
                f"{k} {v:,.0f}" for k, v in sorted(res.cpu_us_per_call_by_service.items(), key=lambda kv: -kv[1])))
            results.append(res)
        for name, code in shop.exited().items():
            raise SystemExit(f"{name} died during the benchmark (exit {code}); see {shop.log_path(name)}")
    return results


HEADER = (f"{'rpc':22} {'service':22} {'proc':>4} {'inflight':>8} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'srv cpu%':>8} {'srv us/call':>11} {'cli us/call':>11}  errors")


def _row(r: Result) -> str:
    errs = ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "-"
    return (f"{r.rpc:22} {r.service:22} {r.workers:>4} {r.concurrency:>8} {r.rps:>9,.0f} {r.p50_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {r.server_cpu_percent:>8.0f} {r.server_cpu_us_per_call:>11.0f} "
            f"{r.client_cpu_us_per_call:>11.0f}  {errs}"
            + (f"  ({r.note})" if r.note else ""))


def check_targets(results: list[Result]) -> list[dict[str, Any]]:
    checks = []
    for r in results:
        if r.rpc in TARGETS and r.workers == 1:
            rps_min, p99_max = TARGETS[r.rpc]
            checks.append({"what": f"{r.rpc} (1 process, {r.concurrency} in flight)",
                           "target": f">= {rps_min:,.0f} rps, p99 < {p99_max} ms",
                           "measured": f"{r.rps:,.0f} rps, p99 {r.p99_ms} ms",
                           "met": r.rps >= rps_min and r.p99_ms < p99_max and not r.errors})
        if r.rpc == "PlaceOrder":
            checks.append({"what": f"PlaceOrder ({r.workers} process(es)/service, {r.concurrency} concurrent)",
                           "target": f"p99 < {PLACE_ORDER_P99_MS} ms",
                           "measured": f"{r.rps:,.0f} orders/s, p99 {r.p99_ms} ms",
                           "met": r.p99_ms < PLACE_ORDER_P99_MS and not r.errors})
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boutique.bench.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--rpc", action="append",
                        help=f"RPC to measure (repeatable; default: {' '.join(DEFAULT_RPCS)})")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per RPC (default 16)")
    parser.add_argument("--order-concurrency", type=int, default=8, help="concurrent PlaceOrders (default 8)")
    parser.add_argument("--no-orders", dest="orders", action="store_false", help="skip PlaceOrder end to end")
    parser.add_argument("--orders-only", action="store_true", help="only PlaceOrder end to end")
    parser.add_argument("--workers", default="1,2", help="server processes per service to try (default 1,2)")
    parser.add_argument("--client-procs", type=int, default=2, help="load-client processes (default 2)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per RPC (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per RPC (default 1)")
    parser.add_argument("--log-dir", type=Path, help="keep the services' logs here")
    parser.add_argument("--max-order-rate", type=int, default=400,
                        help="carts are pre-filled for this many PlaceOrders/s (default 400)")
    args = parser.parse_args(argv)
    cat = catalog_mod.default()
    args.rpc = [] if args.orders_only else (args.rpc or list(DEFAULT_RPCS))
    args.orders = args.orders or args.orders_only
    payloads = _payloads()
    for rpc in args.rpc:
        if rpc not in payloads:
            parser.error(f"--rpc {rpc}: no sample request for it; known: {', '.join(payloads)}")
        service_of(cat, rpc)
    try:
        modes = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: a comma-separated list of integers, e.g. 1,2")
    if any(not 1 <= m <= 16 for m in modes) or args.concurrency < 1 or args.client_procs < 1:
        parser.error("--workers entries must be 1..16; --concurrency and --client-procs at least 1")

    import grpc

    print(f"boutique service benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"grpcio {grpc.__version__}; {args.client_procs} client processes; BOUTIQUE_ACCESS_LOG=errors")
    print(HEADER)
    pool = ClientPool(args.client_procs)
    results: list[Result] = []
    try:
        for workers in modes:
            results += run_mode(pool, cat, args, workers)
    finally:
        pool.close()
    checks = check_targets(results)
    print("\n" + HEADER)
    for r in results:
        print(_row(r))
    print("\ntargets:")
    for c in checks:
        print(f"  {'MET    ' if c['met'] else 'NOT MET'}  {c['what']}: {c['target']}; measured {c['measured']}")
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
                    "platform": platform.platform()},
        "settings": {"concurrency": args.concurrency, "order_concurrency": args.order_concurrency,
                     "client_processes": args.client_procs, "duration_s": args.duration, "warmup_s": args.warmup,
                     "access_log": "errors", "workers": modes},
        "results": [asdict(r) for r in results],
        "targets": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
