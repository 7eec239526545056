"""The shop benchmark: the whole shop driven through the frontend by our load generator.

    python -m boutique.bench.shop --out artifacts/bench-shop.json     (`make bench`)

Phases (each a headless Locust run, CSV statistics):
  1. mix         the contract's traffic mix at a fixed user count: requests/s,
                 p50/p95/p99 per route, errors, CPU seconds per request (the sum
                 of every shop process's user+system time from /proc/<pid>/stat).
  2. home        the home page only at --home-users concurrent users with no wait
                 (throughput: home pages/s).
  3. fan-out     the home page at --fanout-users users and a moderate pace, once
                 with FRONTEND_FANOUT=concurrent and once with sequential (the
                 frontend is restarted in between, with its caches off so every
                 call of the page is made): the p50 ratio shows what the
                 concurrent fan-out buys.

Targets on a 2-core machine: home p50 concurrent <= 0.6 x sequential, zero errors,
>= 150 home pages/s at 20 users with p99 <= 150 ms (the load generator runs on the same
two cores). The figures depend on what else runs on the machine. Besides the JSON, a chart
(PNG) of the routes, the home page against its targets and the fan-out comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from boutique import loadgen
from boutique.dev.shop import Shop, ShopError, start_on_free_offset

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 0.6
TARGET_HOME_RPS = 150.0
TARGET_HOME_P99_MS = 150.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    # fields[11..14] = utime, stime, cutime, cstime (stat fields 14..17)
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def shop_pids(shop: Shop) -> dict[str, int]:
    pids = {name: pid for name in shop.names if (pid := shop.pid(name))}
    redis = getattr(shop, "_redis", None)
    if redis is not None and getattr(redis, "popen", None) is not None:
        pids[shop.catalog.redis.name] = redis.popen.pid
    return pids


def shop_cpu(shop: Shop) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in shop_pids(shop).items()}


def measure(shop: Shop, label: str, *, users: int, duration: str, wait: str, mix: str, csv_dir: Path,
            ) -> dict[str, Any]:
    """One Locust run with the shop's CPU use measured around it."""
    print(f"--- {label}: {users} users, {duration}, wait {wait}s, mix {mix}", flush=True)
    before, t0 = shop_cpu(shop), time.monotonic()
    result = loadgen.run(shop.base_url, users, duration, wait=wait, mix=mix, csv_prefix=csv_dir / label,
                         quiet=True)
    elapsed = time.monotonic() - t0
    after = shop_cpu(shop)
    cpu = {name: round(after.get(name, 0.0) - before.get(name, 0.0), 3) for name in after}
    total_cpu = sum(cpu.values())
    agg = result.aggregated
    out: dict[str, Any] = {
        "users": users, "duration": duration, "wait_seconds": wait, "mix": mix,
        "requests": result.requests, "failures": result.failure_count,
        "requests_per_second": round(agg.rps, 1) if agg else 0.0,
        "p50_ms": agg.p50 if agg else None, "p95_ms": agg.p95 if agg else None,
        "p99_ms": agg.p99 if agg else None,
        "routes": [asdict(r) for r in result.routes],
        "cpu_seconds": {"total": round(total_cpu, 2), **cpu},
        "cpu_seconds_per_request": round(total_cpu / result.requests, 5) if result.requests else None,
        "wall_seconds": round(elapsed, 1),
        "machine_load_average_1m": round(os.getloadavg()[0], 2),  # others' work on the machine skews latency
        "failure_samples": result.failures[:5],
    }
    return out


def route(phase: dict[str, Any], name: str, method: str = "GET") -> dict[str, Any]:
    for r in phase["routes"]:
        if r["name"] == name and r["method"] == method:
            return r
    return {"requests": 0, "p50": None, "rps": 0.0}


def print_phase(title: str, phase: dict[str, Any]) -> None:
    print(f"\n{title}: {phase['requests']} requests, {phase['requests_per_second']} req/s, "
          f"{phase['failures']} errors, {phase['cpu_seconds_per_request']} CPU s/request "
          f"({phase['cpu_seconds']['total']} CPU s in {phase['wall_seconds']} s; "
          f"machine load average {phase['machine_load_average_1m']})")
    print(f"  {'method':6} {'route':28} {'reqs':>7} {'fails':>5} {'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)")
    for r in sorted(phase["routes"], key=lambda r: (r["name"], r["method"])):
        print(f"  {r['method']:6} {r['name'][:28]:28} {r['requests']:>7} {r['failures']:>5} {r['rps']:>7.1f} "
              f"{r['p50']:>6.0f} {r['p95']:>6.0f} {r['p99']:>6.0f}")


