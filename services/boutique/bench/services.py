"""gRPC service benchmark: requests/s, p50/p99 latency and server CPU per call, per RPC, against a
baseline, and PlaceOrder end to end.

    python -m boutique.bench.services --out artifacts/bench-services.json    (make bench-services)

What it does:
  * starts the shop with the local runner (boutique.dev.shop.Shop, real processes on 127.0.0.1,
    redis when installed) with BOUTIQUE_ACCESS_LOG=errors (the default, as production logs);
  * starts a baseline beside it (boutique.bench.baseline: a bare grpc.aio server answering
    Convert and GetProduct with constants) and measures it with the same client and settings;
    for those two RPCs ours and the baseline alternate --rounds times and the medians give
    ours / baseline for requests/s and for CPU per call;
  * per RPC, drives ONE server process with a fixed number of calls in flight (default 16),
    then the same with BOUTIQUE_WORKERS=2 (two processes sharing the port, SO_REUSEPORT);
  * PlaceOrder end to end (checkout -> cart, catalog, currency, shipping, payment, email) with
    3-line carts filled beforehand, at 8 concurrent orders: server CPU per order summed over
    every service (and redis), and per service;
  * prints tables and the issue's targets (met or not), writes JSON and a chart (PNG).

The load client is ghz (tools/go/ghz, built through the Go module proxy on first use) where
it can be had, else our Python client (boutique.bench.pyclient); --client picks one, and the
report says which ran. Server CPU is read from /proc for each service's processes over exactly
the measured window, so CPU per call does not depend on how busy the rest of the machine is
the way requests/s does: the targets use it. The client shares the machine with the servers:
on a 2-core box they compete for CPU, so requests/s is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from boutique import service_catalog as catalog_mod
from boutique.bench import ghz as ghz_mod
from boutique.bench import pyclient
from boutique.bench.pyclient import ADDRESS, CART_LINES, card
from boutique.proto import demo_pb2 as pb

DEFAULT_RPCS = ("Convert", "GetSupportedCurrencies", "GetProduct", "ListProducts", "GetQuote", "GetCart",
                "GetAds", "ListRecommendations", "Charge")
BASELINE_RPCS = ("Convert", "GetProduct")  # what boutique.bench.baseline answers
BENCH_USER = "bench-user"

# The targets of issue 12 (2-core machine, load client on the same machine).
CPU_RATIO_MAX = 1.15  # Convert, GetProduct: our CPU per call / the baseline's
ORIGINAL_RECOMMENDATION_RPS = 1000.0  # the Python original's ListRecommendations here: 1,025-1,177/s
RECOMMENDATION_FACTOR = 3.0
PLACE_ORDER_CPU_MS_MAX = 5.0  # server CPU per order, all services together
PLACE_ORDER_P99_MS_MAX = 40.0  # at 8 concurrent orders
# gRPC calls a server handles per order: PlaceOrder, GetCart, GetQuote, Convert (shipping), Charge,
# ShipOrder, EmptyCart, SendOrderConfirmation, and GetProduct + Convert per cart line
PLACE_ORDER_SERVER_CALLS = 8 + 2 * len(CART_LINES)


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
                                           credit_card=card()),
    }


def service_of(cat: catalog_mod.Catalog, rpc: str) -> catalog_mod.Service:
    """The catalog service that serves method `rpc`."""
    for svc in cat.grpc_services():
        if any(m.name == rpc for m in svc.methods):
            return svc
    raise SystemExit(f"no catalog service serves an RPC named {rpc!r}")


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


class CpuWindow:
    """Server CPU seconds per service between start() and stop()."""

    def __init__(self, server_pids: dict[str, list[int]]) -> None:
        self.pids = server_pids
        self.before: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: _cpu_seconds(p) for name, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.spent = {name: _cpu_seconds(p) - self.before[name] for name, p in self.pids.items()}
        return self.spent


@dataclass
class Measurement:
    """What a client driver saw in one measured window."""

    calls: int  # successful calls
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: dict[str, int]
    first_error: str
    client_cpu_s: float
    server_cpu_s: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""


@dataclass
class Result:
    rpc: str
    service: str
    role: str  # "ours" | "baseline"
    workers: int
    concurrency: int
    client: str  # "ghz" | "python"
    round: int
    calls: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: dict[str, int]
    server_cpu_percent: float  # of one core, summed over the processes measured, in the window
    server_cpu_us_per_call: float  # server CPU time per successful call (load-independent cost)
    client_cpu_us_per_call: float  # the load client's CPU time per call
    duration_s: float
    note: str = ""
    cpu_us_per_call_by_service: dict[str, float] = field(default_factory=dict)


def _result(m: Measurement, *, rpc: str, service: str, role: str, workers: int, concurrency: int, client: str,
            round_no: int = 1) -> Result:
    cpu = sum(m.server_cpu_s.values())
    per_call = (lambda s: round(1e6 * s / m.calls, 1)) if m.calls else (lambda s: float("nan"))
    return Result(rpc=rpc, service=service, role=role, workers=workers, concurrency=concurrency, client=client,
                  round=round_no, calls=m.calls, rps=round(m.calls / m.seconds, 1) if m.seconds > 0 else 0.0,
                  p50_ms=round(m.p50_ms, 3), p99_ms=round(m.p99_ms, 3), mean_ms=round(m.mean_ms, 3),
                  errors=m.errors, server_cpu_percent=round(100 * cpu / m.seconds, 1) if m.seconds > 0 else 0.0,
                  server_cpu_us_per_call=per_call(cpu), client_cpu_us_per_call=per_call(m.client_cpu_s),
                  duration_s=round(m.seconds, 2), note="; ".join(x for x in (m.note, m.first_error) if x),
                  cpu_us_per_call_by_service={k: per_call(v) for k, v in m.server_cpu_s.items()}
                  if len(m.server_cpu_s) > 1 else {})


class Driver(Protocol):
    name: str
    description: str

    def unary(self, target: str, path: str, payload: bytes, concurrency: int, connections: int,
              server_pids: dict[str, list[int]]) -> Measurement: ...

    def orders(self, checkout: str, cart: str, concurrency: int, connections: int,
               server_pids: dict[str, list[int]]) -> Measurement: ...

    def close(self) -> None: ...


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def order_template(user_id: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(user_id=user_id, user_currency="EUR", address=ADDRESS, email="bench@example.com",
                                credit_card=card())


class GhzDriver:
    """Load from ghz; warm-up and measurement are separate ghz runs, server CPU is read around
    the measured one."""

    name = "ghz"

    def __init__(self, binary: Path, workdir: Path, warmup: float, duration: float, max_order_rate: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.protoset = ghz_mod.write_protoset(workdir / "demo.protoset")
        self.warmup, self.duration, self.max_order_rate = warmup, duration, max_order_rate
        self.description = f"ghz ({binary})"
        self._payloads: dict[bytes, Path] = {}

    def _payload_file(self, *payloads: bytes) -> Path:
        key = b"\0".join(payloads)
        if key not in self._payloads:
            path = self.workdir / f"payload-{len(self._payloads)}.bin"
            path.write_bytes(ghz_mod.delimited(payloads))
            self._payloads[key] = path
        return self._payloads[key]

    def _measure(self, warm: ghz_mod.Load, load: ghz_mod.Load, server_pids: dict[str, list[int]]) -> Measurement:
        if warm.duration or warm.total:
            ghz_mod.run(self.binary, self.protoset, warm)
        window = CpuWindow(server_pids)
        window.start()
        report, client_cpu = ghz_mod.run(self.binary, self.protoset, load)
        spent = window.stop()
        note = "" if report.end_reason in {"", "normal", "timeout"} else f"ghz ended: {report.end_reason}"
        return Measurement(calls=report.ok, seconds=report.seconds, p50_ms=report.p50_ms, p99_ms=report.p99_ms,
                           mean_ms=report.mean_ms, errors=report.errors, first_error=report.first_error,
                           client_cpu_s=client_cpu, server_cpu_s=spent, latencies_ms=report.latencies_ms, note=note)

    def unary(self, target: str, path: str, payload: bytes, concurrency: int, connections: int,
              server_pids: dict[str, list[int]]) -> Measurement:
        common = {"target": target, "call": path.lstrip("/"), "concurrency": concurrency,
                  "connections": connections, "payload_file": self._payload_file(payload), "timeout": 10.0}
        return self._measure(ghz_mod.Load(**common, duration=self.warmup),
                             ghz_mod.Load(**common, duration=self.duration), server_pids)

    def orders(self, checkout: str, cart: str, concurrency: int, connections: int,
               server_pids: dict[str, list[int]]) -> Measurement:
        run_id = uuid.uuid4().hex[:10]
        n_warm = max(concurrency, int(self.max_order_rate * self.warmup))
        n_measure = int(self.max_order_rate * self.duration)
        asyncio.run(pyclient.fill_carts(cart, [f"bench-{run_id}-w-{i}" for i in range(n_warm)]
                                + [f"bench-{run_id}-m-{i}" for i in range(n_measure)]))

        def load(prefix: str, total: int, duration: float) -> ghz_mod.Load:
            # request k of the run uses cart k: one order per pre-filled cart
            requests = (order_template(f"bench-{run_id}-{prefix}-{i}").SerializeToString() for i in range(total))
            return ghz_mod.Load(target=checkout, call="hipstershop.CheckoutService/PlaceOrder",
                                concurrency=concurrency, connections=connections,
                                payload_file=self._payload_file(*requests), total=total, duration=duration,
                                timeout=20.0)

        m = self._measure(load("w", n_warm, self.warmup), load("m", n_measure, self.duration), server_pids)
        if m.calls + sum(m.errors.values()) >= n_measure:
            m.note = "; ".join(x for x in (m.note, f"used all {n_measure} pre-filled carts (raise --max-order-rate)")
                               if x)
        return m

    def close(self) -> None:
        pass


class PythonDriver:
    """Load from our Python client processes (boutique.bench.pyclient)."""

    name = "python"

    def __init__(self, processes: int, warmup: float, duration: float, max_order_rate: int) -> None:
        self.pool = pyclient.ClientPool(processes)
        self.warmup, self.duration, self.max_order_rate = warmup, duration, max_order_rate
        self.description = f"Python (grpc.aio, {processes} client processes)"

    def _measure(self, job: pyclient.Job, server_pids: dict[str, list[int]]) -> Measurement:
        n = self.pool.start(job)
        window = CpuWindow(server_pids)
        time.sleep(max(0.0, job.start_at + job.warmup - time.monotonic()))
        window.start()
        time.sleep(max(0.0, job.start_at + job.warmup + job.duration - time.monotonic()))
        spent = window.stop()
        parts = self.pool.collect(n)
        import array

        lat: list[float] = []
        errors: dict[str, int] = {}
        notes, first_error, duration = [], "", job.duration
        for part in parts:
            arr = array.array("d")
            arr.frombytes(part.latencies)
            lat.extend(arr)
            for k, v in part.errors.items():
                errors[k] = errors.get(k, 0) + v
            first_error = first_error or part.first_error
            if part.ended_early:
                duration = min(duration, part.ended_early - (job.start_at + job.warmup))
                notes.append("ran out of pre-filled carts early (raise --max-order-rate)")
        ms = sorted(x * 1000 for x in lat)
        return Measurement(calls=len(ms), seconds=duration, p50_ms=_percentile(ms, 0.5), p99_ms=_percentile(ms, 0.99),
                           mean_ms=statistics.fmean(ms) if ms else float("nan"), errors=errors,
                           first_error=first_error, client_cpu_s=sum(p.cpu_seconds for p in parts),
                           server_cpu_s=spent, latencies_ms=ms, note="; ".join(dict.fromkeys(notes)))

    def unary(self, target: str, path: str, payload: bytes, concurrency: int, connections: int,
              server_pids: dict[str, list[int]]) -> Measurement:
        job = pyclient.Job(kind="unary", target=target, path=path, payload=payload, concurrency=concurrency,
                           start_at=time.monotonic() + 0.5, warmup=self.warmup, duration=self.duration)
        return self._measure(job, server_pids)

    def orders(self, checkout: str, cart: str, concurrency: int, connections: int,
               server_pids: dict[str, list[int]]) -> Measurement:
        fill = pyclient.Job(kind="fill", target="", path="", payload=b"", concurrency=len(self.pool.conns),
                            start_at=0.0, warmup=0.0, duration=0.0, cart_target=cart,
                            prefill=int(self.max_order_rate * (self.warmup + self.duration)))
        self.pool.run(fill)
        job = pyclient.Job(kind="order", target=checkout, path="/hipstershop.CheckoutService/PlaceOrder",
                           payload=b"", concurrency=concurrency, start_at=time.monotonic() + 0.5,
                           warmup=self.warmup, duration=self.duration)
        return self._measure(job, server_pids)

    def close(self) -> None:
        self.pool.close()


def make_driver(args: argparse.Namespace, workdir: Path) -> tuple[Driver, str]:
    """The load client to use, and a line saying which and why."""
    if args.client in {"auto", "ghz"}:
        binary, why = ghz_mod.find()
        if binary is not None:
            return GhzDriver(binary, workdir, args.warmup, args.duration, args.max_order_rate), "ghz"
        if args.client == "ghz":
            raise SystemExit(f"--client ghz: ghz is not available: {why}")
        print(f"ghz is not available ({why}): using the Python load client", flush=True)
    return PythonDriver(args.client_procs, args.warmup, args.duration, args.max_order_rate), "python"


# ----------------------------------------------------------------------------- the run
class Baseline:
    """boutique.bench.baseline in its own process, in a session of its own like every service the
    runner starts: with the kernel's autogroup scheduling (sched_autogroup_enabled) a session is
    what CPU is shared out by, so ours and the baseline compete for it on the same terms."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "boutique.bench.baseline"], stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise SystemExit(f"the baseline server did not start (it printed {line!r})")
        self.address = line.split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _fill_bench_cart(shop: Any) -> None:
    import grpc

    from boutique.proto import demo_pb2_grpc as rpc

    with grpc.insecure_channel(shop.address("cartservice")) as ch:
        stub = rpc.CartServiceStub(ch)
        stub.EmptyCart(pb.EmptyCartRequest(user_id=BENCH_USER), timeout=5)
        for pid in CART_LINES:
            stub.AddItem(pb.AddItemRequest(user_id=BENCH_USER, item=pb.CartItem(product_id=pid, quantity=1)),
                         timeout=5)


