"""Trace collectors for the tracing tests, both real servers on 127.0.0.1:

- Jaeger (tools/go/jaeger, built from the Go module proxy on first use): OTLP/gRPC in, in-memory
  storage, its HTTP query API out. The end-to-end test reads whole traces back from it.
- OtlpReceiver: a small OTLP/gRPC TraceService server (opentelemetry-proto's own service
  definition) that keeps what it is sent, for the fast tests that need no Go build.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from testkit import free_port, stop_process

from boutique.dev import gotools


@dataclass
class Jaeger:
    otlp_address: str  # host:port of the OTLP/gRPC receiver
    query_url: str  # http://host:port of the query API
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.query_url}{path}", timeout=5) as resp:
            return json.load(resp)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            data = self.get(f"/api/traces/{trace_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return (data.get("data") or [None])[0]


def jaeger_config(otlp: int, query: int, query_grpc: int, health: int) -> dict[str, Any]:
    """Jaeger v2's collector config: OTLP/gRPC -> batch -> in-memory store, query API, health."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {"resource": {"service.name": "jaeger"}, "metrics": {"level": "none"},
                          "logs": {"level": "info"}},
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"127.0.0.1:{health}"}},
            "jaeger_query": {"storage": {"traces": "memstore"}, "http": {"endpoint": f"127.0.0.1:{query}"},
                             "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"}},
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 10000}}}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{otlp}"}}}},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


@contextlib.contextmanager
def run_jaeger(workdir: Path, startup_timeout: float = 60) -> Iterator[Jaeger]:
    binary = gotools.binary("jaeger")
    ports = {"otlp": free_port(), "query": free_port(), "query_grpc": free_port(), "health": free_port()}
    config = workdir / "jaeger.yaml"
    config.write_text(yaml.safe_dump(jaeger_config(**ports)))
    log = workdir / "jaeger.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(binary), "--config", f"file:{config}"], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jaeger exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            health = f"http://127.0.0.1:{ports['health']}/status"
            with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(health, timeout=1) as resp:
                if json.load(resp).get("healthy"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jaeger not healthy after {startup_timeout:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Jaeger(f"127.0.0.1:{ports['otlp']}", f"http://127.0.0.1:{ports['query']}", log)
    finally:
        stop_process(proc)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int


class OtlpReceiver:
    """`with OtlpReceiver() as rx:` an OTLP/gRPC collector on 127.0.0.1:rx.port; rx.spans() lists
    every span received so far with its resource's service.name."""

    def __init__(self) -> None:
        self.service = _TraceService()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self.service, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spans(self) -> list[Span]:
        out: list[Span] = []
        with self.service.lock:
            requests = list(self.service.requests)
        for req in requests:
            for rs in req.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(Span(attrs.get("service.name", ""), s.name, s.trace_id.hex(), s.span_id.hex(),
                                        s.parent_span_id.hex(), s.kind))
        return out

    def wait_for(self, predicate: Any, timeout: float = 20) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        return self.spans()

    def __enter__(self) -> OtlpReceiver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)
