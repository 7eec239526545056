"""`boutique loadgen`: headless Locust against a frontend URL, with our own Locust file.

    boutique loadgen --host http://127.0.0.1:8080 --users 10 --duration 60s

Locust runs as a subprocess (it monkey-patches the process with gevent). The
command prints Locust's statistics table and exits 1 when any request failed
(unless --allow-failures) or when fewer than --min-requests were made.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = {"shop": "ShopUser", "home": "HomeUser"}
_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?$")


class LoadgenError(ValueError):
    """A bad option; the message names it."""


@dataclass
class RouteStats:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float  # milliseconds
    p95: float
    p99: float
    avg: float


@dataclass
class Result:
    returncode: int  # locust's own exit code
    aggregated: RouteStats | None
    routes: list[RouteStats] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.aggregated.requests if self.aggregated else 0

    @property
    def failure_count(self) -> int:
        return self.aggregated.failures if self.aggregated else 0


def duration_seconds(text: str) -> int:
    """'60s', '1m30s', '2h' -> seconds (Locust's --run-time syntax)."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m:
        raise LoadgenError(f"--duration {text!r} is not a duration like 20s, 5m or 1h30m")
    total = 0
    for part, mult in zip(m.groups(), (3600, 60, 1), strict=True):
        if part:
            total += int(part[:-1]) * mult
    if total <= 0:
        raise LoadgenError(f"--duration {text!r} must be longer than 0s")
    return total


def parse_wait(text: str) -> tuple[float, float]:
    try:
        lo_s, _, hi_s = text.partition(",")
        lo, hi = float(lo_s), float(hi_s or lo_s)
    except ValueError:
        raise LoadgenError(f"--wait {text!r} must be MIN,MAX seconds, like 1,10 or 0.1,0.5") from None
    if lo < 0 or hi < lo:
        raise LoadgenError(f"--wait {text!r}: need 0 <= MIN <= MAX")
    return lo, hi


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0)
    except ValueError:
        return 0.0


def read_stats(prefix: str | Path) -> tuple[RouteStats | None, list[RouteStats], list[dict[str, str]]]:
    """Parse Locust's <prefix>_stats.csv and <prefix>_failures.csv."""
    rows: list[RouteStats] = []
    aggregated = None
    stats_file = Path(f"{prefix}_stats.csv")
    if stats_file.exists():
        with stats_file.open(newline="") as fh:
            for row in csv.DictReader(fh):
                st = RouteStats(method=row.get("Type", ""), name=row.get("Name", ""),
                                requests=int(_num(row, "Request Count")), failures=int(_num(row, "Failure Count")),
                                rps=_num(row, "Requests/s"), p50=_num(row, "50%"), p95=_num(row, "95%"),
                                p99=_num(row, "99%"), avg=_num(row, "Average Response Time"))
                if st.name == "Aggregated":
                    aggregated = st
                else:
                    rows.append(st)
    failures: list[dict[str, str]] = []
    failures_file = Path(f"{prefix}_failures.csv")
    if failures_file.exists():
        with failures_file.open(newline="") as fh:
            failures = list(csv.DictReader(fh))
    return aggregated, rows, failures


def locust_command(host: str, users: int, spawn_rate: float, duration: str, mix: str, csv_prefix: str | Path,
                   ) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--host", host,
            "--csv", str(csv_prefix), "--stop-timeout", "10", "--loglevel", "WARNING",
            USER_CLASSES[mix]]


def run(host: str, users: int, duration: str, *, spawn_rate: float | None = None, wait: str = "1,10",
        mix: str = "shop", csv_prefix: str | Path | None = None, quiet: bool = False,
        timeout: float | None = None) -> Result:
    """Run Locust headless and return its statistics (the table is printed unless quiet)."""
    if not re.match(r"^https?://[^/\s]+", host):
        raise LoadgenError(f"--host {host!r} must be a URL like http://127.0.0.1:8080")
    if users < 1:
        raise LoadgenError("--users must be at least 1")
    if mix not in USER_CLASSES:
        raise LoadgenError(f"--mix {mix!r} must be one of {', '.join(USER_CLASSES)}")
    seconds = duration_seconds(duration)
    lo, hi = parse_wait(wait)
    rate = spawn_rate if spawn_rate is not None else float(users)
    if rate <= 0:
        raise LoadgenError("--spawn-rate must be greater than 0")
    tmp = None
    if csv_prefix is None:
        tmp = tempfile.TemporaryDirectory(prefix="boutique-loadgen-")
        csv_prefix = Path(tmp.name) / "locust"
    env = {**os.environ, "LOADGEN_WAIT": f"{lo},{hi}", "PYTHONUNBUFFERED": "1"}
    cmd = locust_command(host.rstrip("/"), users, rate, duration, mix, csv_prefix)
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                              stderr=subprocess.DEVNULL if quiet else None,
                              timeout=timeout or seconds + 120)
        aggregated, routes, failures = read_stats(csv_prefix)
        return Result(proc.returncode, aggregated, routes, failures)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _main(args: argparse.Namespace) -> int:
    try:
        result = run(args.host, args.users, args.duration, spawn_rate=args.spawn_rate, wait=args.wait,
                     mix=args.mix, csv_prefix=args.csv)
    except LoadgenError as exc:
        print(f"boutique loadgen: {exc}", file=sys.stderr)
        return 2
    if result.aggregated is None:
        print("boutique loadgen: Locust produced no statistics (did it start? see above)", file=sys.stderr)
        return 1
    print(f"\nboutique loadgen: {result.requests} requests, {result.failure_count} failures")
    for f in result.failures[:10]:
        print(f"  {f.get('Method', '')} {f.get('Name', '')}: {f.get('Error', '')} x{f.get('Occurrences', '')}")
    if result.requests < args.min_requests:
        print(f"boutique loadgen: only {result.requests} requests (< --min-requests {args.min_requests})",
              file=sys.stderr)
        return 1
    if args.allow_failures:
        return 0
    if result.failure_count:
        return 1
    if result.returncode != 0:  # Locust itself saw failures or errors the CSV did not show
        print(f"boutique loadgen: locust exited with code {result.returncode}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("loadgen", help="headless load (our Locust file) against a frontend URL",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="http://127.0.0.1:8080", help="frontend base URL (default %(default)s)")
    p.add_argument("--users", type=int, default=10, help="concurrent users (default %(default)s)")
    p.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default: all at once)")
    p.add_argument("--duration", default="60s", help="run time, e.g. 20s, 5m (default %(default)s)")
    p.add_argument("--wait", default="1,10",
                   help="MIN,MAX seconds each user waits between tasks (default %(default)s, the original's)")
    p.add_argument("--mix", choices=sorted(USER_CLASSES), default="shop",
                   help="shop: the contract's traffic mix; home: the home page only (default %(default)s)")
    p.add_argument("--csv", default=None, help="keep Locust's CSV statistics under this prefix")
    p.add_argument("--min-requests", type=int, default=1, help="fail if fewer requests were made (default 1)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even if some requests failed")
    p.set_defaults(func=_main)
