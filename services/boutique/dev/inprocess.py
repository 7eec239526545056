"""Services in this process, for tests and benchmarks: one service on its own event loop in a thread
(BackgroundService), or every deployable gRPC service of the catalog wired together (start_backends).
Development only: the service images leave boutique/dev out."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections.abc import Mapping

from boutique import service_catalog as catalog_mod
from boutique.runtime.config import ServiceConfig
from boutique.runtime.server import RunningService, ServiceDefinition, start


class BackgroundService:
    """Runs one service on its own event loop in a thread (tests and benchmarks).

    with BackgroundService(defn, {"PORT": "0", "METRICS_PORT": "0"}) as svc:
        channel = grpc.insecure_channel(f"127.0.0.1:{svc.port}")
    """

    def __init__(self, defn: ServiceDefinition, env: Mapping[str, str] | None = None,
                 catalog: catalog_mod.Catalog | None = None) -> None:
        self.defn = defn
        self.env = {"PORT": "0", "METRICS_PORT": "0", "LISTEN_ADDR": "127.0.0.1",
                    "BOUTIQUE_ACCESS_LOG": "errors", **(env or {})}
        self.catalog = catalog
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=f"svc-{defn.name}")
        self.running: RunningService | None = None

    @property
    def port(self) -> int:
        assert self.running is not None, "service not started"
        return self.running.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BackgroundService:
        self.thread.start()
        try:
            config = ServiceConfig.from_env(self.defn.name, self.defn.default_port, self.env)
            fut = asyncio.run_coroutine_threadsafe(start(self.defn, config, self.env, self.catalog), self.loop)
            self.running = fut.result(timeout=30)
        except BaseException:
            self.stop()  # no thread or loop outlives a failed start
            raise
        return self

    def stop(self) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.shutdown(), self.loop).result(timeout=60)
            self.running = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def __enter__(self) -> BackgroundService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_backends(stack: contextlib.ExitStack, overrides: Mapping[str, Mapping[str, str]] | None = None,
                   catalog: catalog_mod.Catalog | None = None) -> dict[str, BackgroundService]:
    """Every deployable gRPC service of the catalog as a BackgroundService (tests, benchmarks), callees
    first, each wired to the already started callees by their contract env names; `overrides` adds env
    per service name. Stopped when `stack` closes. Returns catalog name -> BackgroundService."""
    cat = catalog or catalog_mod.default()
    wanted = {s.name: s for s in cat.grpc_services() if s.deploy}
    running: dict[str, BackgroundService] = {}
    while len(running) < len(wanted):
        ready = [s for s in wanted.values() if s.name not in running
                 and all(c in running or c not in wanted for c in s.callees)]
        if not ready:
            raise RuntimeError(f"call graph cycle among {sorted(set(wanted) - set(running))}")
        for svc in ready:
            module = importlib.import_module(f"boutique.{svc.module}")
            env = {wanted[c].addr_env: running[c].address for c in svc.callees if c in wanted}
            env.update((overrides or {}).get(svc.name, {}))
            running[svc.name] = stack.enter_context(BackgroundService(module.DEFINITION, env, catalog))
    return running
