"""emailservice: renders and sends the order confirmation (contract section 2.6).

SendOrderConfirmation checks the request (`email` must look like an address,
`order` must be present), renders our own Jinja2 templates
(templates/email/confirmation.html with autoescape, and a plain-text twin) and
hands the message to a sender:

- by default the LogSender: one INFO line naming the recipient and order id
  (the rendered body only at DEBUG), like the original's "dummy mode";
- with SMTP_HOST set, the SmtpSender (smtplib, run in a worker thread):
    SMTP_HOST, SMTP_PORT (default 25), SMTP_FROM (required with SMTP_HOST),
    SMTP_STARTTLS (true/false, default false), SMTP_CA_FILE (CA bundle that
    verifies the STARTTLS certificate; default: the system's),
    SMTP_USERNAME + SMTP_PASSWORD (together, optional),
    SMTP_TIMEOUT_SECONDS (default 2.5, inside callers' 3 s deadline).
  Anything malformed is a ConfigError at start-up naming the variable.

Fixed against the original (which never rendered; its template had bugs): the
address shows the real street_address, and money is shown as units and cents
with the currency code (e.g. `8.99 USD`), with line subtotals and a total.
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from functools import cached_property
from typing import Any, Protocol

import grpc
import jinja2

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.config import ConfigError, env_bool, env_float, env_int
from boutique.runtime.server import ServiceContext, ServiceDefinition

# The WHATWG (HTML <input type=email>) address syntax: no spaces, no angle
# brackets, no line breaks, so the value is safe as an SMTP recipient.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
NANOS = 1_000_000_000

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("boutique", "templates/email"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True, default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    auto_reload=False,  # the templates ship with the package: no stat() of both files on every call
)
# compiled once here, not looked up (and checked for changes) per call
_TEXT = _templates.get_template("confirmation.txt")
_HTML = _templates.get_template("confirmation.html")


def looks_like_email(value: str) -> bool:
    return len(value) <= 254 and bool(EMAIL_RE.match(value))


def _total_nanos(m: pb.Money) -> int:
    return m.units * NANOS + m.nanos


def format_amount(total_nanos: int, currency_code: str) -> str:
    """'8.99 USD': units and cents (truncated, like the frontend), then the code."""
    sign = "-" if total_nanos < 0 else ""
    units, nanos = divmod(abs(total_nanos), NANOS)
    text = f"{sign}{units}.{nanos // 10_000_000:02d}"
    return f"{text} {currency_code}" if currency_code else text


def format_money(m: pb.Money) -> str:
    return format_amount(_total_nanos(m), m.currency_code)


def address_lines(a: pb.Address) -> list[str]:
    place = " ".join(x for x in (", ".join(y for y in (a.city, a.state) if y), str(a.zip_code) if a.zip_code else "")
                     if x)
    return [line for line in (a.street_address, place, a.country) if line]


def view_model(order: pb.OrderResult) -> dict[str, Any]:
    """What the templates show, computed here so both templates agree."""
    items = []
    codes = {order.shipping_cost.currency_code} if order.HasField("shipping_cost") else set()
    total = _total_nanos(order.shipping_cost)
    for line in order.items:
        subtotal = _total_nanos(line.cost) * line.item.quantity  # exact integer arithmetic
        total += subtotal
        codes.add(line.cost.currency_code)
        items.append({
            "product_id": line.item.product_id,
            "quantity": line.item.quantity,
            "price": format_money(line.cost),
            "subtotal": format_amount(subtotal, line.cost.currency_code),
        })
    return {
        "subject": f"Your Boutique Mesh order {order.order_id}",
        "order_id": order.order_id,
        "tracking_id": order.shipping_tracking_id,
        "shipping_cost": format_money(order.shipping_cost),
        "address_lines": address_lines(order.shipping_address),
        "items": items,
        # a total only makes sense in one currency
        "total": format_amount(total, codes.pop()) if len(codes) == 1 else "",
    }


@dataclass(frozen=True)
class Rendered:
    """The confirmation. Each body is rendered when first used: the default log-only sender never
    needs the HTML, nor the text unless DEBUG logging is on."""

    subject: str
    model: dict[str, Any] = field(repr=False)

    @cached_property
    def text(self) -> str:
        return _TEXT.render(self.model)

    @cached_property
    def html(self) -> str:
        return _HTML.render(self.model)


def render(order: pb.OrderResult) -> Rendered:
    model = view_model(order)
    return Rendered(subject=model["subject"], model=model)


class SendError(Exception):
    """The message could not be delivered; `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Sender(Protocol):
    async def send(self, to: str, order_id: str, mail: Rendered) -> None: ...


class LogSender:
    """The default: the confirmation goes to the log instead of a mailbox."""

    def __init__(self, log: Any) -> None:
        self.log = log

    async def send(self, to: str, order_id: str, mail: Rendered) -> None:
        self.log.info("order confirmation for order %s to %s (log only, SMTP_HOST not set)", order_id, to,
                      extra=logs.fields(order_id=order_id, recipient=to))
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("order confirmation body:\n%s", mail.text, extra=logs.fields(order_id=order_id))


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    starttls: bool
    ca_file: str
    username: str
    password: str
    timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SmtpSettings | None:
        host = env.get("SMTP_HOST", "").strip()
        if not host:
            return None
        sender = env.get("SMTP_FROM", "").strip()
        if not sender:
            raise ConfigError("SMTP_FROM is required when SMTP_HOST is set (the From: address)")
        if not looks_like_email(parseaddr(sender)[1]):
            raise ConfigError(f"SMTP_FROM={sender!r} is not an e-mail address")
        username, password = env.get("SMTP_USERNAME", ""), env.get("SMTP_PASSWORD", "")
        if bool(username) != bool(password):
            raise ConfigError("SMTP_USERNAME and SMTP_PASSWORD must be set together")
        ca_file = env.get("SMTP_CA_FILE", "").strip()
        if ca_file:
            try:
                ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"SMTP_CA_FILE={ca_file!r} is not a readable CA bundle: {exc}") from None
        timeout = env_float("SMTP_TIMEOUT_SECONDS", 2.5, env)
        if timeout == 0:
            raise ConfigError("SMTP_TIMEOUT_SECONDS must be greater than 0")
        return cls(host=host, port=env_int("SMTP_PORT", 25, env, lo=1), sender=sender,
                   starttls=env_bool("SMTP_STARTTLS", False, env), ca_file=ca_file,
                   username=username, password=password, timeout=timeout)


class SmtpSender:
    """Delivers through an SMTP relay; smtplib blocks, so it runs in a thread."""

    def __init__(self, settings: SmtpSettings, log: Any) -> None:
        self.settings = settings
        self.log = log

    def message(self, to: str, mail: Rendered) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = mail.subject
        msg["From"] = self.settings.sender
        msg["To"] = to
        msg.set_content(mail.text)
        msg.add_alternative(mail.html, subtype="html")
        return msg

    def _deliver(self, msg: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
            smtp.ehlo()
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=s.ca_file or None))
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
            smtp.send_message(msg)

    async def send(self, to: str, order_id: str, mail: Rendered) -> None:
        s = self.settings
        where = f"SMTP server {s.host}:{s.port}"
        try:
            await asyncio.to_thread(self._deliver, self.message(to, mail))
        except smtplib.SMTPRecipientsRefused:
            raise SendError(grpc.StatusCode.INVALID_ARGUMENT, f"email: the {where} refused recipient {to}") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise SendError(grpc.StatusCode.UNAVAILABLE,
                            f"email: the {where} rejected SMTP_USERNAME/SMTP_PASSWORD: {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(grpc.StatusCode.UNAVAILABLE, f"email: sending through the {where} failed: {exc}") from None
        self.log.info("order confirmation for order %s sent to %s via %s", order_id, to, where,
                      extra=logs.fields(order_id=order_id, recipient=to, smtp_host=s.host))


class EmailService(rpc.EmailServiceServicer):
    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    async def SendOrderConfirmation(self, request: pb.SendOrderConfirmationRequest,
                                    context: grpc.aio.ServicerContext):
        if not looks_like_email(request.email):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"email: {request.email!r} is not an e-mail address")
        if not request.HasField("order"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "order: the order to confirm is missing")
        mail = render(request.order)
        try:
            await self.sender.send(request.email, request.order.order_id, mail)
        except SendError as exc:
            await context.abort(exc.code, str(exc))
        return pb.Empty()


def create(ctx: ServiceContext) -> EmailService:
    settings = SmtpSettings.from_env(ctx.env)
    sender: Sender = SmtpSender(settings, ctx.log) if settings else LogSender(ctx.log)
    return EmailService(sender)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_EmailServiceServicer_to_server, create=create)
