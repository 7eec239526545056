"""The local shop's processes: every service as `python -m boutique.cli serve <name>` (and a
private redis-server), started in order, watched until SERVING, stopped callers first."""

from __future__ import annotations

import atexit
import contextlib
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from boutique.dev.shop.layout import HOST, PortInUseError, ShopError, ShopLayout, accepts, port_free
from boutique.runtime.config import TLSFiles
from boutique.runtime.tls import channel_credentials

STARTUP_TIMEOUT = 60.0  # seconds for every service to report SERVING
STOP_TIMEOUT = 15.0  # seconds after SIGTERM before SIGKILL
LOG_TAIL_LINES = 30


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    expected_exit: bool = False
    reported: bool = False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(log is empty)"


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


class Shop(ShopLayout):
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

    def __init__(self, *args: object, log_dir: str | os.PathLike[str] | None = None,
                 startup_timeout: float = STARTUP_TIMEOUT, stop_timeout: float = STOP_TIMEOUT,
                 out: Callable[[str], None] = _stderr, **layout: object) -> None:
        super().__init__(*args, **layout)  # type: ignore[arg-type]
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.out = out
        self._redis_dir: Path | None = None
        self._own_log_dir = log_dir is None  # a temporary one: removed by stop() unless start() failed
        self._keep_logs = False
        # a temporary log dir is only named here; start() creates it (check_ports() alone leaves nothing)
        self.log_dir = Path(log_dir) if log_dir else \
            Path(tempfile.gettempdir()) / f"boutique-run-logs-{os.getpid()}-{random.getrandbits(48):012x}"
        self._procs: dict[str, _Proc] = {}
        self._redis: _Proc | None = None
        self._tmp_dirs: list[Path] = []
        self._lock = threading.RLock()
        self._started = False
        self._cancel = threading.Event()


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
                if not accepts(int(port), host.strip("[]")):
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
                                f"log {log}:\n{tail(log)}")
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
        return channel_credentials(TLSFiles(cert=str(self.tls_dir / "client.pem"),
                                            key=str(self.tls_dir / "client.key"), ca=str(self.tls_dir / "ca.pem")))

    def channel(self, name: str) -> grpc.Channel:
        """A new (sync) channel to a service, with the client certificate when mtls is on."""
        if self.tls_dir is None:
            return grpc.insecure_channel(self.address(name))
        return grpc.secure_channel(self.address(name), self.client_credentials())

    def _ready(self, name: str, channels: dict[str, grpc.Channel]) -> bool:
        svc = self.catalog.get(name)
        if not accepts(self.port(name)):
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
                        last = tail(proc.log)
                        # the port was free at check_ports(), then something took it (often an
                        # outgoing connection's ephemeral port: 50051+ lies in Linux's range)
                        error = PortInUseError if code == 2 and "address in use" in last.lower() else ShopError
                        raise error(f"{name} exited with code {code} during start-up; "
                                    f"last lines of {proc.log}:\n{last}")
                    if self._ready(name, channels):
                        pending.remove(name)
                if pending:
                    if time.monotonic() > deadline:
                        tails = "\n".join(f"--- {n} ({self._procs[n].log}):\n{tail(self._procs[n].log, 10)}"
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


    def __enter__(self) -> Shop:
        return self if self._procs else self.start()  # `with Shop(...).start() as shop:` works too

    def __exit__(self, *exc: object) -> None:
        self.stop()

