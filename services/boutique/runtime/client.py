"""Channels to callees: address from the contract's env var, TLS when configured,
a per-call deadline and a retry policy taken from the service catalog.

Only methods the catalog marks idempotent get a retryPolicy (on UNAVAILABLE), in
the standard gRPC service config, so grpcio enforces it. Every call gets the
callee's catalog timeout as its deadline (or the caller's, if shorter); the
deadline is set per call here, not by the service config's "timeout", which grpcio 1.85
applies early by a random, per-process amount.

Each call also records the client RED metrics and carries the caller's x-request-id. That is
done by ObservedChannel, a thin wrapper around each method's UnaryUnaryMultiCallable, not by a
grpc.aio client interceptor: an intercepted call costs grpcio an extra asyncio Task, coroutine
chain and call-details copies per call (in checkout, about ten calls per order). grpc.aio
interceptors can still be added (Clients(..., interceptors=...), e.g. for tracing); they run
inside the observation, so the metrics and the deadline cover them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import grpc
from grpc.aio import Metadata

from boutique.runtime import logs
from boutique.runtime.config import ConfigError, TLSFiles, host_port
from boutique.runtime.metrics import ClientSeries
from boutique.runtime.tls import channel_credentials
from boutique.service_catalog import Catalog, Service

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


class ObservedCall:
    """An outgoing call as grpcio returned it (already started), awaited through the metrics: the
    call's status and latency are recorded when the caller awaits it. Anything else (cancel(),
    code(), initial_metadata(), ...) goes to the grpcio call."""

    __slots__ = ("_call", "_series", "_start")

    def __init__(self, call: Any, series: ClientSeries, start: float) -> None:
        self._call, self._series, self._start = call, series, start

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            response = yield from self._call.__await__()
        except grpc.aio.AioRpcError as exc:
            self._series.record(exc.code(), time.perf_counter() - self._start)
            raise
        except asyncio.CancelledError:
            self._series.record(grpc.StatusCode.CANCELLED, time.perf_counter() - self._start)
            raise
        self._series.record(grpc.StatusCode.OK, time.perf_counter() - self._start)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class ObservedUnaryUnary:
    """A method's multicallable with the callee's deadline, request-id propagation and metrics."""

    __slots__ = ("_inner", "_series", "_timeout")

    def __init__(self, inner: Any, method: str | bytes, timeout: float | None) -> None:
        self._inner = inner
        self._series = ClientSeries(method.decode() if isinstance(method, bytes) else method)
        self._timeout = timeout  # the callee's catalog timeout, in seconds

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None,
                 **kwargs: Any) -> ObservedCall:
        limit = self._timeout
        if limit is not None and (timeout is None or timeout > limit):
            timeout = limit
        rid = logs.request_id.get()
        if rid:  # a grpc.aio.Metadata, not a tuple: grpcio checks tuples against typing.Sequence per call
            metadata = Metadata(("x-request-id", rid)) if not metadata else Metadata(*metadata, ("x-request-id", rid))
        start = time.perf_counter()
        return ObservedCall(self._inner(request, timeout=timeout, metadata=metadata, **kwargs), self._series, start)


class ObservedChannel:
    """A grpc.aio.Channel whose unary-unary methods are ObservedUnaryUnary; everything else
    (close, channel_ready, get_state, streaming methods, ...) is the channel's own."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float | None) -> None:
        self._channel = channel
        self._timeout = timeout

    def unary_unary(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                    response_deserializer: Callable[[bytes], Any] | None = None,
                    _registered_method: bool | None = False) -> ObservedUnaryUnary:
        inner = self._channel.unary_unary(method, request_serializer, response_deserializer,
                                          _registered_method=_registered_method)
        return ObservedUnaryUnary(inner, method, self._timeout)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def __aenter__(self) -> ObservedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class Clients:
    """Creates and owns the channels a service uses to reach its callees."""

    def __init__(self, catalog: Catalog, env: Mapping[str, str], tls: TLSFiles | None,
                 interceptors: Sequence[Any] = (), *, caller: str = "", allowed: Sequence[str] | None = None) -> None:
        self.catalog = catalog
        self.env = env
        self.tls = tls
        self.interceptors = list(interceptors)  # extra grpc.aio interceptors for every channel (tracing)
        self.caller = caller
        # The callees the catalog gives the caller: a channel to any other service is refused (the
        # call graph, and so the authorization policies, come from the catalog). None: no check.
        self.allowed = None if allowed is None else frozenset(allowed)
        self._channels: dict[str, ObservedChannel] = {}

    def address(self, callee: str) -> str:
        svc = self.catalog.get(callee)
        return host_port(svc.addr_env, self.env, purpose=callee)

    def channel_options(self, svc: Service) -> list[tuple[str, Any]]:
        """grpc channel arguments for calls to `svc`: the retry policy, retries on, keepalive."""
        return [
            ("grpc.service_config", json.dumps(service_config(svc))),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
        ]

    def channel(self, callee: str) -> ObservedChannel:
        if self.allowed is not None and callee not in self.allowed:
            raise ConfigError(f"{self.caller or 'this service'} asks for a client of {callee}, which is not one of "
                              f"its callees in the catalog ({', '.join(sorted(self.allowed)) or 'none'}); "
                              f"add it to the callees in {self.catalog.path}")
        if callee not in self._channels:
            svc = self.catalog.get(callee)
            addr = self.address(callee)
            options = self.channel_options(svc)
            interceptors = self.interceptors or None
            if self.tls:
                raw = grpc.aio.secure_channel(addr, channel_credentials(self.tls), options=options,
                                              interceptors=interceptors)
            else:
                raw = grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
            self._channels[callee] = ObservedChannel(raw, svc.timeout)
        return self._channels[callee]

    def stub(self, callee: str, stub_cls: type) -> Any:
        return stub_cls(self.channel(callee))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
