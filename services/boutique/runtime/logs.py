"""JSON log lines: one object per line with timestamp, severity, service, message
and any structured fields (method, status, duration_ms, request_id, trace_id)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

# Set by the server's call wrapper (metrics.observe_unary) for the duration of a call; read by
# the client (request-id propagation, boutique.runtime.client) and the log formatter.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid, tid = request_id.get(), trace_id.get()
        if rid:
            out["request_id"] = rid
        if tid:
            out["trace_id"] = tid
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(service: str, level: str = "INFO") -> logging.Logger:
    """Route the root logger to stdout as JSON. Safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return logging.getLogger(service)


def fields(**kw: object) -> dict[str, dict[str, object]]:
    """extra= helper: log.info("msg", extra=fields(method=..., status=...))."""
    return {"fields": kw}
