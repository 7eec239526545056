"""Prometheus RED metrics and access logs for gRPC servers and clients.

Server side: `observe_unary` wraps a method's handler once, when the service registers it
(boutique.runtime.server), not per call through a grpc.aio.ServerInterceptor. Client side:
`ClientSeries` holds the client metrics of one callee method; boutique.runtime.client records
them around each call without a grpc.aio client interceptor. Both interceptor kinds cost an
extra coroutine (and on the client an extra asyncio Task) per call: about as much as the
rest of the runtime together.

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
from collections.abc import Callable
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


def _request_ids(metadata: Any) -> tuple[str, str]:
    """(x-request-id, traceparent) of the incoming metadata, "" where absent; one pass."""
    rid = traceparent = ""
    for key, value in metadata or ():
        if key == "x-request-id":
            rid = value if isinstance(value, str) else value.decode()
        elif key == "traceparent":
            traceparent = value if isinstance(value, str) else value.decode()
    return rid, traceparent


def _new_request_id() -> str:
    """32 hex digits, like uuid4().hex, without a syscall per call."""
    return f"{_random_bits(128):032x}"


HandlerWrapper = Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]


def observe_unary(handler: grpc.RpcMethodHandler, full_method: str, access_log: str = "all") -> grpc.RpcMethodHandler:
    """Wrap a unary-unary handler ONCE: times every call, counts it by status code, writes the
    access log, and turns any unexpected exception into INTERNAL (never UNKNOWN).

    Everything that does not depend on the call (metric children, names) is resolved here, so
    the per-call cost is one metadata scan, two contextvar sets and the metric updates."""
    service, method = split_method(full_method)
    # every code's series exists from the first call on (dashboards see 0, not a missing series)
    handled = {code: SERVER_HANDLED.labels(service, method, code.name).inc for code in grpc.StatusCode}
    observe_seconds = SERVER_SECONDS.labels(service, method).observe
    inner = handler.unary_unary
    log_all, log_errors = access_log == "all", access_log == "errors"
    ok = grpc.StatusCode.OK
    internal_message = f"internal error while handling {method}"
    perf_counter = time.perf_counter
    rid_var, tid_var = logs.request_id, logs.trace_id

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = perf_counter()
        rid, traceparent = _request_ids(context.invocation_metadata())
        rid_token = rid_var.set(rid or _new_request_id())
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
            handled[code]()
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


def unary_observer(access_log: str) -> HandlerWrapper:
    """The server's metrics and access-log wrapper, as a HandlerWrapper for boutique.runtime.server."""

    def wrap(handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        return observe_unary(handler, full_method, access_log)

    return wrap


class ClientSeries:
    """The client metrics of one callee method: the latency histogram child, and one counter child
    per status code, created when a call first ends with that code (as go-grpc-prometheus does)."""

    __slots__ = ("_handled", "method", "observe", "service")

    def __init__(self, full_method: str) -> None:
        self.service, self.method = split_method(full_method)
        self.observe: Callable[[float], None] = CLIENT_SECONDS.labels(self.service, self.method).observe
        self._handled: dict[grpc.StatusCode, Callable[[], None]] = {}

    def record(self, code: grpc.StatusCode, seconds: float) -> None:
        inc = self._handled.get(code)
        if inc is None:
            inc = self._handled[code] = CLIENT_HANDLED.labels(self.service, self.method, code.name).inc
        inc()
        self.observe(seconds)
