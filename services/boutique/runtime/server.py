"""gRPC server bootstrap shared by every service.

A service module declares a ServiceDefinition; `serve()` does the rest: config
from env, JSON logs, metrics port, TLS, health (all SERVING once started) and
reflection, the observing handler wrappers, graceful shutdown on SIGTERM/SIGINT
(health NOT_SERVING, optional drain delay, open health Watch streams end,
in-flight calls finish within the grace period, exit 0), and optionally
several worker processes sharing the port.

Per-call observation (metrics, access log, request ids) is not a grpc.aio.ServerInterceptor:
`handler_wrappers()` lists functions that wrap each unary-unary method handler once, when the
service registers it (through `_WrappingRegistrar`), so a call runs the wrapped handler
directly instead of an interceptor coroutine chain per call. Another concern (tracing, say)
is added there as one more HandlerWrapper.

After start-up the objects made so far are moved out of the garbage collector's sight
(gc.freeze): they live as long as the process, and collections then only walk what calls
allocate.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from boutique import service_catalog as catalog_mod
from boutique.runtime import logs, metrics, tracing
from boutique.runtime.client import Clients
from boutique.runtime.config import ConfigError, ServiceConfig
from boutique.runtime.health import SERVICE_NAME as HEALTH_SERVICE
from boutique.runtime.health import SERVING, HealthServicer
from boutique.runtime.tls import server_credentials


@dataclass(frozen=True)
class ServiceDefinition:
    """What a service module tells the runtime about itself: its gRPC API and how to make its
    servicer. Its name, port and callees are the catalog's, from the entry whose `module` it is."""

    module: str  # the implementing module's __name__, e.g. "boutique.cart"
    add_servicer: Callable[[Any, Any], None]  # demo_pb2_grpc.add_XServicer_to_server
    create: Callable[[ServiceContext], Any]  # returns the servicer (may be a coroutine)

    def entry(self, catalog: catalog_mod.Catalog | None = None) -> catalog_mod.Service:
        """This service's catalog entry (the default catalog unless another is given)."""
        name = self.module.removeprefix("boutique.").split(".")[0]
        return (catalog or catalog_mod.default()).by_module(name)

    @property
    def name(self) -> str:
        return self.entry().name

    @property
    def grpc_service(self) -> str:
        return self.entry().grpc_service  # e.g. "hipstershop.CartService"

    @property
    def default_port(self) -> int:
        return self.entry().port

    def callees(self, catalog: catalog_mod.Catalog | None = None) -> tuple[str, ...]:
        """The gRPC services it may call: the catalog's callees, Redis aside."""
        cat = catalog or catalog_mod.default()
        return tuple(c for c in self.entry(cat).callees if c != cat.redis.name)


@dataclass
class ServiceContext:
    """Handed to a service's `create`: its config, logger, env and callee stubs."""

    config: ServiceConfig
    env: Mapping[str, str]
    log: logging.Logger
    clients: Clients
    tracing: tracing.Tracing | None = None  # the cart instruments its Redis client with it
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def stub(self, callee: str, stub_cls: type) -> Any:
        return self.clients.stub(callee, stub_cls)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()
        await self.clients.close()
        if self.tracing:
            await self.tracing.close()  # export the last spans


def handler_wrappers(config: ServiceConfig) -> list[metrics.HandlerWrapper]:
    """What every unary-unary handler of a service is wrapped in, outermost first."""
    return [metrics.unary_observer(config.access_log)]


