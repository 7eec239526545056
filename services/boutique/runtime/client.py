"""Channels to callees: address from the contract's env var, TLS when configured,
a per-call deadline and a retry policy taken from the service catalog.

Only methods the catalog marks idempotent get a retryPolicy (on UNAVAILABLE), in
the standard gRPC service config, so grpcio enforces it. Every call gets the
callee's catalog timeout as its deadline (or the caller's, if shorter); the
deadline is set per call by the client interceptor, not by the service config's
"timeout", which grpcio 1.85 applies early by a random, per-process amount.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from boutique.catalog import Catalog, Service
from boutique.runtime.config import TLSFiles, host_port
from boutique.runtime.metrics import ClientInterceptor
from boutique.runtime.tls import channel_credentials

MAX_GRPC_ATTEMPTS = 5  # grpcio caps maxAttempts at 5


def service_config(svc: Service) -> dict[str, Any]:
    """The gRPC service config for calls to `svc`: a retry policy for idempotent methods."""
    configs: list[dict[str, Any]] = []
    for method in svc.methods:
        if method.idempotent and svc.retry_attempts > 1:
            entry: dict[str, Any] = {"name": [{"service": svc.grpc_service, "method": method.name}]}
            entry["retryPolicy"] = {
                "maxAttempts": min(svc.retry_attempts, MAX_GRPC_ATTEMPTS),
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
            configs.append(entry)
    return {"methodConfig": configs}


class Clients:
    """Creates and owns the channels a service uses to reach its callees."""

    def __init__(self, catalog: Catalog, env: Mapping[str, str], tls: TLSFiles | None,
                 interceptors: Sequence[Any] = ()) -> None:
        self.catalog = catalog
        self.interceptors = list(interceptors)  # outermost first (tracing), before the runtime's own
        self.env = env
        self.tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def address(self, callee: str) -> str:
        svc = self.catalog.get(callee)
        return host_port(svc.addr_env, self.env, purpose=callee)

    def channel(self, callee: str) -> grpc.aio.Channel:
        if callee not in self._channels:
            svc = self.catalog.get(callee)
            addr = self.address(callee)
            options = [
                ("grpc.service_config", json.dumps(service_config(svc))),
                ("grpc.enable_retries", 1),
                ("grpc.keepalive_time_ms", 30_000),
            ]
            interceptors = [*self.interceptors, ClientInterceptor(svc.timeout)]
            if self.tls:
                self._channels[callee] = grpc.aio.secure_channel(
                    addr, channel_credentials(self.tls), options=options, interceptors=interceptors
                )
            else:
                self._channels[callee] = grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
        return self._channels[callee]

    def stub(self, callee: str, stub_cls: type) -> Any:
        return stub_cls(self.channel(callee))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
