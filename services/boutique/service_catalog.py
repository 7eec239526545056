"""The service catalog (group_vars/all/catalog.yml) as typed Python objects.

The catalog is the one list of services: the Ansible roles read it as YAML, and
the Python side (runner, gRPC client policy, tests) reads it through here.
Where the file lives: $BOUTIQUE_CATALOG, else the repository's group_vars.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

_REPO_CATALOG = Path(__file__).resolve().parents[2] / "group_vars" / "all" / "catalog.yml"
# The one duration grammar of the catalog (the Ansible roles and the manifest lint use it too).
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class CatalogError(ValueError):
    """The catalog file is missing or an entry is malformed."""


def parse_duration(text: str, where: str = "duration") -> float:
    """'500ms' / '2s' / '1.5m' / '1h' -> seconds."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise CatalogError(f"{where}: {text!r} is not a duration like 500ms, 2s, 1m or 1h")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


@dataclass(frozen=True)
class Method:
    name: str
    idempotent: bool


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    protocol: str
    addr_env: str
    port: int
    service_port: int
    local_port: int
    metrics_port: int
    local_metrics_port: int
    callees: tuple[str, ...]
    methods: tuple[Method, ...]
    timeout: float
    retry_attempts: int
    per_try_timeout: float
    grpc_service: str = ""
    deploy: bool = True
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_grpc(self) -> bool:
        return self.protocol == "grpc"

    def method_paths(self) -> list[str]:
        return [f"/{self.grpc_service}/{m.name}" for m in self.methods]


@dataclass(frozen=True)
class Redis:
    name: str
    port: int
    local_port: int


@dataclass(frozen=True)
class Catalog:
    services: dict[str, Service]
    redis: Redis
    path: Path

    def get(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(self.services)
            raise CatalogError(f"unknown service {name!r}; the catalog has: {known}") from None

    def by_module(self, module: str) -> Service:
        """The service that Python module boutique.<module> implements."""
        for svc in self.services.values():
            if svc.module == module:
                return svc
        raise CatalogError(f"no catalog service has module {module!r} ({self.path})")

    def grpc_services(self) -> list[Service]:
        return [s for s in self.services.values() if s.is_grpc]

    def callers_of(self, name: str) -> list[str]:
        return [s.name for s in self.services.values() if name in s.callees]


def _service(raw: dict[str, Any], index: int) -> Service:
    where = f"boutique_services[{index}] ({raw.get('name', '?')})"
    try:
        methods = tuple(Method(str(m["name"]), bool(m["idempotent"])) for m in raw.get("methods") or [])
        retries = raw.get("retries") or {}
        svc = Service(
            name=str(raw["name"]),
            module=str(raw["module"]),
            protocol=str(raw["protocol"]),
            grpc_service=str(raw.get("grpc_service") or ""),
            addr_env=str(raw.get("addr_env") or ""),
            port=int(raw["port"]),
            service_port=int(raw["service_port"]),
            local_port=int(raw["local_port"]),
            metrics_port=int(raw["metrics_port"]),
            local_metrics_port=int(raw["local_metrics_port"]),
            callees=tuple(raw.get("callees") or ()),
            methods=methods,
            timeout=parse_duration(raw["timeout"], f"{where}.timeout"),
            retry_attempts=int(retries.get("attempts", 0)),
            per_try_timeout=parse_duration(retries.get("per_try_timeout", raw["timeout"]), f"{where}.retries"),
            deploy=bool(raw.get("deploy", True)),
            env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
        )
    except KeyError as exc:
        raise CatalogError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"{where}: {exc}") from None
    if svc.protocol not in {"grpc", "http"}:
        raise CatalogError(f"{where}: protocol must be grpc or http, not {svc.protocol!r}")
    if svc.is_grpc and not svc.grpc_service.startswith("hipstershop."):
        raise CatalogError(f"{where}: grpc_service must be hipstershop.<Service>")
    if not _DNS_LABEL.match(svc.name):
        raise CatalogError(f"{where}: name must be a DNS-1123 label (lower case letters, digits, '-')")
    if not isinstance(raw.get("deploy", True), bool):
        raise CatalogError(f"{where}: deploy must be true or false, not {raw.get('deploy')!r}")
    replicas = raw.get("replicas") or {}
    if "min" in replicas and "max" in replicas and int(replicas["min"]) > int(replicas["max"]):
        raise CatalogError(f"{where}: replicas.min ({replicas['min']}) exceeds replicas.max ({replicas['max']})")
    if svc.retry_attempts > 1 and svc.retry_attempts * svc.per_try_timeout > svc.timeout + 1e-9:
        raise CatalogError(f"{where}: retries.attempts ({svc.retry_attempts}) x per_try_timeout "
                           f"({retries.get('per_try_timeout')}) must fit in timeout ({raw['timeout']})")
    return svc


def load(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read and validate the catalog. Errors name the entry and field."""
    p = Path(path or os.environ.get("BOUTIQUE_CATALOG") or _REPO_CATALOG)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read the service catalog {p}: {exc.strerror}; set BOUTIQUE_CATALOG") from None
    return from_data(data, p)


def from_data(data: Any, p: Path) -> Catalog:
    """Validate catalog data ({boutique_services: [...], boutique_redis: {...}}); `p` names its source.
    The Ansible roles validate the catalog they were given (overrides applied) with this too."""
    if not isinstance(data, dict) or not isinstance(data.get("boutique_services"), list):
        raise CatalogError(f"{p}: expected a mapping with a boutique_services list")
    services = [_service(raw, i) for i, raw in enumerate(data["boutique_services"])]
    by_name = {s.name: s for s in services}
    if len(by_name) != len(services):
        raise CatalogError(f"{p}: duplicate service names")
    raw_redis = data.get("boutique_redis") or {}
    try:
        redis = Redis(str(raw_redis["name"]), int(raw_redis["port"]), int(raw_redis["local_port"]))
    except (KeyError, TypeError, ValueError):
        raise CatalogError(f"{p}: boutique_redis needs name, port and local_port") from None
    for svc in services:
        for callee in svc.callees:
            if callee not in by_name and callee != redis.name:
                raise CatalogError(f"{svc.name}: callee {callee!r} is not in the catalog")
    return Catalog(services=by_name, redis=redis, path=p)


@lru_cache(maxsize=1)
def default() -> Catalog:
    """The catalog at the default location, read once per process."""
    return load()
