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

In Python (tests, benchmarks):

    with Shop(port_offset=300, mtls=False, redis="auto") as shop:
        shop.address("cartservice")  # "127.0.0.1:7370"
        shop.base_url                # "http://127.0.0.1:8380"
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import boutique
from boutique import service_catalog as catalog_mod

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0  # seconds for every service to report SERVING
STOP_TIMEOUT = 15.0  # seconds after SIGTERM before SIGKILL
LOG_TAIL_LINES = 30


class ShopError(RuntimeError):
    """The shop cannot start (port in use, a service failed, bad option); the message says why."""


class PortInUseError(ShopError):
    """A port the shop needs is taken; the message names the service and the port."""


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    expected_exit: bool = False
    reported: bool = False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def port_free(port: int, host: str = HOST) -> bool:
    """True when a server could bind host:port now (SO_REUSEADDR, as servers do: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _accepts(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _unservable(module: str) -> str:
    """Why `boutique serve` could not run boutique.<module> ('' when it can)."""
    try:
        mod = importlib.import_module(f"boutique.{module}")
    except Exception as exc:  # a missing or broken module: the runner skips it (loudly)
        return f"module boutique.{module} cannot be imported ({type(exc).__name__}: {exc})"
    if not hasattr(mod, "DEFINITION") and not hasattr(mod, "main"):
        return f"module boutique.{module} has neither DEFINITION nor main() yet"
    return ""


def free_port_offset(lo: int = 200, hi: int = 5400, tries: int = 50, **shop_kwargs: object) -> int:
    """A random port offset in [lo, hi) whose shop ports are all free right now (tests, benchmarks:
    several people can run theirs on one machine at the same time)."""
    rng = random.Random()
    for _ in range(tries):
        offset = rng.randrange(lo, hi)
        try:
            Shop(port_offset=offset, **shop_kwargs).check_ports()  # type: ignore[arg-type]
        except PortInUseError:
            continue
        return offset
    raise ShopError(f"no port offset in {lo}..{hi} with every port free ({tries} tries)")


def start_on_free_offset(tries: int = 5, **shop_kwargs: object) -> Shop:
    """Start a Shop(**shop_kwargs) on a random free port offset (tests, benchmarks); if a port is taken
    between the check and the bind (another run on this machine), try another offset."""
    for attempt in range(tries):
        shop = Shop(port_offset=free_port_offset(**shop_kwargs), **shop_kwargs)  # type: ignore[arg-type]
        try:
            return shop.start()
        except PortInUseError:
            if attempt == tries - 1:
                raise
    raise ShopError("unreachable")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Shop:
    """Starts the shop's services as processes on 127.0.0.1 and stops them again.

    port_offset: added to every catalog local port (service, metrics, redis).
    mtls:        make a throw-away CA + certificates; every gRPC hop uses mutual TLS.
    redis:       "auto" (use redis-server when on PATH), True (require it), False (in-memory cart).
    services:    a subset of catalog names to start (default: every deployable one).
    addresses:   name -> "host:port" of services (or redis) running elsewhere: not started, their
                 callers point there.
    env:         extra environment for every service (e.g. BOUTIQUE_ACCESS_LOG=errors).
    service_env: extra environment per service name (e.g. {"currencyservice": {"BOUTIQUE_WORKERS": "2"}}).
    log_dir:     where <name>.log files go (default: a temporary directory, removed by stop() unless
                 start() failed).
    out:         where progress and warnings are written (default: stderr).
    """

    def __init__(self, port_offset: int = 0, mtls: bool = False, redis: bool | str = "auto",
                 services: Iterable[str] | None = None, *, env: Mapping[str, str] | None = None,
                 service_env: Mapping[str, Mapping[str, str]] | None = None,
                 log_dir: str | os.PathLike[str] | None = None, startup_timeout: float = STARTUP_TIMEOUT,
                 stop_timeout: float = STOP_TIMEOUT, out: Callable[[str], None] = _stderr,
                 catalog: catalog_mod.Catalog | None = None, addresses: Mapping[str, str] | None = None) -> None:
        if redis not in (True, False, "auto"):
            raise ShopError(f"redis={redis!r}: use 'auto', True or False")
        if not isinstance(port_offset, int) or port_offset < 0:
            raise ShopError(f"port offset {port_offset!r} must be a non-negative integer")
        self.catalog = catalog or catalog_mod.default()
        self.port_offset = port_offset
        self.mtls = mtls
        self.redis_mode = redis
        self.extra_env = dict(env or {})
        self.service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.out = out
        self._redis_dir: Path | None = None
        self._own_log_dir = log_dir is None  # a temporary one: removed by stop() unless start() failed
        self._keep_logs = False
        # a temporary log dir is only named here; start() creates it (check_ports() alone leaves nothing)
        self.log_dir = Path(log_dir) if log_dir else \
            Path(tempfile.gettempdir()) / f"boutique-run-logs-{os.getpid()}-{random.getrandbits(48):012x}"
        deployable = [s.name for s in self.catalog.services.values() if s.deploy]
        if services is None:
            wanted = deployable
        else:
            wanted = list(services)
            for name in wanted:
                try:
                    svc = self.catalog.get(name)
                except catalog_mod.CatalogError as exc:
                    raise ShopError(str(exc)) from None
                if not svc.deploy:
                    raise ShopError(f"{name} is not a deployable service (catalog deploy: false)")
        for name in list(self.service_env):
            if name not in self.catalog.services:
                raise ShopError(f"service_env: unknown service {name!r}")
        self.addresses = self._check_addresses(addresses or {}, explicit=wanted if services is not None else [])
        wanted = [n for n in wanted if n not in self.addresses]
        self.skipped: dict[str, str] = {}  # name -> why it is not started
        self.names: list[str] = []
        for name in self._start_order(wanted):
            why = _unservable(self.catalog.get(name).module)
            if why:
                self.skipped[name] = why
            else:
                self.names.append(name)
        self.tls_dir: Path | None = None
        self.redis_port: int | None = None
        self._procs: dict[str, _Proc] = {}
        self._redis: _Proc | None = None
        self._tmp_dirs: list[Path] = []
        self._lock = threading.RLock()
        self._started = False
        self._cancel = threading.Event()

    def _check_addresses(self, addresses: Mapping[str, str], explicit: list[str]) -> dict[str, str]:
        """Validate --addr entries: a service someone calls (or redis), a host:port, not also --only."""
        from boutique.runtime.config import ConfigError, host_port

        checked: dict[str, str] = {}
        for name, addr in addresses.items():
            if name != self.catalog.redis.name:
                try:
                    svc = self.catalog.get(name)
                except catalog_mod.CatalogError as exc:
                    raise ShopError(f"--addr {name}={addr}: {exc}") from None
                if not svc.addr_env or not any(self.catalog.get(c).deploy for c in self.catalog.callers_of(name)):
                    raise ShopError(f"--addr {name}={addr}: none of the services the runner starts calls {name}, "
                                    "so there is nothing to point at it")
            if name in explicit:
                raise ShopError(f"--only {name} and --addr {name}={addr}: start ours or use the one at {addr}, "
                                "not both")
            try:
                checked[name] = host_port("--addr", {"--addr": addr}, purpose=name)
            except ConfigError:
                raise ShopError(f"--addr {name}={addr!r}: {addr!r} is not a HOST:PORT address") from None
        return checked

    # ----------------------------------------------------------------- layout
    def _start_order(self, names: list[str]) -> list[str]:
        """Callees before callers (a caller's channels are lazy, but this keeps logs readable)."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for callee in self.catalog.get(name).callees:
                if callee in names:
                    visit(callee)
            order.append(name)

        for name in names:
            visit(name)
        return order

    def port(self, name: str) -> int:
        """The local gRPC/HTTP port of a catalog service (or of redis), offset applied."""
        if name == self.catalog.redis.name:
            return self.catalog.redis.local_port + self.port_offset
        return self.catalog.get(name).local_port + self.port_offset

    def metrics_port(self, name: str) -> int:
        return self.catalog.get(name).local_metrics_port + self.port_offset

    def address(self, name: str) -> str:
        """'127.0.0.1:<port>' of a service (or of redis)."""
        return f"{HOST}:{self.port(name)}"

    @property
    def base_url(self) -> str:
        """The shop in the browser: the frontend's URL."""
        return f"http://{HOST}:{self.port('frontend')}"

    def metrics_targets(self) -> dict[str, str]:
        """name -> '127.0.0.1:<metrics port>' of every service this shop runs."""
        return {name: f"{HOST}:{self.metrics_port(name)}" for name in self.names}

    @property
    def redis_address(self) -> str | None:
        if self.catalog.redis.name in self.addresses:
            return self.addresses[self.catalog.redis.name]
        return f"{HOST}:{self.redis_port}" if self.redis_port else None

    def callee_address(self, name: str) -> str | None:
        """Where callers reach `name`: an --addr, ours when we run it, an inherited <X>_SERVICE_ADDR
        when we do not, else our port (nothing listens: callers get UNAVAILABLE). None = inherited."""
        if name in self.addresses:
            return self.addresses[name]
        addr_env = self.catalog.get(name).addr_env
        if name not in self.names and os.environ.get(addr_env, "").strip():
            return None
        return self.address(name)

    def env_for(self, name: str) -> dict[str, str]:
        """The environment the runner gives service `name` (on top of the runner's own env)."""
        svc = self.catalog.get(name)
        env: dict[str, str] = {
            "PORT": str(self.port(name)),
            "METRICS_PORT": str(self.metrics_port(name)),
            "LISTEN_ADDR": HOST,
        }
        for callee in svc.callees:
            if callee == self.catalog.redis.name:
                continue
            callee_svc = self.catalog.get(callee)
            if callee_svc.addr_env and (addr := self.callee_address(callee)) is not None:
                env[callee_svc.addr_env] = addr
        for key, value in svc.env.items():
            if key != "REDIS_ADDR":
                env[key] = value
        if "REDIS_ADDR" in svc.env and self.redis_address:
            env["REDIS_ADDR"] = self.redis_address
        if self.tls_dir is not None:
            env["TLS_CERT_FILE"] = str(self.tls_dir / f"{name}.pem")
            env["TLS_KEY_FILE"] = str(self.tls_dir / f"{name}.key")
            env["TLS_CA_FILE"] = str(self.tls_dir / "ca.pem")
        env.update(self.extra_env)
        env.update(self.service_env.get(name, {}))
        return env

    def _process_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        # The runner decides these; an inherited value must not leak into every service.
        for key in ("PORT", "METRICS_PORT", "LISTEN_ADDR", "REDIS_ADDR", "TLS_CERT_FILE", "TLS_KEY_FILE",
                    "TLS_CA_FILE", "BOUTIQUE_WORKERS", "BOUTIQUE_REUSEPORT", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(key, None)
        pkg_parent = str(Path(boutique.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env_for(name))
        return env

    # ------------------------------------------------------------ start / stop
    def _planned_ports(self, use_redis: bool) -> list[tuple[int, str]]:
        ports: list[tuple[int, str]] = []
        for name in self.names:
            ports.append((self.port(name), f"{name} ({self.catalog.get(name).protocol})"))
            ports.append((self.metrics_port(name), f"{name} metrics"))
        if use_redis:
            ports.append((self.port(self.catalog.redis.name), f"{self.catalog.redis.name} (redis-server)"))
        return ports

    def check_ports(self, use_redis: bool | None = None) -> None:
        """Fail with a message naming the service and port when a planned port is taken."""
        if use_redis is None:
            use_redis = self._want_redis()
        seen: dict[int, str] = {}
        for port, what in self._planned_ports(use_redis):
            if port > 65535:
                raise ShopError(f"port offset {self.port_offset} puts {what} on port {port}, beyond 65535")
            if port in seen:
                raise ShopError(f"{what} and {seen[port]} would both use port {port}")
            seen[port] = what
        busy = [(port, what) for port, what in self._planned_ports(use_redis) if not port_free(port)]
        if busy:
            lines = ", ".join(f"{what} needs {HOST}:{port}" for port, what in busy)
            raise PortInUseError(f"port already in use: {lines}. Stop whatever listens there or use another "
                            f"--port-offset (now {self.port_offset}).")

    def _want_redis(self) -> bool:
        if self.redis_mode is False:
            return False
        cart_needs = any("REDIS_ADDR" in self.catalog.get(n).env for n in self.names)
        if not cart_needs or self.catalog.redis.name in self.addresses:
            return False
        found = shutil.which("redis-server") is not None
        if self.redis_mode is True and not found:
            raise ShopError("redis=True but redis-server is not on PATH (apt-get install redis-server)")
        return found

    def start(self) -> Shop:
        """Start everything; returns when every service reports SERVING (or raises ShopError)."""
        with self._lock:
            if self._started:
                raise ShopError("this Shop is already started")
            self._started = True
            atexit.register(self.stop)
            for name, why in self.skipped.items():
                self.out(f"WARNING: {name} is NOT started: {why}; its callers will get UNAVAILABLE")
            for name, addr in self.addresses.items():
                host, _, port = addr.rpartition(":")
                if not _accepts(int(port), host.strip("[]")):
                    self.out(f"WARNING: nothing accepts connections at {addr} (--addr {name}) yet; its callers "
                             "get UNAVAILABLE until it does")
            try:
                use_redis = self._want_redis()
                self.check_ports(use_redis)
                self.log_dir.mkdir(parents=True, exist_ok=True)
                if self.mtls:
                    from boutique import certs

                    self.tls_dir = Path(tempfile.mkdtemp(prefix="boutique-mtls-"))
                    self._tmp_dirs.append(self.tls_dir)
                    certs.generate(self.tls_dir, self.names)
                if use_redis:
                    self._start_redis()
                for name in self.names:
                    if self._cancel.is_set():
                        raise ShopError("start-up interrupted")
                    self._spawn(name, truncate=True)
                self._wait_ready(self.names)
            except BaseException:
                self._keep_logs = True  # the caller needs them to see why
                self.stop()
                raise
        return self

    def _redis_data_dir(self) -> Path:
        """Where Redis keeps its append-only file: `redis/` beside the log folder of a shop with
        a log folder of its own (`boutique run`: .work/run/redis, so carts survive a Redis restart
        and the next run, as in the cluster), else a temporary folder removed by stop()."""
        if self._redis_dir is None:
            if self._own_log_dir:
                self._redis_dir = Path(tempfile.mkdtemp(prefix="boutique-redis-"))
                self._tmp_dirs.append(self._redis_dir)
            else:
                self._redis_dir = self.log_dir.parent / "redis"
                self._redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._redis_dir

    def restart_redis(self, kill: bool = False) -> None:
        """Stop Redis (SIGTERM, or SIGKILL with kill=True) and start it again on the same port
        and data folder; the append-only file brings the carts back."""
        with self._lock:
            if self._redis is None:
                raise ShopError("this shop runs no Redis")
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    self._redis.popen.kill()
                self._redis.expected_exit = True
                self._redis.popen.wait(timeout=10)
            else:
                self._terminate([self._redis])
            self._redis = None
            self._start_redis(truncate=False)

    def _start_redis(self, truncate: bool = True) -> None:
        port = self.port(self.catalog.redis.name)
        data_dir = self._redis_data_dir()
        log = self.log_dir / f"{self.catalog.redis.name}.log"
        redis_server = shutil.which("redis-server") or "redis-server"
        with open(log, "wb" if truncate else "ab") as fh:
            popen = subprocess.Popen(
                # appendonly in the data folder: a restarted Redis replays the carts (fsync every second)
                [redis_server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "yes",
                 "--appendfsync", "everysec", "--dir", str(data_dir), "--protected-mode", "yes"],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._redis = _Proc(self.catalog.redis.name, popen, log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise ShopError(f"redis-server exited with code {popen.returncode} on port {port}; "
                                f"log {log}:\n{_tail(log)}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    self.redis_port = port
                    return
            time.sleep(0.05)
        raise ShopError(f"redis-server did not answer PING on {HOST}:{port} within 10s; log {log}")

    def _spawn(self, name: str, truncate: bool) -> None:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb" if truncate else "ab") as fh:
            popen = subprocess.Popen(
                [sys.executable, "-m", "boutique.cli", "serve", name],
                env=self._process_env(name), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops the services in order
            )
        self._procs[name] = _Proc(name, popen, log)

    def _health_channel(self, name: str) -> grpc.Channel:
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 300)]
        if self.tls_dir is None:
            return grpc.insecure_channel(self.address(name), options=options)
        return grpc.secure_channel(self.address(name), self.client_credentials(), options=options)

    def client_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for a tool or test calling the services (needs mtls=True)."""
        if self.tls_dir is None:
            raise ShopError("client_credentials() needs a Shop started with mtls=True")
        return grpc.ssl_channel_credentials(
            root_certificates=(self.tls_dir / "ca.pem").read_bytes(),
            private_key=(self.tls_dir / "client.key").read_bytes(),
            certificate_chain=(self.tls_dir / "client.pem").read_bytes(),
        )

    def channel(self, name: str) -> grpc.Channel:
        """A new (sync) channel to a service, with the client certificate when mtls is on."""
        if self.tls_dir is None:
            return grpc.insecure_channel(self.address(name))
        return grpc.secure_channel(self.address(name), self.client_credentials())

    def _ready(self, name: str, channels: dict[str, grpc.Channel]) -> bool:
        svc = self.catalog.get(name)
        if not _accepts(self.port(name)):
            return False
        if not svc.is_grpc:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port(name)}/_healthz", timeout=2) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, OSError):
                return False
        if name not in channels:
            channels[name] = self._health_channel(name)
        stub = health_pb2_grpc.HealthStub(channels[name])
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    def _wait_ready(self, names: list[str]) -> None:
        pending = list(names)
        channels: dict[str, grpc.Channel] = {}
        deadline = time.monotonic() + self.startup_timeout
        try:
            while pending:
                if self._cancel.is_set():
                    raise ShopError("start-up interrupted")
                for name in list(pending):
                    proc = self._procs[name]
                    code = proc.popen.poll()
                    if code is not None:
                        tail = _tail(proc.log)
                        # the port was free at check_ports(), then something took it (often an
                        # outgoing connection's ephemeral port: 50051+ lies in Linux's range)
                        error = PortInUseError if code == 2 and "address in use" in tail.lower() else ShopError
                        raise error(f"{name} exited with code {code} during start-up; "
                                    f"last lines of {proc.log}:\n{tail}")
                    if self._ready(name, channels):
                        pending.remove(name)
                if pending:
                    if time.monotonic() > deadline:
                        tails = "\n".join(f"--- {n} ({self._procs[n].log}):\n{_tail(self._procs[n].log, 10)}"
                                          for n in pending)
                        raise ShopError(f"not ready after {self.startup_timeout:.0f}s: {', '.join(pending)}\n"
                                        f"{tails}")
                    time.sleep(0.05)
        finally:
            for ch in channels.values():
                ch.close()

    def _terminate(self, procs: list[_Proc]) -> None:
        """SIGTERM each, wait up to stop_timeout, then SIGKILL the process group."""
        for p in procs:
            p.expected_exit = True
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.out(f"{p.name} did not stop within {self.stop_timeout:.0f}s of SIGTERM: killing it")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
            # worker processes of a service (BOUTIQUE_WORKERS) share its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop every process (callers first), remove temporary files. Safe to call twice."""
        with self._lock:
            procs = [self._procs[n] for n in reversed(list(self._procs))]
            if procs:
                self._terminate(procs)
            if self._redis is not None:
                self._terminate([self._redis])
                self._redis = None
                self.redis_port = None
            self._procs.clear()
            for d in self._tmp_dirs:
                shutil.rmtree(d, ignore_errors=True)
            self._tmp_dirs.clear()
            if self._own_log_dir and self._started and not self._keep_logs:
                shutil.rmtree(self.log_dir, ignore_errors=True)
            self.tls_dir = None if self.mtls else self.tls_dir
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def stop_service(self, name: str) -> int:
        """Stop one running service (SIGTERM, graceful); returns its exit code."""
        with self._lock:
            proc = self._procs.get(name)
            if proc is None:
                raise ShopError(f"{name} is not running in this shop")
            self._terminate([proc])
            del self._procs[name]
            return proc.popen.returncode

    def start_service(self, name: str) -> None:
        """(Re)start one service of this shop and wait until it reports SERVING."""
        with self._lock:
            if name not in self.names:
                raise ShopError(f"{name} is not part of this shop (services: {', '.join(self.names)})")
            if name in self._procs and self._procs[name].popen.poll() is None:
                raise ShopError(f"{name} is already running (pid {self._procs[name].popen.pid})")
            if not port_free(self.port(name)):
                raise PortInUseError(f"port already in use: {name} needs {self.address(name)}")
            self._spawn(name, truncate=False)
            try:
                self._wait_ready([name])
            except ShopError:
                self._terminate([self._procs.pop(name)])
                raise

    def cancel(self) -> None:
        """Make a start() in progress give up (ShopError) at its next check; safe from a signal handler."""
        self._cancel.set()

    # ----------------------------------------------------------------- status
    def pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return proc.popen.pid if proc else None

    @property
    def redis_pid(self) -> int | None:
        return self._redis.popen.pid if self._redis is not None else None

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def exited(self) -> dict[str, int]:
        """Services that died on their own (not stopped by us): name -> exit code, each reported once."""
        out: dict[str, int] = {}
        with self._lock:
            for p in [*self._procs.values(), *([self._redis] if self._redis else [])]:
                code = p.popen.poll()
                if code is not None and not p.expected_exit and not p.reported:
                    p.reported = True
                    out[p.name] = code
        return out

    def table(self) -> str:
        rows = [("service", "address", "metrics", "pid")]
        for name in self.names:
            pid = self.pid(name)
            rows.append((name, self.address(name), f"{HOST}:{self.metrics_port(name)}", str(pid or "-")))
        if self._redis is not None:
            rows.append((self.catalog.redis.name, self.address(self.catalog.redis.name), "-",
                         str(self._redis.popen.pid)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for name, addr in self.addresses.items():
            lines.append(f"{name}  elsewhere: {addr} (--addr)")
        for name, why in self.skipped.items():
            lines.append(f"{name}  NOT STARTED: {why}")
        return "\n".join(lines)

    def __enter__(self) -> Shop:
        return self if self._procs else self.start()  # `with Shop(...).start() as shop:` works too

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- CLI
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
        print(shop.table())
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
                      f"{shop.log_path(name)}:\n{_tail(shop.log_path(name))}\n", file=sys.stderr, flush=True)
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