def _connections(workers: int) -> int:
    """ghz connections: SO_REUSEPORT spreads connections (not calls) over the workers, so several."""
    return 2 if workers == 1 else 8


def run_mode(driver: Driver, client: str, cat: catalog_mod.Catalog, args: argparse.Namespace, workers: int,
             baseline: Baseline | None, distributions: dict[str, list[float]]) -> list[Result]:
    """Every RPC (and PlaceOrder) against a shop with `workers` processes per service; PlaceOrder's
    latencies go to `distributions`."""
    from boutique.dev.shop import start_on_free_offset

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
    conns = _connections(workers)
    with shop:
        print(f"\n== {workers} server process(es) per service; shop on port offset {shop.port_offset}; "
              f"logs in {shop.log_dir}", flush=True)
        if "GetCart" in args.rpc:
            _fill_bench_cart(shop)
        for rpc in args.rpc:
            svc = service_of(cat, rpc)
            path, payload = f"/{svc.grpc_service}/{rpc}", payloads[rpc]().SerializeToString()
            pids = {svc.name: _process_tree(shop.pid(svc.name) or 0)}
            compared = baseline is not None and rpc in BASELINE_RPCS
            for i in range(1, (args.rounds if compared else 1) + 1):
                m = driver.unary(shop.address(svc.name), path, payload, args.concurrency, conns, pids)
                results.append(_result(m, rpc=rpc, service=svc.name, role="ours", workers=workers,
                                       concurrency=args.concurrency, client=client, round_no=i))
                print(_row(results[-1]), flush=True)
                if compared and baseline is not None:
                    m = driver.unary(baseline.address, path, payload, args.concurrency, conns,
                                     {"baseline": [baseline.proc.pid]})
                    results.append(_result(m, rpc=rpc, service="baseline", role="baseline", workers=1,
                                           concurrency=args.concurrency, client=client, round_no=i))
                    print(_row(results[-1]), flush=True)
        if args.orders:
            checkout = cat.get("checkoutservice")
            pids = {n: _process_tree(shop.pid(n) or 0) for n in shop.names}
            if shop.redis_pid:
                pids[cat.redis.name] = [shop.redis_pid]
            m = driver.orders(shop.address(checkout.name), shop.address("cartservice"), args.order_concurrency,
                              conns, pids)
            res = _result(m, rpc="PlaceOrder", service=checkout.name, role="ours", workers=workers,
                          concurrency=args.order_concurrency, client=client)
            res.note = "; ".join(x for x in ("3-line carts, end to end; cpu = all services", res.note) if x)
            results.append(res)
            print(_row(res), flush=True)
            print("    server CPU per order (us): " + ", ".join(
                f"{k} {v:,.0f}" for k, v in sorted(res.cpu_us_per_call_by_service.items(), key=lambda kv: -kv[1])))
            distributions[f"PlaceOrder, {workers} process(es)/service"] = m.latencies_ms
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