class _Undecodable:
    """What the tolerant deserializer hands the handler when the request bytes do not parse."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def decode_guard(handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
    """Request bytes that do not decode are INVALID_ARGUMENT naming the message type.

    grpcio turns a deserializer's exception into UNKNOWN with the exception's class in the
    details; here the deserializer never raises: it returns a marker the handler answers."""
    deserialize = handler.request_deserializer
    inner = handler.unary_unary
    if deserialize is None or inner is None:
        return handler
    message_type = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    type_name = getattr(message_type, "full_name", "") or "request message"
    problem = f"request: the bytes sent are not a valid {type_name}"

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, or anything else a parser raises on garbage
            return _UNDECODABLE

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            logging.getLogger("boutique.access").info("%s: undecodable request", full_method)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        return await inner(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=tolerant, response_serializer=handler.response_serializer)


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose unary-unary method handlers come out wrapped (built once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[grpc.RpcMethodHandler, str],
                                                                      grpc.RpcMethodHandler]) -> None:
        self._inner, self._wrap = inner, wrap
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(details)
        if handler is None:
            return None
        cached = self._cache.get(details.method)
        if cached is None or cached[0] is not handler:
            cached = self._cache[details.method] = (handler, self._wrap(handler, details.method))
        return cached[1]


class _WrappingRegistrar:
    """Stands in for the server in a generated add_XServicer_to_server(servicer, server): every
    unary-unary handler registered through it is wrapped by `wrappers` (the first outermost);
    streaming handlers pass through unchanged."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[metrics.HandlerWrapper]) -> None:
        self.server = server
        self.wrappers = list(wrappers)

    def wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return handler
        handler = decode_guard(handler, full_method)  # innermost: the observer counts INVALID_ARGUMENT
        for wrapper in reversed(self.wrappers):
            handler = wrapper(handler, full_method)
        return handler

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.server.add_registered_method_handlers(
            service, {name: self.wrap(h, f"/{service}/{name}") for name, h in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_WrappedGenericHandler(h, self.wrap) for h in handlers))


