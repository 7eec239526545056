"""Service settings from the environment.

Env names follow the contract (PORT, <X>_SERVICE_ADDR, REDIS_ADDR, ...). Anything
wrong is a ConfigError whose message names the variable; the CLI prints it and
exits 2 instead of showing a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def env_str(name: str, default: str | None = None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"{name} is required but not set")
    return default


def env_int(name: str, default: int, env: Mapping[str, str] | None = None, *, lo: int = 0, hi: int = 65535) -> int:
    raw = env_str(name, str(default), env)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range {lo}..{hi}")
    return value


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    raw = env_str(name, str(default), env)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if env is None else env).get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")


def host_port(name: str, env: Mapping[str, str] | None = None, purpose: str = "") -> str:
    """A required host:port address, e.g. CART_SERVICE_ADDR=cartservice:7070."""
    what = f" (host:port of {purpose})" if purpose else " (host:port)"
    try:
        value = env_str(name, None, env)
    except ConfigError:
        raise ConfigError(f"{name} is required but not set{what}") from None
    m = _HOSTPORT.match(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ConfigError(f"{name}={value!r} is not a host:port address{what}")
    return value


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str
    ca: str  # with a CA: servers require client certificates; clients verify servers

    @property
    def mutual(self) -> bool:
        return bool(self.ca)


@dataclass(frozen=True)
class ServiceConfig:
    """Settings every service shares."""

    service: str
    port: int
    listen_host: str
    metrics_port: int  # 0 turns the metrics endpoint off
    shutdown_grace: float
    shutdown_drain: float
    access_log: str  # all | errors | off
    log_level: str
    tls: TLSFiles | None
    workers: int
    # A plaintext port serving only grpc.health.v1 (0: none): the kubelet's gRPC probes cannot
    # present a client certificate, so under mutual TLS they check this port instead.
    health_port: int = 0

    @property
    def listen_addr(self) -> str:
        return f"{self.listen_host}:{self.port}"

    @classmethod
    def from_env(cls, service: str, default_port: int, env: Mapping[str, str] | None = None) -> ServiceConfig:
        access_log = env_str("BOUTIQUE_ACCESS_LOG", "all", env).lower()
        if access_log not in {"all", "errors", "off"}:
            raise ConfigError(f"BOUTIQUE_ACCESS_LOG={access_log!r} must be all, errors or off")
        level = env_str("LOG_LEVEL", "info", env).upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"LOG_LEVEL={level.lower()!r} must be debug, info, warning or error")
        return cls(
            service=service,
            port=env_int("PORT", default_port, env),
            listen_host=env_str("LISTEN_ADDR", "[::]", env),
            metrics_port=env_int("METRICS_PORT", 9464, env),
            shutdown_grace=env_float("SHUTDOWN_GRACE_SECONDS", 10.0, env),
            shutdown_drain=env_float("SHUTDOWN_DRAIN_SECONDS", 0.0, env),
            access_log=access_log,
            log_level=level,
            tls=tls_from_env(env),
            workers=env_int("BOUTIQUE_WORKERS", 1, env, lo=1, hi=64),
            health_port=env_int("HEALTH_PORT", 0, env),
        )


def tls_from_env(env: Mapping[str, str] | None = None) -> TLSFiles | None:
    """TLS_CERT_FILE + TLS_KEY_FILE turn TLS on; TLS_CA_FILE makes it mutual."""
    env = os.environ if env is None else env
    cert, key, ca = (env.get(n, "").strip() for n in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE"))
    if not (cert or key or ca):
        return None
    if not (cert and key):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    for name, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key), ("TLS_CA_FILE", ca)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{name}={path!r}: no such file")
    return TLSFiles(cert=cert, key=key, ca=ca)
