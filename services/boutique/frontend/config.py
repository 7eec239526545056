"""Frontend settings from the environment (contract section 3.1 plus our own knobs).

Everything wrong is a ConfigError naming the variable; `main()` prints it and exits 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from boutique import service_catalog as catalog_mod
from boutique.runtime.config import ConfigError, ServiceConfig, env_bool, env_float, env_str, host_port

SERVICE = "frontend"
PLATFORMS = ("local", "gcp", "aws", "azure", "onprem", "alibaba")
SHARED_SESSION_ID = "12345678-1234-1234-1234-123456789123"
FANOUT_MODES = ("concurrent", "sequential")


@dataclass(frozen=True)
class FrontendConfig:
    service: ServiceConfig  # port, listen address, metrics port, shutdown, logs, TLS for gRPC clients
    base_url: str  # "" or "/prefix" (no trailing slash)
    platform: str
    message: str
    single_shared_session: bool
    cymbal_branding: bool
    fanout: str  # concurrent | sequential
    ad_timeout: float  # seconds; ads are optional
    recommendation_timeout: float  # seconds; recommendations are optional
    addresses: dict[str, str]  # callee catalog name -> host:port

    @property
    def concurrent(self) -> bool:
        return self.fanout == "concurrent"

    @property
    def shop_name(self) -> str:
        return "Cymbal Shops" if self.cymbal_branding else "Online Boutique"


def _base_url(env: Mapping[str, str]) -> str:
    raw = env.get("BASE_URL", "").strip()
    if not raw or raw == "/":
        return ""
    if not raw.startswith("/") or "//" in raw or any(c in raw for c in "?#\"'<> "):
        raise ConfigError(f"BASE_URL={raw!r} must be a path prefix like /online-boutique")
    return raw.rstrip("/")


def from_env(env: Mapping[str, str] | None = None, catalog: catalog_mod.Catalog | None = None) -> FrontendConfig:
    env = os.environ if env is None else env
    cat = catalog or catalog_mod.default()
    me = cat.get(SERVICE)
    addresses = {}
    for callee in me.callees:  # the catalog is the one list of what the frontend calls
        svc = cat.get(callee)
        addresses[callee] = host_port(svc.addr_env, env, purpose=callee)
    platform = env.get("ENV_PLATFORM", "").strip().lower()
    if platform not in PLATFORMS:  # contract: invalid or empty gives "local"
        platform = "local"
    fanout = env_str("FRONTEND_FANOUT", "concurrent", env).lower()
    if fanout not in FANOUT_MODES:
        raise ConfigError(f"FRONTEND_FANOUT={fanout!r} must be concurrent or sequential")
    ad_timeout = env_float("FRONTEND_AD_TIMEOUT_SECONDS", 0.1, env)
    reco_timeout = env_float("FRONTEND_RECOMMENDATION_TIMEOUT_SECONDS", 1.0, env)
    for name, value in (("FRONTEND_AD_TIMEOUT_SECONDS", ad_timeout),
                        ("FRONTEND_RECOMMENDATION_TIMEOUT_SECONDS", reco_timeout)):
        if value == 0:
            raise ConfigError(f"{name} must be greater than 0")
    return FrontendConfig(
        service=ServiceConfig.from_env(SERVICE, me.port, env),
        base_url=_base_url(env),
        platform=platform,
        message=env.get("FRONTEND_MESSAGE", "").strip(),
        single_shared_session=env_bool("ENABLE_SINGLE_SHARED_SESSION", False, env),
        cymbal_branding=env_bool("CYMBAL_BRANDING", False, env),
        fanout=fanout,
        ad_timeout=ad_timeout,
        recommendation_timeout=reco_timeout,
        addresses=addresses,
    )
