"""Prometheus RED metrics and access logs for gRPC servers and clients.

Metric names follow the go-grpc-prometheus convention, so dashboards written for
it work here:
  grpc_server_handled_total{grpc_service, grpc_method, grpc_code}
  grpc_server_handling_seconds{grpc_service, grpc_method}            (histogram)
  grpc_client_handled_total{grpc_service, grpc_method, grpc_code}
  grpc_client_handling_seconds{grpc_service, grpc_method}            (histogram)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from random import getrandbits as _random_bits
from typing import Any

import grpc
import prometheus_client
from prometheus_client import Counter, Histogram

from boutique.runtime import logs

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SERVER_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC on the server.",
    ["grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS,
)
CLIENT_HANDLED = Counter(
    "grpc_client_handled_total", "RPCs completed by clients, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds", "Time from starting a client RPC to its status.",
    ["grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS,
)

_access = logging.getLogger("boutique.access")


def split_method(full: str) -> tuple[str, str]:
    """'/hipstershop.CartService/GetCart' -> ('hipstershop.CartService', 'GetCart')."""
    _, _, rest = full.partition("/")
    service, _, method = rest.partition("/")
    return service, method


def metrics_host(listen_host: str) -> str:
    """Bind metrics where the service listens: any wildcard ("[::]", "0.0.0.0")
    becomes 0.0.0.0 (pods may have no IPv6), a specific address (127.0.0.1) is kept."""
    host = listen_host.strip("[]")
    return "0.0.0.0" if host in {"", "::", "0.0.0.0"} else host


def start_http_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics on its own port; with PROMETHEUS_MULTIPROC_DIR, aggregate workers."""
    if port == 0:
        return
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        prometheus_client.start_http_server(port, addr=host, registry=registry)
    else:
        prometheus_client.start_http_server(port, addr=host)


def _metadata_value(metadata: Any, key: str) -> str:
    for item in metadata or ():
        if item[0] == key:
            return item[1] if isinstance(item[1], str) else item[1].decode()
    return ""


def _new_request_id() -> str:
    """32 hex digits, like uuid4().hex, without a syscall per call."""
    return f"{_random_bits(128):032x}"


def observe_unary(handler: grpc.RpcMethodHandler, full_method: str, access_log: str = "all") -> grpc.RpcMethodHandler:
    """Wrap a unary-unary handler ONCE: times every call, counts it by status code, writes the
    access log, and turns any unexpected exception into INTERNAL (never UNKNOWN).

    Everything that does not depend on the call (metric children, names) is resolved here or
    on first use, so the per-call cost is a few attribute reads, two contextvar sets and the
    metric updates."""
    service, method = split_method(full_method)
    # every code's series exists from the first call on (dashboards see 0, not a missing series)
    handled = {code: SERVER_HANDLED.labels(service, method, code.name) for code in grpc.StatusCode}
    observe_seconds = SERVER_SECONDS.labels(service, method).observe
    inner = handler.unary_unary
    log_all, log_errors = access_log == "all", access_log == "errors"
    ok = grpc.StatusCode.OK
    internal_message = f"internal error while handling {method}"
    perf_counter = time.perf_counter
    rid_var, tid_var = logs.request_id, logs.trace_id

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = perf_counter()
        md = context.invocation_metadata()
        rid = _metadata_value(md, "x-request-id") or _new_request_id()
        traceparent = _metadata_value(md, "traceparent")
        rid_token = rid_var.set(rid)
        tid_token = tid_var.set(traceparent.split("-")[1] if traceparent.count("-") >= 3 else "")
        code = ok
        try:
            response = await inner(request, context)
            code = context.code() or ok
            return response
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            _access.exception("unhandled error in %s", full_method, extra=logs.fields(method=full_method))
            await context.abort(grpc.StatusCode.INTERNAL, internal_message)
        finally:
            elapsed = perf_counter() - start
            handled[code].inc()
            observe_seconds(elapsed)
            if log_all or (log_errors and code is not ok):
                _access.info(
                    "%s %s", full_method, code.name,
                    extra=logs.fields(method=full_method, status=code.name, duration_ms=round(elapsed * 1000, 3)),
                )
            rid_var.reset(rid_token)
            tid_var.reset(tid_token)

    return grpc.unary_unary_rpc_method_handler(
        observed,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """The same observation as an interceptor (for servers built elsewhere); the wrapped handler
    is built once per method and reused."""

    def __init__(self, access_log: str = "all") -> None:
        self.access_log = access_log
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming (health Watch, reflection): passed through
        cached = self._cache.get(details.method)
        if cached is None or cached[0] is not handler:
            cached = self._cache[details.method] = (handler, observe_unary(handler, details.method, self.access_log))
        return cached[1]


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Client-side RED metrics, the per-call deadline, and request-id propagation."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout  # the callee's catalog timeout, in seconds
        # method -> (service, name, latency observer) and (method, code) -> counter: looked up once each
        self._methods: dict[str | bytes, tuple[str, str, Callable[[float], None]]] = {}
        self._handled: dict[tuple[str | bytes, grpc.StatusCode], Any] = {}

    def _count(self, method: str | bytes, code: grpc.StatusCode, seconds: float) -> None:
        series = self._methods.get(method)
        if series is None:
            service, name = split_method(method.decode() if isinstance(method, bytes) else method)
            series = self._methods[method] = (service, name, CLIENT_SECONDS.labels(service, name).observe)
        counter = self._handled.get((method, code))
        if counter is None:  # a series appears once a call ended with that code, as before
            counter = self._handled[method, code] = CLIENT_HANDLED.labels(series[0], series[1], code.name)
        counter.inc()
        series[2](seconds)

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        if self.timeout is not None and (client_call_details.timeout is None
                                         or client_call_details.timeout > self.timeout):
            client_call_details = client_call_details._replace(timeout=self.timeout)
        rid = logs.request_id.get()
        if rid:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
            metadata.add("x-request-id", rid)
            client_call_details = client_call_details._replace(metadata=metadata)
        start = time.perf_counter()
        call = await continuation(client_call_details, request)
        try:
            await call
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        except Exception:
            code = grpc.StatusCode.UNKNOWN
        self._count(client_call_details.method, code, time.perf_counter() - start)
        return call
