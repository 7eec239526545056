"""What the frontend refuses before a handler runs, and the headers every answer carries.

Limits (the README's "Limits and protections" lists them):
  MAX_HEADER_BYTES    request line + headers; more is 431 (HttpProtocol, before the app runs)
  HEADER_TIMEOUT      a connection must finish its request headers within this; else 408 and close
                      (env BOUTIQUE_HTTP_HEADER_TIMEOUT)
  MAX_BODY_BYTES      a request body; more is 413 (a Content-Length over it is refused unread)
  BODY_TIMEOUT        a request body must arrive within this; else 408 (env BOUTIQUE_HTTP_BODY_TIMEOUT)
  MAX_FORM_FIELDS     form fields per request; more is 400
  session ids         a shop_session-id cookie that is not 1..64 of [A-Za-z0-9-] is ignored (a new
                      session is minted), so a client cannot choose a huge cart key
Cross-site forms: a POST whose Origin is another site (or "null"), or that the browser marks
Sec-Fetch-Site: cross-site, is 403. No Origin at all passes: Online Boutique's load generator
sends none, and browsers always send one on cross-site form posts.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
SESSION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                           "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
)


class ClientError(Exception):
    """The client's request is wrong in a way a handler cannot fix: an HTTP 4xx with a reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def timeouts(env: Mapping[str, str]) -> tuple[float, float]:
    """(header timeout, body timeout) in seconds from the environment, defaults above."""
    out = []
    for name, default in (("BOUTIQUE_HTTP_HEADER_TIMEOUT", HEADER_TIMEOUT), ("BOUTIQUE_HTTP_BODY_TIMEOUT",
                                                                              BODY_TIMEOUT)):
        raw = env.get(name, "").strip()
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = -1.0
        if not 0 < value <= 3600:
            from boutique.runtime.config import ConfigError

            raise ConfigError(f"{name}={raw!r}: must be a number of seconds between 0 and 3600")
        out.append(value)
    return out[0], out[1]


def valid_session(value: str) -> bool:
    return bool(SESSION_ID.match(value))


def has_control(text: str) -> bool:
    return bool(_CONTROL.search(text))


def header(scope: Mapping[str, Any], name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def is_https(scope: Mapping[str, Any]) -> bool:
    """The request came over HTTPS: here, or at the gateway in front (X-Forwarded-Proto)."""
    forwarded = header(scope, b"x-forwarded-proto").split(",")[0].strip().lower()
    return scope.get("scheme") == "https" or forwarded == "https"


def cross_site_problem(scope: Mapping[str, Any]) -> str:
    """Why a state-changing request is refused as cross-site ("" when it may pass)."""
    if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
        return ""
    if header(scope, b"sec-fetch-site").lower() == "cross-site":
        return "a form from another site may not change this shop's state (Sec-Fetch-Site: cross-site)"
    origin = header(scope, b"origin")
    if not origin:
        return ""
    host = header(scope, b"host")
    parts = urlsplit(origin)
    if origin == "null" or not parts.netloc or parts.netloc.lower() != host.lower():
        return f"a form from another site may not change this shop's state (Origin {origin[:100]!r})"
    return ""


def body_problem(scope: Mapping[str, Any]) -> str:
    length = header(scope, b"content-length")
    if length and (not length.isascii() or not length.isdigit()):
        return "the Content-Length header is not a number"
    if length and int(length) > MAX_BODY_BYTES:
        return f"the request body is {int(length)} bytes; the shop accepts at most {MAX_BODY_BYTES}"
    return ""


class LimitedReceive:
    """The ASGI receive of one request: the body may be at most MAX_BODY_BYTES and must have
    arrived within `timeout` seconds of the first read; otherwise ClientError (413 or 408)."""

    def __init__(self, receive: Any, timeout: float) -> None:
        self.receive, self.timeout = receive, timeout
        self.received = 0
        self.deadline: float | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
        left = self.deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(self.receive(), max(left, 0.001))
        except TimeoutError:
            raise ClientError(408, f"the request body did not arrive within {self.timeout:g} seconds") from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > MAX_BODY_BYTES:
                raise ClientError(413, f"the request body is over {MAX_BODY_BYTES} bytes")
        return message


async def refuse(send: Any, status: int, message: str, request_id: str) -> None:
    """A short plain-text 4xx (no page: nothing about the request is trusted yet)."""
    body = f"{status} {message}\nrequest id: {request_id}\n".encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})  # the shop's middleware adds SECURITY_HEADERS
    await send({"type": "http.response.body", "body": body})