def home_calls_only(shop: Shop, pages: int = 60, rounds: int = 3) -> dict[str, Any]:
    """The home page's backend calls (Pages.priced and friends, no HTTP, no rendering), one page at a time,
    concurrent vs sequential fan-out, A/B rounds: what the fan-out buys on the call graph itself."""
    import asyncio

    from boutique.frontend.backend import Backend, FrontendClients

    env = {**shop.env_for("frontend"), "BOUTIQUE_CACHE_TTL_SECONDS": "0"}  # every call, as on a cache miss

    async def run() -> dict[str, list[float]]:
        clients = FrontendClients(shop.catalog, env, None)
        out: dict[str, list[float]] = {"concurrent": [], "sequential": []}
        try:
            for _ in range(rounds):
                for mode in out:
                    be = Backend(clients, concurrent=mode == "concurrent", ad_timeout=0.1, recommendation_timeout=1.0)

                    async def page(be: Backend = be) -> None:
                        async def priced() -> list[Any]:
                            products = await be.list_products()
                            return await be.all(*(be.convert(p.price_usd, "EUR") for p in products))

                        await be.all(be.supported_currencies(), priced(), be.cart_items("bench"), be.ads_for([]))

                    for _ in range(5):
                        await page()
                    times = []
                    for _ in range(pages):
                        t0 = time.perf_counter()
                        await page()
                        times.append((time.perf_counter() - t0) * 1000)
                    out[mode].append(round(statistics.median(times), 2))
        finally:
            await clients.close()
        return out

    if shop.tls_dir is not None:
        return {"skipped": "needs a plain-text shop"}
    p50s = asyncio.run(run())
    c, s = statistics.median(p50s["concurrent"]), statistics.median(p50s["sequential"])
    return {"p50_ms": p50s, "median_p50_concurrent_ms": c, "median_p50_sequential_ms": s,
            "ratio": round(c / s, 3) if s else None}


def restart_frontend(shop: Shop, fanout: str, cache_ttl: str | None = None) -> None:
    """A fresh frontend with FRONTEND_FANOUT=fanout and, if given, BOUTIQUE_CACHE_TTL_SECONDS=cache_ttl."""
    env = shop.service_env.setdefault("frontend", {})
    env["FRONTEND_FANOUT"] = fanout
    if cache_ttl is None:
        env.pop("BOUTIQUE_CACHE_TTL_SECONDS", None)
    else:
        env["BOUTIQUE_CACHE_TTL_SECONDS"] = cache_ttl
    shop.stop_service("frontend")
    shop.start_service("frontend")