class RunningService:
    """A started server; `port` is the bound port (useful with PORT=0 in tests)."""

    def __init__(self, server: grpc.aio.Server, port: int, ctx: ServiceContext,
                 health_servicer: HealthServicer, health_server: grpc.aio.Server | None = None) -> None:
        self.server, self.port, self.ctx, self.health = server, port, ctx, health_servicer
        self.health_server = health_server

    async def shutdown(self) -> None:
        cfg = self.ctx.config
        self.ctx.log.info("shutting down: health NOT_SERVING, draining",
                          extra=logs.fields(grace_s=cfg.shutdown_grace, drain_s=cfg.shutdown_drain))
        await self.health.enter_graceful_shutdown()
        if cfg.shutdown_drain:
            await asyncio.sleep(cfg.shutdown_drain)
        # watchers have seen NOT_SERVING: their streams end now instead of holding the grace period
        await self.health.end_watches()
        await self.server.stop(cfg.shutdown_grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.ctx.close()
        self.ctx.log.info("stopped")


async def start(defn: ServiceDefinition, config: ServiceConfig, env: Mapping[str, str],
                catalog: catalog_mod.Catalog | None = None) -> RunningService:
    """Build and start the server; returns once it accepts calls and reports SERVING."""
    cat = catalog or catalog_mod.default()
    name, callees = defn.entry(cat).name, defn.callees(cat)  # the one catalog this start reads
    log = logging.getLogger(name)
    tracer = tracing.from_env(name, env)  # None unless tracing is on: then nothing is imported or wrapped
    clients = Clients(cat, env, config.tls, tracer.client_interceptors() if tracer else (),
                      caller=name, allowed=callees)
    ctx = ServiceContext(config=config, env=env, log=log, clients=clients, tracing=tracer)
    for callee in callees:
        clients.address(callee)  # a missing/malformed address fails at start-up, naming the variable
    try:
        servicer = defn.create(ctx)
        if inspect.isawaitable(servicer):
            servicer = await servicer
    except BaseException:
        await ctx.close()  # close whatever the service opened before it failed
        raise
    reuseport = 1 if os.environ.get("BOUTIQUE_REUSEPORT") == "1" else 0
    server = grpc.aio.server(
        # Tracing (ENABLE_TRACING) adds OpenTelemetry's interceptor; off, the server has none at all.
        interceptors=tracer.server_interceptors() if tracer else None,
        options=[("grpc.so_reuseport", reuseport), ("grpc.max_concurrent_streams", 1000)],
    )
    registrar = _WrappingRegistrar(server, handler_wrappers(config))
    defn.add_servicer(servicer, registrar)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    reflection.enable_server_reflection((defn.grpc_service, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    try:
        if config.tls:
            port = server.add_secure_port(config.listen_addr, server_credentials(config.tls))
        else:
            port = server.add_insecure_port(config.listen_addr)
    except RuntimeError:
        await ctx.close()
        raise ConfigError(f"cannot listen on {config.listen_addr} (PORT={config.port}): address in use?") from None
    await server.start()
    health_server = await _start_health_only(config, health_servicer) if config.health_port else None
    for name in ("", defn.grpc_service):
        await health_servicer.set(name, SERVING)
    gc.freeze()  # start-up objects live as long as the process: no collection needs to walk them
    log.info("serving", extra=logs.fields(
        address=f"{config.listen_host}:{port}", tls="mutual" if config.tls and config.tls.mutual
        else "server" if config.tls else "off", metrics_port=config.metrics_port,
        health_port=config.health_port or None))
    return RunningService(server, port, ctx, health_servicer, health_server)


async def _start_health_only(config: ServiceConfig, health_servicer: HealthServicer) -> grpc.aio.Server:
    """grpc.health.v1 alone, in plaintext, on HEALTH_PORT: the same servicer, so it turns
    NOT_SERVING with the service while it drains. Nothing else is served on this port."""
    health_server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
    address = f"{config.listen_host}:{config.health_port}"
    try:
        health_server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(f"cannot listen on {address} (HEALTH_PORT={config.health_port}): address in use?") from None
    await health_server.start()
    return health_server


async def _serve_until_signal(defn: ServiceDefinition, config: ServiceConfig, env: Mapping[str, str]) -> None:
    running = await start(defn, config, env)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.shutdown()


def _supervise_workers(defn: ServiceDefinition, config: ServiceConfig) -> int:
    """Run config.workers processes that share the port (SO_REUSEPORT); the
    parent serves their aggregated metrics and forwards SIGTERM/SIGINT.

    A worker that exits while we are not stopping (a crash) takes the service
    down: the others are stopped and the exit code is non-zero, so the
    orchestrator restarts the whole service instead of it running degraded."""
    log = logging.getLogger(defn.name)
    stopping = threading.Event()
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # handlers first: a signal during start-up must reach the workers, never orphan them
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    with tempfile.TemporaryDirectory(prefix="boutique-metrics-") as mdir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = mdir
        metrics.start_http_server(config.metrics_port, metrics.metrics_host(config.listen_host))
        child_env = dict(os.environ, BOUTIQUE_WORKERS="1", BOUTIQUE_REUSEPORT="1", METRICS_PORT="0")
        for _ in range(config.workers):
            if stopping.is_set():
                break
            children.append(subprocess.Popen([sys.executable, "-m", "boutique.cli", "serve", defn.name],
                                             env=child_env))
        log.info("supervising workers", extra=logs.fields(workers=config.workers,
                                                           pids=[c.pid for c in children]))
        failed: subprocess.Popen[bytes] | None = None
        while any(c.poll() is None for c in children):
            if not stopping.is_set():
                failed = next((c for c in children if c.returncode is not None), None)
                if failed is not None:
                    log.error("worker exited unexpectedly: stopping the service",
                              extra=logs.fields(pid=failed.pid, code=failed.returncode))
                    forward(signal.SIGTERM, None)
            stopping.wait(0.2)
        # a worker still starting up when we forwarded SIGTERM/SIGINT dies of it: that is a clean stop
        codes = [c.wait() for c in children]
        stop_codes = {0, -signal.SIGTERM, -signal.SIGINT}
    if failed is not None:
        return failed.returncode if failed.returncode > 0 else 1
    code = next((c for c in codes if c not in stop_codes), 0)
    return code if code >= 0 else 1  # killed by another signal: 1


def serve(defn: ServiceDefinition, env: Mapping[str, str] | None = None) -> int:
    """Entry point for `boutique serve <name>`: returns the process exit code."""
    env = os.environ if env is None else env
    try:
        config = ServiceConfig.from_env(defn.name, defn.default_port, env)
        logs.setup(defn.name, config.log_level)
        if config.workers > 1:
            return _supervise_workers(defn, config)
        metrics.start_http_server(config.metrics_port, metrics.metrics_host(config.listen_host))
        asyncio.run(_serve_until_signal(defn, config, env))
    except ConfigError as exc:
        print(f"{defn.name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the metrics port is taken
        print(f"{defn.name}: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0
