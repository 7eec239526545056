"""Charts of the benchmarks' results (PNG, matplotlib without a display).

services_chart: per RPC, requests/s, server CPU per call and p50/p99 latency, ours (1 and 2
processes) beside the baseline; and the PlaceOrder latency distribution with its target.
shop_chart: the shop benchmark's routes (requests/s and p50/p95/p99), the home page against its
targets, and the fan-out comparison.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OURS_1, OURS_2, BASE = "#2b6cb0", "#90cdf4", "#a0a0a0"


def _median(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r[key] == r[key]]  # drop NaN
    return statistics.median(values) if values else 0.0


def _series(results: Sequence[Mapping[str, Any]], rpcs: list[str], role: str, workers: int | None,
            key: str) -> list[float]:
    out = []
    for rpc in rpcs:
        rows = [r for r in results if r["rpc"] == rpc and r["role"] == role
                and (workers is None or r["workers"] == workers)]
        out.append(_median(rows, key) if rows else 0.0)
    return out


def _bars(ax: Any, labels: list[str], groups: list[tuple[str, list[float], str]], ylabel: str, title: str,
          hatched_from: int | None = None) -> None:
    """Grouped bars; groups from index `hatched_from` on are hatched."""
    width = 0.8 / max(len(groups), 1)
    for i, (name, values, color) in enumerate(groups):
        xs = [x + (i - (len(groups) - 1) / 2) * width for x in range(len(labels))]
        hatch = "//" if hatched_from is not None and i >= hatched_from else None
        ax.bar(xs, values, width, label=name, color=color, hatch=hatch, edgecolor="white" if hatch else None)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def services_chart(report: Mapping[str, Any], place_order_ms: Mapping[str, list[float]], path: Path) -> Path:
    results = report["results"]
    rpcs = list(dict.fromkeys(r["rpc"] for r in results if r["rpc"] != "PlaceOrder"))
    workers = sorted({r["workers"] for r in results if r["role"] == "ours"})
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    fig.suptitle(f"make bench-services: {report['client']} load client, {report['machine']['cpus']} CPUs, "
                 f"access log {report['settings']['access_log']}", fontsize=12)

    def groups(key: str) -> list[tuple[str, list[float], str]]:
        out = [(f"ours, {w} process{'es' if w > 1 else ''}", _series(results, rpcs, "ours", w, key),
                OURS_1 if w == 1 else OURS_2) for w in workers]
        if any(r["role"] == "baseline" for r in results):
            out.append(("baseline (bare grpc.aio)", _series(results, rpcs, "baseline", None, key), BASE))
        return out

    if rpcs:
        _bars(axes[0][0], rpcs, groups("rps"), "requests/s", "Throughput per RPC (higher is better)")
        _bars(axes[0][1], rpcs, groups("server_cpu_us_per_call"), "server CPU µs per call",
              "Server CPU per call (lower is better)")
        one = [g for g in groups("p99_ms") if not g[0].startswith("ours, 2")]
        p50 = [g for g in groups("p50_ms") if not g[0].startswith("ours, 2")]
        _bars(axes[1][0], rpcs, [(f"{n} p50", v, c) for n, v, c in p50]
              + [(f"{n} p99", v, c) for n, v, c in one], "ms", "Latency per RPC, 1 process (p50; p99 hatched)",
              hatched_from=len(p50))
    ax = axes[1][1]
    target = 40.0
    for (label, values), color in zip(place_order_ms.items(), (OURS_1, OURS_2, BASE), strict=False):
        if values:
            ax.hist(values, bins=50, alpha=0.6, color=color, label=f"{label} ({len(values)} orders)")
            ordered = sorted(values)
            for q, style in ((0.5, ":"), (0.99, "--")):
                v = ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
                ax.axvline(v, color=color, linestyle=style, linewidth=1)
    ax.axvline(target, color="#c53030", linewidth=1.5, label=f"p99 target {target:.0f} ms")
    ax.set_xlabel("PlaceOrder latency, ms (dotted p50, dashed p99)")
    ax.set_ylabel("orders")
    ax.set_title("PlaceOrder latency distribution, 8 concurrent orders", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def shop_chart(results: Mapping[str, Any], path: Path, home_rps_target: float, home_p99_target: float) -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.5), gridspec_kw={"width_ratios": [3, 1, 1.5, 1.5]})
    mix = results.get("mix", {})
    routes = sorted(mix.get("routes", []), key=lambda r: (r["name"], r["method"]))
    labels = [f"{r['method']} {r['name']}"[:32] for r in routes]
    _bars(axes[0], labels, [("p50", [r["p50"] or 0 for r in routes], "#90cdf4"),
                            ("p95", [r["p95"] or 0 for r in routes], "#4299e1"),
                            ("p99", [r["p99"] or 0 for r in routes], "#2b6cb0")],
          "ms", f"Traffic mix at {mix.get('users', '?')} users: latency per route "
                f"({mix.get('requests_per_second', 0)} req/s in all)")
    home = results.get("home_throughput", {})
    home_route = next((r for r in home.get("routes", []) if r["name"] == "/" and r["method"] == "GET"), None)
    users = home.get("users", "?")
    ax = axes[1]
    if home_route:
        ax.bar_label(ax.bar(["home pages/s"], [home_route["rps"]], color=OURS_1, width=0.5), fmt="%.0f/s")
    ax.axhline(home_rps_target, color="#c53030", linestyle="--", label=f"target >= {home_rps_target:.0f}/s")
    ax.set_ylabel("pages/s")
    ax.set_title(f"Home page throughput, {users} users, no wait", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax = axes[2]
    if home_route:
        values = [home_route.get(k) or 0 for k in ("p50", "p95", "p99")]
        ax.bar_label(ax.bar(["p50", "p95", "p99"], values, color=[OURS_2, "#4299e1", OURS_1]), fmt="%.0f ms")
    ax.axhline(home_p99_target, color="#c53030", linestyle="--", label=f"p99 target <= {home_p99_target:.0f} ms")
    ax.set_ylabel("ms")
    ax.set_title(f"Home page latency, {users} users", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    fan = results.get("fanout", {})
    p50s = fan.get("home_p50_ms", {})
    ax = axes[3]
    modes = [m for m in ("concurrent", "sequential") if p50s.get(m)]
    for i, mode in enumerate(modes):
        ax.scatter([i] * len(p50s[mode]), p50s[mode], color=OURS_1 if mode == "concurrent" else BASE, zorder=3)
        ax.bar([i], [statistics.median(p50s[mode])], color=OURS_2 if mode == "concurrent" else "#e2e2e2")
    ax.set_xticks(range(len(modes)))
    ax.set_xticklabels(modes)
    ax.set_ylabel("home p50, ms (bars: median of rounds)")
    ax.set_title(f"Fan-out: concurrent / sequential = {fan.get('p50_ratio_concurrent_to_sequential')}", fontsize=10)
    for a in axes:
        a.grid(axis="y", alpha=0.3)
    fig.suptitle("make bench: the shop through the frontend", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