def compare(results: list[Result]) -> list[dict[str, Any]]:
    """Ours vs the baseline per RPC (1 process): medians over the rounds and the ratios."""
    out = []
    for rpc in BASELINE_RPCS:
        ours = [r for r in results if r.rpc == rpc and r.role == "ours" and r.workers == 1]
        base = [r for r in results if r.rpc == rpc and r.role == "baseline"]
        if not ours or not base:
            continue

        def med(rs: list[Result], attr: str) -> float:
            return statistics.median(getattr(r, attr) for r in rs)

        row: dict[str, Any] = {"rpc": rpc, "rounds": len(ours), "client": ours[0].client}
        for side, rs in (("ours", ours), ("baseline", base)):
            for attr in ("rps", "server_cpu_us_per_call", "p50_ms", "p99_ms", "client_cpu_us_per_call"):
                row[f"{side}_{attr}"] = round(med(rs, attr), 3)
            row[f"{side}_errors"] = sum(sum(r.errors.values()) for r in rs)
        row["rps_ratio"] = round(row["ours_rps"] / row["baseline_rps"], 3) if row["baseline_rps"] else None
        row["cpu_ratio"] = (round(row["ours_server_cpu_us_per_call"] / row["baseline_server_cpu_us_per_call"], 3)
                            if row["baseline_server_cpu_us_per_call"] else None)
        out.append(row)
    return out


