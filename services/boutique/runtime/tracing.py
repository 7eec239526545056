"""OpenTelemetry tracing: spans for every gRPC call (server and client), the frontend's HTTP
requests and the cart's Redis commands, exported over OTLP/gRPC, W3C `traceparent` on every hop.

Off by default, and then free: this module imports only the standard library, `from_env` returns
None, and nothing is wrapped. On with

    ENABLE_TRACING=1 and COLLECTOR_SERVICE_ADDR=host:port     (Online Boutique's names; plaintext
                                                              OTLP/gRPC, as the mesh's sidecar
                                                              carries it under mTLS)
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT (the standard names:
                                                              http://host:port plaintext,
                                                              https://host:port TLS)

ENABLE_TRACING=0 (or OTEL_SDK_DISABLED=true) keeps it off even when an endpoint is set;
ENABLE_TRACING=1 without an endpoint, or a malformed one, is a ConfigError naming the variable.
The standard OTEL_* settings (sampler, batch delays, headers, resource attributes) apply as usual.
Each service gets its own TracerProvider (service.name = its catalog name), handed to the
instrumentations explicitly: no global tracer state, so services sharing a process (tests)
keep their own names.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from boutique.runtime.config import ConfigError, env_bool, host_port

_URL = re.compile(r"^(https?)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})/?$")
# Calls that are not the shop's traffic: kubelet/runner health probes, reflection.
_UNTRACED_GRPC_PREFIXES = ("grpc.health.", "grpc.reflection.")
# Frontend paths that are probes or static files, not pages.
_UNTRACED_HTTP = "/_healthz,/static/,/robots.txt,/favicon.ico"


@dataclass(frozen=True)
class TracingSettings:
    endpoint: str  # host:port, or http(s)://host:port
    insecure: bool
    source: str  # the variable the endpoint came from


def settings_from_env(env: Mapping[str, str]) -> TracingSettings | None:
    """None when tracing is off; raises ConfigError on a contradictory or malformed setting."""
    enable = env_bool("ENABLE_TRACING", False, env) if env.get("ENABLE_TRACING", "").strip() else None
    if enable is False or env_bool("OTEL_SDK_DISABLED", False, env):
        return None
    if env.get("COLLECTOR_SERVICE_ADDR", "").strip() and enable:
        addr = host_port("COLLECTOR_SERVICE_ADDR", env, purpose="the OTLP/gRPC trace collector")
        return TracingSettings(addr, insecure=True, source="COLLECTOR_SERVICE_ADDR")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = env.get(name, "").strip()
        if not value:
            continue
        m = _URL.match(value)
        if not m or not 0 < int(m.group(3)) < 65536:
            raise ConfigError(f"{name}={value!r} is not an OTLP/gRPC endpoint like http://collector:4317")
        return TracingSettings(value.rstrip("/"), insecure=m.group(1) == "http", source=name)
    if enable:
        raise ConfigError("ENABLE_TRACING=1 needs COLLECTOR_SERVICE_ADDR (host:port of the OTLP/gRPC collector) "
                          "or OTEL_EXPORTER_OTLP_ENDPOINT")
    return None


class Tracing:
    """One service's tracer provider and the instrumentations that use it."""

    def __init__(self, service: str, settings: TracingSettings) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        import boutique

        self.service, self.settings = service, settings
        resource = Resource.create({"service.name": service, "service.namespace": "boutique",
                                    "service.version": getattr(boutique, "__version__", "0")})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint, insecure=settings.insecure)))

    def server_interceptors(self) -> list[Any]:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(tracer_provider=self.provider, filter_=_shop_calls)]

    def client_interceptors(self) -> list[Any]:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        # our channels make unary calls only: the unary-unary interceptor is the one that applies
        return aio_client_interceptors(tracer_provider=self.provider, filter_=_shop_calls)[:1]

    def asgi(self, app: Any) -> Any:
        """The frontend's ASGI app inside a server span per request (traceparent read and continued)."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(app, excluded_urls=_UNTRACED_HTTP, tracer_provider=self.provider,
                                       exclude_spans=["receive", "send"])

    def instrument_redis(self, client: Any) -> None:
        """A span per Redis command or pipeline of this client (the cart's store)."""
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def shutdown(self, flush_seconds: float = 2.0) -> None:
        """Export what is still queued (bounded: an unreachable collector must not hold up a
        graceful stop), then stop."""
        self.provider.force_flush(timeout_millis=int(flush_seconds * 1000))
        self.provider.shutdown()

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)


def _shop_calls(details: Any) -> bool:
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    return not method.lstrip("/").startswith(_UNTRACED_GRPC_PREFIXES)


def from_env(service: str, env: Mapping[str, str]) -> Tracing | None:
    """The service's Tracing when the environment turns tracing on, else None (nothing imported)."""
    settings = settings_from_env(env)
    return Tracing(service, settings) if settings else None
