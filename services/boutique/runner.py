"""The local runner: the whole shop as processes on 127.0.0.1.

    boutique run [--mtls] [--port-offset N] [--no-redis] [--only NAME ...] [--addr NAME=HOST:PORT ...]
                 [--log-dir DIR] [--follow]

Every deployable catalog service (catalog `deploy: false`, the load generator,
is left out) runs as `python -m boutique.cli serve <name>` on 127.0.0.1 at its
catalog `local_port` + offset, with metrics on `local_metrics_port` + offset.
Callee addresses come from the catalog's `addr_env` names. The cart gets
REDIS_ADDR pointing at a private redis-server (catalog redis `local_port` +
offset) when redis-server is on PATH, otherwise no REDIS_ADDR and it keeps carts
in memory. `--addr NAME=HOST:PORT` swaps in a service running elsewhere (an original Online
Boutique service, say): the runner does not start NAME and points its callers at HOST:PORT
(`--addr redis-cart=HOST:PORT` the same for the cart's Redis). A service that `--only` leaves out
and that the environment already names (`<X>_SERVICE_ADDR`, inherited) is reached there.
With --mtls a throw-away CA and per-service certificates are made
(boutique.certs) and every gRPC hop uses mutual TLS; the frontend's HTTP
listener stays plain HTTP for the browser.

In Python (tests, benchmarks), from boutique.dev.shop:

    with Shop(port_offset=300, mtls=False, redis="auto") as shop:
        shop.address("cartservice")  # "127.0.0.1:7370"
        shop.base_url                # "http://127.0.0.1:8380"
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from boutique.dev.shop import PortInUseError, Shop, ShopError
from boutique.dev.shop.layout import HOST
from boutique.dev.shop.processes import tail


# --------------------------------------------------------------------- CLI
def table(shop: Shop) -> str:
    """The running shop as a table: service, address, metrics address, pid (and what runs elsewhere)."""
    rows = [("service", "address", "metrics", "pid")]
    for name in shop.names:
        rows.append((name, shop.address(name), f"{HOST}:{shop.metrics_port(name)}", str(shop.pid(name) or "-")))
    if shop.redis_pid is not None:
        rows.append((shop.catalog.redis.name, shop.address(shop.catalog.redis.name), "-", str(shop.redis_pid)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{name}  elsewhere: {addr} (--addr)" for name, addr in shop.addresses.items()]
    lines += [f"{name}  NOT STARTED: {why}" for name, why in shop.skipped.items()]
    return "\n".join(lines)


def _follow(shop: Shop, stop: threading.Event) -> None:
    """Print new log lines of every service, prefixed with its name."""
    offsets: dict[Path, int] = {}
    width = max((len(n) for n in shop.names), default=10)
    while not stop.is_set():
        for name in shop.names:
            path = shop.log_path(name)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offsets.get(path, 0))
                    data = fh.read()
                    offsets[path] = fh.tell()
            except OSError:
                continue
            for line in data.decode(errors="replace").splitlines():
                print(f"{name:<{width}} | {line}", flush=True)
        stop.wait(0.25)


def _run(args: argparse.Namespace) -> int:
    log_dir = args.log_dir or (Path(".work/run/logs") if args.port_offset == 0
                               else Path(f".work/run/offset-{args.port_offset}/logs"))
    try:
        shop = Shop(port_offset=args.port_offset, mtls=args.mtls, redis=False if args.no_redis else "auto",
                    services=args.only or None, addresses=_addresses(args.addr or []), log_dir=log_dir.resolve(),
                    env={"BOUTIQUE_ACCESS_LOG": args.access_log} if args.access_log else None)
    except ShopError as exc:
        print(f"boutique run: {exc}", file=sys.stderr)
        return 2

    interrupted = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        if not interrupted["signal"]:
            interrupted["signal"] = signum
            shop.cancel()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    follow_stop = threading.Event()
    died: dict[str, int] = {}
    code = 0
    try:
        print(f"starting {len(shop.names)} services (port offset {shop.port_offset}, "
              f"mTLS {'on' if args.mtls else 'off'}) ...", flush=True)
        shop.start()
        print(table(shop))
        print(f"\nshop:  {shop.base_url}/" + ("" if "frontend" in shop.names else "  (frontend not running)"))
        print(f"logs:  {shop.log_dir}/<service>.log")
        print(f"redis: {shop.redis_address or 'not running: the cart keeps carts in memory'}")
        if shop.tls_dir:
            print(f"mTLS:  CA and certificates in {shop.tls_dir} (client.pem/client.key for tools)")
        print("Ctrl-C stops everything.", flush=True)
        if args.follow:
            threading.Thread(target=_follow, args=(shop, follow_stop), daemon=True).start()
        while not interrupted["signal"]:
            time.sleep(0.2)
            for name, rc in shop.exited().items():
                died[name] = rc
                print(f"\n!!! {name} exited unexpectedly with code {rc}; last lines of "
                      f"{shop.log_path(name)}:\n{tail(shop.log_path(name))}\n", file=sys.stderr, flush=True)
    except ShopError as exc:
        if not interrupted["signal"]:
            print(f"boutique run: {exc}", file=sys.stderr, flush=True)
            code = 2 if isinstance(exc, PortInUseError) else 1
    finally:
        follow_stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if interrupted["signal"]:
            print(f"\n{signal.Signals(interrupted['signal']).name}: stopping the shop ...", flush=True)
        shop.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    if died:
        print(f"stopped; these services had died while running: {', '.join(sorted(died))}", file=sys.stderr)
        return 1
    if code == 0:
        print("stopped.", flush=True)
    return code


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `boutique run` (and `boutique certs`)."""
    p = subparsers.add_parser("run", help="run the whole shop locally on 127.0.0.1",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mtls", action="store_true", help="mutual TLS on every gRPC hop (throw-away CA)")
    p.add_argument("--port-offset", type=_offset, default=0, metavar="N",
                   help="add N to every catalog local port (run several shops side by side)")
    p.add_argument("--no-redis", action="store_true", help="do not start redis-server: in-memory cart")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="start only this catalog service (repeatable)")
    p.add_argument("--addr", action="append", metavar="NAME=HOST:PORT",
                   help="use the service (or redis-cart) at HOST:PORT instead of starting ours (repeatable)")
    p.add_argument("--log-dir", type=Path, help="where <service>.log files go (default .work/run/logs)")
    p.add_argument("--access-log", choices=("all", "errors", "off"),
                   help="BOUTIQUE_ACCESS_LOG for every service (default: inherited, else errors)")
    p.add_argument("-f", "--follow", action="store_true", help="also print every service's log lines here")
    p.set_defaults(func=_run)

    from boutique import certs

    certs.add_parser(subparsers)


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 60000:
        raise argparse.ArgumentTypeError(f"{value} is out of range 0..59999")
    return value


def _addresses(entries: list[str]) -> dict[str, str]:
    """`--addr NAME=HOST:PORT` entries -> {name: host:port}; Shop checks names and addresses."""
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, addr = entry.partition("=")
        name, addr = name.strip(), addr.strip()
        if not sep or not name or not addr:
            raise ShopError(f"--addr {entry!r}: expected NAME=HOST:PORT, e.g. --addr cartservice=127.0.0.1:7070")
        if name in out and out[name] != addr:
            raise ShopError(f"--addr {name} given twice ({out[name]} and {addr})")
        out[name] = addr
    return out
