"""Running the frontend: uvicorn with our own signal handling.

SIGTERM/SIGINT: /_healthz turns 503 at once, SHUTDOWN_DRAIN_SECONDS later the
listener closes, in-flight requests get SHUTDOWN_GRACE_SECONDS to finish, then
the process exits 0 (uvicorn on its own re-raises the signal and dies by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Generator, Mapping
from typing import Any

import uvicorn

from boutique import service_catalog as catalog_mod
from boutique.frontend import config as config_mod
from boutique.frontend import protect
from boutique.frontend.app import Shared, create_app
from boutique.runtime import logs, metrics
from boutique.runtime.config import ConfigError

log = logging.getLogger("frontend")


def _http_impl(header_timeout: float) -> Any:
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - pinned in requirements
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the two limits it lacks: the request line and
        headers may be at most protect.MAX_HEADER_BYTES (431), and must be complete within
        `header_timeout` seconds of the connection or of the previous response (408, closed).
        A client sending headers slowly or not at all cannot hold a connection for long."""

        _head_bytes = 0  # request line and headers of the request being parsed (parser callbacks)
        _raw_bytes = 0  # bytes received since the request head began (a cheap early bound)
        _head_timer: asyncio.TimerHandle | None = None
        _rejected = False
        _in_message = False  # between a request's first byte and the end of its body

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._raw_bytes = 0
            self._head_timer = self.loop.call_later(header_timeout, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if not self._raw_bytes:  # an idle connection that never started a request: just close
                self.transport.close()
                return
            self._reject(408, f"the request headers did not arrive within {header_timeout:g} seconds")

        def _reject(self, status: int, message: str) -> None:
            if self._rejected or self.transport.is_closing():
                return
            self._rejected = True
            log.info("refused a request: %s", message, extra=logs.fields(status=status, client=str(self.client)))
            body = f"{status} {message}\n".encode()
            phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, phrase, len(body), body))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._rejected:
                return
            if self._head_timer is None and not self._in_message:
                self._arm()  # a new request head begins: it gets header_timeout to complete
            reading_head = self._head_timer is not None
            if reading_head:
                self._raw_bytes += len(data)
            super().data_received(data)
            # still no complete head after this many bytes (httptools buffers a header until it ends)
            if reading_head and self._head_timer is not None and self._raw_bytes > protect.MAX_HEADER_BYTES:
                self._reject(431, f"the request headers are over {protect.MAX_HEADER_BYTES} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._in_message = True

        def on_message_complete(self) -> None:
            self._in_message = False
            super().on_message_complete()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count(self, n: int) -> None:
            self._head_bytes += n
            if self._head_bytes > protect.MAX_HEADER_BYTES:
                self._reject(431, f"the request headers are over {protect.MAX_HEADER_BYTES} bytes")
                raise ValueError("request head too large")  # stops the parser (httptools reports an error)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            if not self._rejected:
                super().send_400_response(msg)

    return GuardedHttpProtocol


def bind(host: str, port: int) -> socket.socket:
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} (PORT={port}, LISTEN_ADDR): {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, shared: Shared, drain: float) -> None:
        super().__init__(config)
        self.shared = shared
        self.drain = drain
        self.exit_at: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, _frame: Any) -> None:
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        if self.shared.draining:  # a second signal: stop waiting for the drain period
            self.should_exit = True
            return
        self.shared.draining = True
        log.info("shutting down: /_healthz is 503, draining",
                 extra=logs.fields(drain_s=self.drain, grace_s=self.config.timeout_graceful_shutdown))
        self.exit_at = time.monotonic() + self.drain
        if self.drain <= 0:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.exit_at is not None and time.monotonic() >= self.exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def build(env: Mapping[str, str], sock: socket.socket | None = None) -> tuple[GracefulServer, socket.socket]:
    """Config, app and a bound socket; raises ConfigError for anything wrong."""
    cfg = config_mod.from_env(env)
    app, shared = create_app(cfg, catalog_mod.default(), dict(env))
    sock = sock or bind(cfg.service.listen_host, cfg.service.port)
    header_timeout, _ = protect.timeouts(env)
    ucfg = uvicorn.Config(app, http=_http_impl(header_timeout), loop="asyncio", lifespan="on", log_config=None,
                          access_log=False, server_header=False, proxy_headers=False,
                          timeout_graceful_shutdown=max(cfg.service.shutdown_grace, 0.1),
                          timeout_keep_alive=30, backlog=2048)
    return GracefulServer(ucfg, shared, cfg.service.shutdown_drain), sock


def main(env: Mapping[str, str] | None = None) -> int:
    """`boutique serve frontend`: returns the exit code (2 for configuration errors)."""
    env = os.environ if env is None else env
    try:
        cfg = config_mod.from_env(env)
        logs.setup("frontend", cfg.service.log_level)
        if env.get("ENABLE_ASSISTANT", "").strip().lower() == "true":
            log.warning("ENABLE_ASSISTANT is set, but this frontend has no shopping assistant; ignored")
        server, sock = build(env)
        metrics.start_http_server(cfg.service.metrics_port, metrics.metrics_host(cfg.service.listen_host))
    except (ConfigError, catalog_mod.CatalogError) as exc:
        print(f"frontend: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the metrics port is taken
        print(f"frontend: cannot start: {exc}", file=sys.stderr)
        return 2
    log.info("serving", extra=logs.fields(address=f"{sock.getsockname()[0]}:{sock.getsockname()[1]}",
                                          base_url=cfg.base_url, fanout=cfg.fanout,
                                          metrics_port=cfg.service.metrics_port,
                                          tls="on" if cfg.service.tls else "off"))
    server.run(sockets=[sock])
    log.info("stopped")
    return 0


class BackgroundFrontend:
    """The frontend on an ephemeral port in a thread (tests): `with BackgroundFrontend(env) as fe: fe.url`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = {"LISTEN_ADDR": "127.0.0.1", "PORT": "0", "METRICS_PORT": "0",
                    "BOUTIQUE_ACCESS_LOG": "errors", **env}
        self.server, self.sock = build(self.env)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True, name="frontend")

    @property
    def shared(self) -> Shared:
        return self.server.shared

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> BackgroundFrontend:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.__exit__()  # no thread or socket outlives a failed start
                raise RuntimeError("the frontend did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