def place_order_floor_ms(comparisons: list[dict[str, Any]]) -> float | None:
    """A lower bound of the server CPU per order for any grpc.aio implementation here: the calls a
    server handles per order, each at the bare baseline's CPU per call (Convert, 16 in flight;
    the checkout's own client side of its calls not counted)."""
    convert = next((c for c in comparisons if c["rpc"] == "Convert"), None)
    if convert is None or not convert["baseline_server_cpu_us_per_call"]:
        return None
    return round(PLACE_ORDER_SERVER_CALLS * convert["baseline_server_cpu_us_per_call"] / 1000, 2)


def check_targets(results: list[Result], comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for c in comparisons:
        checks.append({
            "what": f"{c['rpc']}: our CPU per call / the baseline's (1 process, access log errors, "
                    f"median of {c['rounds']} rounds, {c['client']} client)",
            "target": f"<= {CPU_RATIO_MAX}",
            "measured": f"{c['cpu_ratio']} ({c['ours_server_cpu_us_per_call']:.0f} vs "
                        f"{c['baseline_server_cpu_us_per_call']:.0f} us/call; rps ratio {c['rps_ratio']}: "
                        f"{c['ours_rps']:,.0f} vs {c['baseline_rps']:,.0f}/s)",
            "met": c["cpu_ratio"] is not None and c["cpu_ratio"] <= CPU_RATIO_MAX and not c["ours_errors"]})
    rec_min = RECOMMENDATION_FACTOR * ORIGINAL_RECOMMENDATION_RPS
    floor = place_order_floor_ms(comparisons)
    base_rps = next((c["baseline_rps"] for c in comparisons if c["rpc"] == "Convert"), None)
    for r in results:
        if r.rpc == "ListRecommendations" and r.workers == 1:
            checks.append({"what": f"ListRecommendations (1 process, {r.concurrency} in flight)",
                           "target": f">= {rec_min:,.0f} rps ({RECOMMENDATION_FACTOR:.0f} x the Python original's "
                                     f"~{ORIGINAL_RECOMMENDATION_RPS:,.0f}/s on this machine)",
                           "measured": f"{r.rps:,.0f} rps, p99 {r.p99_ms} ms, {r.server_cpu_us_per_call:.0f} us/call"
                           + (f" (the bare baseline's Convert in this run: {base_rps:,.0f} rps)" if base_rps else ""),
                           "met": r.rps >= rec_min and not r.errors})
        if r.rpc == "PlaceOrder" and r.workers == 1:
            cpu_ms = r.server_cpu_us_per_call / 1000
            split = ", ".join(f"{k} {v / 1000:.2f}" for k, v in sorted(r.cpu_us_per_call_by_service.items(),
                                                                        key=lambda kv: -kv[1]))
            checks.append({"what": f"PlaceOrder CPU per order, all services (1 process each, {r.concurrency} "
                                   "concurrent)",
                           "target": f"<= {PLACE_ORDER_CPU_MS_MAX} ms",
                           "measured": f"{cpu_ms:.2f} ms ({split})" + (
                               f"; bare grpc.aio floor >= {floor:.2f} ms ({PLACE_ORDER_SERVER_CALLS} server calls "
                               "x the baseline's CPU per call)" if floor else ""),
                           "met": cpu_ms <= PLACE_ORDER_CPU_MS_MAX and not r.errors})
            checks.append({"what": f"PlaceOrder p99 at {r.concurrency} concurrent orders (1 process each)",
                           "target": f"<= {PLACE_ORDER_P99_MS_MAX} ms",
                           "measured": f"{r.p99_ms:.1f} ms (p50 {r.p50_ms:.1f} ms, {r.rps:,.0f} orders/s)",
                           "met": r.p99_ms <= PLACE_ORDER_P99_MS_MAX and not r.errors})
    return checks


def _histogram(values: list[float], bins: int = 40) -> dict[str, list[float]]:
    if not values:
        return {"edges_ms": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges_ms": [round(lo + i * width, 3) for i in range(bins + 1)], "counts": [float(c) for c in counts]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boutique.bench.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--chart", type=Path, help="chart file (default: --out with .png)")
    parser.add_argument("--rpc", action="append",
                        help=f"RPC to measure (repeatable; default: {' '.join(DEFAULT_RPCS)})")
    parser.add_argument("--client", choices=("auto", "ghz", "python"), default="auto",
                        help="load client: ghz, our Python client, or auto (ghz when it can be had; default)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per RPC (default 16)")
    parser.add_argument("--order-concurrency", type=int, default=8, help="concurrent PlaceOrders (default 8)")
    parser.add_argument("--no-orders", dest="orders", action="store_false", help="skip PlaceOrder end to end")
    parser.add_argument("--orders-only", action="store_true", help="only PlaceOrder end to end")
    parser.add_argument("--workers", default="1,2", help="server processes per service to try (default 1,2)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not start and measure the baseline server")
    parser.add_argument("--rounds", type=int, default=5,
                        help="ours/baseline alternations for Convert and GetProduct (default 5)")
    parser.add_argument("--client-procs", type=int, default=2, help="Python load-client processes (default 2)")
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
    if any(not 1 <= m <= 16 for m in modes) or min(args.concurrency, args.client_procs, args.rounds) < 1:
        parser.error("--workers entries must be 1..16; --concurrency, --client-procs and --rounds at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")

    import grpc

    chart = args.chart or args.out.with_suffix(".png")
    results: list[Result] = []
    distributions: dict[str, list[float]] = {}  # PlaceOrder latencies per mode, for the chart
    with tempfile.TemporaryDirectory(prefix="boutique-bench-") as tmp:
        driver, client = make_driver(args, Path(tmp))
        print(f"boutique service benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"grpcio {grpc.__version__}; load client: {driver.description}; BOUTIQUE_ACCESS_LOG=errors")
        print(HEADER)
        baseline = Baseline() if args.baseline and any(r in BASELINE_RPCS for r in args.rpc) else None
        try:
            for workers in modes:
                results += run_mode(driver, client, cat, args, workers, baseline if workers == 1 else None,
                                    distributions)
        finally:
            driver.close()
            if baseline is not None:
                baseline.stop()
    comparisons = compare(results)
    checks = check_targets(results, comparisons)
    print("\n" + HEADER)
    for r in results:
        print(_row(r))
    if comparisons:
        print(f"\nours / baseline (1 process, median of {args.rounds} rounds, {client} client):")
        print(f"  {'rpc':12} {'ours rps':>9} {'base rps':>9} {'ratio':>6}   {'ours us':>8} {'base us':>8} {'ratio':>6}")
        for c in comparisons:
            print(f"  {c['rpc']:12} {c['ours_rps']:>9,.0f} {c['baseline_rps']:>9,.0f} {c['rps_ratio']:>6.2f}   "
                  f"{c['ours_server_cpu_us_per_call']:>8.0f} {c['baseline_server_cpu_us_per_call']:>8.0f} "
                  f"{c['cpu_ratio']:>6.2f}")
    print("\ntargets:")
    for c in checks:
        print(f"  {'MET    ' if c['met'] else 'NOT MET'}  {c['what']}: {c['target']}; measured {c['measured']}")
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
                    "platform": platform.platform(), "load_average_at_end": os.getloadavg()},
        "client": client, "client_description": driver.description,
        "settings": {"concurrency": args.concurrency, "order_concurrency": args.order_concurrency,
                     "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                     "access_log": "errors", "workers": modes,
                     "client_processes": args.client_procs if client == "python" else None},
        "results": [asdict(r) for r in results],
        "baseline_comparison": comparisons,
        "place_order_floor_ms": place_order_floor_ms(comparisons),
        "place_order_latency_histograms": {k: _histogram(v) for k, v in distributions.items()},
        "targets": checks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    try:
        from boutique.bench import charts

        charts.services_chart(report, distributions, chart)
        print(f"wrote {chart}")
    except ImportError as exc:
        print(f"no chart: {exc} (pip install -r requirements.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