def start_shop(port_offset: int | None) -> Shop:
    env = {"BOUTIQUE_ACCESS_LOG": "errors"}
    if port_offset is None:
        return start_on_free_offset(env=env)
    return Shop(port_offset=port_offset, env=env).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m boutique.bench.shop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="JSON results file")
    p.add_argument("--chart", type=Path, help="chart file (default: --out with .png)")
    p.add_argument("--users", type=int, default=20, help="users in the mix phase (default %(default)s)")
    p.add_argument("--duration", default="30s", help="length of the mix phase (default %(default)s)")
    p.add_argument("--wait", default="0.1,0.5", help="MIN,MAX wait between tasks in the mix (default %(default)s)")
    p.add_argument("--home-users", type=int, default=20, help="users in the home throughput phase")
    p.add_argument("--home-duration", default="20s")
    p.add_argument("--fanout-users", type=int, default=50, help="users in the fan-out comparison")
    p.add_argument("--fanout-duration", default="15s")
    p.add_argument("--fanout-rounds", type=int, default=3, help="A/B rounds of concurrent vs sequential")
    p.add_argument("--fanout-wait", default="1,3",
                   help="MIN,MAX wait in the fan-out comparison: a pace the shop keeps up with, so the "
                        "latency shows the call graph's critical path, not queueing (default %(default)s)")
    p.add_argument("--port-offset", type=int, default=None, help="runner port offset (default: a free one)")
    args = p.parse_args(argv)
    for text in (args.duration, args.home_duration, args.fanout_duration):
        try:
            loadgen.duration_seconds(text)
        except loadgen.LoadgenError as exc:
            p.error(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    csv_dir = args.out.parent / "bench-shop-csv"
    csv_dir.mkdir(exist_ok=True)

    try:
        shop = start_shop(args.port_offset)
    except ShopError as exc:
        print(f"bench: the shop did not start: {exc}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "shop": {"base_url": shop.base_url, "redis": bool(shop.redis_port), "access_log": "errors"},
    }
    try:
        # warm-up: channels connected, templates compiled, caches hot
        loadgen.run(shop.base_url, 5, "5s", wait="0,0.1", mix="shop", quiet=True)
        mix = measure(shop, "mix", users=args.users, duration=args.duration, wait=args.wait, mix="shop",
                      csv_dir=csv_dir)
        results["mix"] = mix
        print_phase(f"Traffic mix at {args.users} users", mix)

        home = measure(shop, "home", users=args.home_users, duration=args.home_duration, wait="0,0", mix="home",
                       csv_dir=csv_dir)
        results["home_throughput"] = home
        home_rps = route(home, "/")["rps"]
        home_p99 = route(home, "/").get("p99")
        print_phase(f"Home page at {args.home_users} users, no wait", home)

        # A/B/A/B: alternating the modes evens out whatever else the machine is doing meanwhile
        fan: dict[str, Any] = {"concurrent": [], "sequential": []}
        for i in range(args.fanout_rounds):
            for mode in ("concurrent", "sequential"):
                # a fresh frontend for every round, both modes; no caches: every call of the page is made
                restart_frontend(shop, mode, cache_ttl="0")
                loadgen.run(shop.base_url, 5, "3s", wait="0,0.1", mix="home", quiet=True)  # warm it up
                phase = measure(shop, f"fanout-{mode}-{i + 1}", users=args.fanout_users,
                                duration=args.fanout_duration, wait=args.fanout_wait, mix="home", csv_dir=csv_dir)
                fan[mode].append(phase)
                print_phase(f"Home page, fan-out {mode} (round {i + 1}), {args.fanout_users} users", phase)
        restart_frontend(shop, "concurrent")
        p50s = {mode: [route(ph, "/")["p50"] for ph in phases] for mode, phases in fan.items()}
        p50_c, p50_s = (statistics.median(v) if all(v) else None for v in (p50s["concurrent"], p50s["sequential"]))
        ratio = round(p50_c / p50_s, 3) if p50_c and p50_s else None
        calls = home_calls_only(shop)
        results["fanout_calls_only"] = calls
        results["fanout"] = {"rounds": fan, "home_p50_ms": p50s, "median_p50_concurrent_ms": p50_c,
                             "median_p50_sequential_ms": p50_s, "p50_ratio_concurrent_to_sequential": ratio}
    finally:
        shop.stop()

    errors = mix["failures"] + home["failures"] + sum(ph["failures"] for phs in fan.values() for ph in phs)
    verdict = {
        "fanout_p50_ratio": ratio, "fanout_ratio_target": TARGET_RATIO,
        "fanout_ratio_met": ratio is not None and ratio <= TARGET_RATIO,
        "home_pages_per_second": home_rps, "home_rps_target": TARGET_HOME_RPS,
        "home_rps_met": home_rps >= TARGET_HOME_RPS,
        "home_p99_ms": home_p99, "home_p99_target_ms": TARGET_HOME_P99_MS,
        "home_p99_met": home_p99 is not None and home_p99 <= TARGET_HOME_P99_MS,
        "errors": errors, "zero_errors": errors == 0,
        "fanout_calls_only_ratio": calls.get("ratio"),
    }
    results["summary"] = verdict
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\nSummary")
    print(f"  mix: {mix['requests_per_second']} req/s, p50 {mix['p50_ms']} ms, p95 {mix['p95_ms']} ms, "
          f"p99 {mix['p99_ms']} ms, {mix['failures']} errors, {mix['cpu_seconds_per_request']} CPU s/request")
    print(f"  home page: {home_rps:.1f} pages/s at {args.home_users} users "
          f"(target >= {TARGET_HOME_RPS:.0f}: {'met' if verdict['home_rps_met'] else 'NOT met'}), "
          f"p99 {home_p99} ms (target <= {TARGET_HOME_P99_MS:.0f}: {'met' if verdict['home_p99_met'] else 'NOT met'})")
    print(f"  fan-out: home p50 concurrent {p50s['concurrent']} ms vs sequential {p50s['sequential']} ms; "
          f"medians {p50_c} vs {p50_s} ms, ratio {ratio} "
          f"(target <= {TARGET_RATIO}: {'met' if verdict['fanout_ratio_met'] else 'NOT met'})")
    print(f"  fan-out on the backend calls alone (no HTTP, one page at a time): p50 concurrent "
          f"{calls.get('median_p50_concurrent_ms')} ms vs sequential {calls.get('median_p50_sequential_ms')} ms, "
          f"ratio {calls.get('ratio')}")
    print(f"  errors: {errors}")
    print(f"  results: {args.out}")
    chart = args.chart or args.out.with_suffix(".png")
    try:
        from boutique.bench import charts

        charts.shop_chart(results, chart, TARGET_HOME_RPS, TARGET_HOME_P99_MS)
        print(f"  chart: {chart}")
    except ImportError as exc:
        print(f"  no chart: {exc} (pip install -r requirements.txt)")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
