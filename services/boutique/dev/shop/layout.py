"""Where the local shop puts everything: which services it starts, in which order, on which ports,
and the environment each one gets (callee addresses, Redis, TLS files). No process is started
here; `boutique.dev.shop.processes.Shop` adds the supervision."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

import boutique
from boutique import service_catalog as catalog_mod

HOST = "127.0.0.1"


class ShopError(RuntimeError):
    """The shop cannot start (port in use, a service failed, bad option); the message says why."""


class PortInUseError(ShopError):
    """A port the shop needs is taken; the message names the service and the port."""



def port_free(port: int, host: str = HOST) -> bool:
    """True when a server could bind host:port now (SO_REUSEADDR, as servers do: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def accepts(port: int, host: str = HOST) -> bool:
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


class ShopLayout:
    """The plan of a local shop (see Shop for the arguments): validated at construction."""

    def __init__(self, port_offset: int = 0, mtls: bool = False, redis: bool | str = "auto",
                 services: Iterable[str] | None = None, *, env: Mapping[str, str] | None = None,
                 service_env: Mapping[str, Mapping[str, str]] | None = None,
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
