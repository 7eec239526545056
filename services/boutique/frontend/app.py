"""The shop's web frontend: Starlette routes, Jinja2 pages, sessions, metrics, access logs.

Routes, form fields, cookies, redirects and status codes follow contract section 3,
with these deliberate improvements (each is marked "better than the original" below):
an unknown product is a 404 page; a backend failure is a friendly error page with
the request id and no stack trace; validation failures are 422 pages naming the
form field; cookies carry Path, HttpOnly and SameSite; /setCurrency only redirects
back to a Referer on this site; a currency cookie the currency service does not
support falls back to USD instead of failing every page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import jinja2
from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request, cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from boutique import money
from boutique.frontend import protect, validation
from boutique.frontend.backend import Backend, BackendError, FrontendClients
from boutique.frontend.config import SHARED_SESSION_ID, FrontendConfig
from boutique.money import MoneyError
from boutique.proto import demo_pb2 as pb
from boutique.runtime import logs, tracing
from boutique.service_catalog import Catalog

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "shop_session-id"
CURRENCY_COOKIE = "shop_currency"
COOKIE_MAX_AGE = 172800  # 48 h, as the original
DEFAULT_CURRENCY = "USD"
WHITELISTED_CURRENCIES = frozenset({"USD", "EUR", "CAD", "JPY", "GBP", "TRY"})
MAX_RECOMMENDATIONS = 4
MAX_PRODUCT_ID = 64  # longer ids are 404 without asking the catalog (ours are 10 characters)
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
PLATFORM_NAMES = {"local": "local", "gcp": "Google Cloud", "aws": "AWS", "azure": "Azure",
                  "onprem": "on-premises", "alibaba": "Alibaba Cloud"}

REQUESTS = Counter("http_requests_total", "HTTP requests served by the frontend.", ["route", "method", "status"])
DURATION = Histogram(
    "http_request_duration_seconds", "Time to serve an HTTP request.", ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
access_log = logging.getLogger("boutique.access")
log = logging.getLogger("frontend")


@dataclass
class Shared:
    """Process-wide state the handlers need (set up in the lifespan)."""

    cfg: FrontendConfig
    catalog: Catalog
    backend: Backend | None = None
    draining: bool = False
    body_timeout: float = protect.BODY_TIMEOUT
    hostname: str = field(default_factory=lambda: os.uname().nodename)


@dataclass(frozen=True)
class Visit:
    """Per-request identity, set by ShopMiddleware."""

    session_id: str
    request_id: str
    cookies: dict[str, str]
    secure: bool = False  # came over HTTPS (here or at the gateway): cookies get Secure


# --- middleware: sessions, request ids, metrics, access log --------------------------------------
class ShopMiddleware:
    """Outermost ASGI layer: session cookie, request id (also sent to backends as
    x-request-id), Prometheus metrics by route template and the JSON access log."""

    def __init__(self, app: Callable[..., Awaitable[None]], shared: Shared) -> None:
        self.app = app
        self.shared = shared
        cfg = shared.cfg
        self.cookie_path = cfg.base_url or "/"
        self.log_mode = cfg.service.access_log
        self.body_timeout = shared.body_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        cookies: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.update(cookie_parser(value.decode("latin-1")))
        session = cookies.get(SESSION_COOKIE, "")
        if session and not protect.valid_session(session):
            session = ""  # not an id we mint: a client cannot pick a huge or odd cart key
        minted = ""
        if not session:
            session = minted = SHARED_SESSION_ID if self.shared.cfg.single_shared_session else str(uuid.uuid4())
        request_id = str(uuid.uuid4())
        secure = protect.is_https(scope)
        scope["boutique.visit"] = Visit(session, request_id, cookies, secure)
        token = logs.request_id.set(request_id)
        status = 500
        sent = 0

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(protect.SECURITY_HEADERS)
                if minted:
                    headers.append((b"set-cookie", cookie_header(SESSION_COOKIE, minted, self.cookie_path,
                                                                 secure=secure)))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            problem = protect.cross_site_problem(scope)
            if problem:
                await protect.refuse(send_wrapper, 403, problem, request_id)
                return
            problem = protect.body_problem(scope)
            if problem:
                await protect.refuse(send_wrapper, 413, problem, request_id)
                return
            await self.app(scope, protect.LimitedReceive(receive, self.body_timeout), send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            REQUESTS.labels(template, method, str(status)).inc()
            DURATION.labels(template, method).observe(elapsed)
            if self.log_mode == "all" or (self.log_mode == "errors" and status >= 500):
                access_log.info("%s %s %d", method, scope["path"], status, extra=logs.fields(
                    route=template, method=method, path=scope["path"], status=status,
                    duration_ms=round(elapsed * 1000, 3), session=session, bytes=sent))
            logs.request_id.reset(token)


def cookie_header(name: str, value: str, path: str, max_age: int = COOKIE_MAX_AGE, *, secure: bool = False) -> bytes:
    # Better than the original (no Path there): a cookie minted on /product/X must reach /cart.
    flags = "; Secure" if secure else ""
    return f"{name}={value}; Max-Age={max_age}; Path={path}; HttpOnly; SameSite=Lax{flags}".encode("latin-1")


# --- pages -------------------------------------------------------------------------------------
class Pages:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.cfg = shared.cfg
        self.base = shared.cfg.base_url
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=jinja2.select_autoescape(["html"]),
            trim_blocks=True, lstrip_blocks=True,
            auto_reload=False,  # the templates ship with the package: no stat() of each included one per page
        )
        env.filters["money"] = money.render
        env.globals.update(base=self.base, shop_name=self.cfg.shop_name, platform=self.cfg.platform,
                           platform_name=PLATFORM_NAMES[self.cfg.platform], banner=self.cfg.message,
                           cymbal=self.cfg.cymbal_branding, hostname=shared.hostname)
        self.templates = {name: env.get_template(f"{name}.html")
                          for name in ("home", "product", "cart", "order", "error")}

    @property
    def be(self) -> Backend:
        assert self.shared.backend is not None, "backend not started"
        return self.shared.backend

    # helpers
    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        visit: Visit = request.scope["boutique.visit"]
        ctx.setdefault("currencies", [])
        ctx.setdefault("user_currency", DEFAULT_CURRENCY)
        ctx.setdefault("cart_size", 0)
        ctx.setdefault("show_currency", True)
        html = self.templates[name].render(session_id=visit.session_id, request_id=visit.request_id, **ctx)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8")

    def error(self, request: Request, status: int, title: str, message: str, detail: str = "",
              errors: dict[str, str] | None = None) -> Response:
        return self.render(request, "error", status=status, status_code=status,
                           status_text=HTTPStatus(status).phrase, title=title,
                           message=message, detail=detail, errors=errors or {})

    def backend_error(self, request: Request, exc: BackendError) -> Response:
        # The log keeps the details (addresses, callee messages); the page shows only the request id.
        log.error("backend call failed: %s", exc, extra=logs.fields(call=exc.what, status=exc.code.name,
                                                                    detail=exc.detail))
        return self.error(request, 500, "Something went wrong",
                          "One of the shop's services could not answer. Please try again in a moment.")

    def not_found(self, request: Request, what: str) -> Response:
        return self.error(request, 404, "Not found", what)

    @staticmethod
    def user_currency(request: Request) -> str:
        return request.scope["boutique.visit"].cookies.get(CURRENCY_COOKIE) or DEFAULT_CURRENCY

    @staticmethod
    def shown_currencies(supported: list[str]) -> list[str]:
        return [c for c in supported if c in WHITELISTED_CURRENCIES]

    async def priced(self, products_aw: Awaitable[list[pb.Product]], cur: str) -> tuple[list[pb.Product], list | None]:
        """Products and their prices in `cur`; prices None if `cur` is not a supported code."""
        products = await products_aw
        # Convert is a pure function of (amount, currency): each distinct price is converted once
        # (the nine products have eight prices).
        distinct = list(dict.fromkeys((p.price_usd.currency_code, p.price_usd.units, p.price_usd.nanos)
                                      for p in products))
        try:
            converted = await self.be.all(*(
                self.be.convert(pb.Money(currency_code=c, units=u, nanos=n), cur) for c, u, n in distinct))
        except BackendError as exc:
            if exc.code is grpc.StatusCode.INVALID_ARGUMENT:
                return products, None
            raise
        by_price = dict(zip(distinct, converted, strict=True))
        return products, [by_price[(p.price_usd.currency_code, p.price_usd.units, p.price_usd.nanos)]
                          for p in products]

    async def _recommended(self, ids_aw: Awaitable[list[str] | None]) -> list[pb.Product]:
        ids = await ids_aw
        if not ids:
            return []
        found = await self.be.all(*(self.be.get_product_optional(i) for i in ids[:MAX_RECOMMENDATIONS]))
        return [p for p in found if p is not None]

    # handlers
    async def home(self, request: Request) -> Response:
        be, visit, cur = self.be, request.scope["boutique.visit"], self.user_currency(request)
        try:
            supported, (products, prices), items, ads = await be.all(
                be.supported_currencies(), self.priced(be.list_products(), cur),
                self._cart_count_items(visit.session_id), be.ads_for([]))
            if prices is None or cur not in supported:  # a cookie we cannot price in: show dollars
                cur = DEFAULT_CURRENCY
                products, prices = await self.priced(_ready(products), cur)
        except BackendError as exc:
            return self.backend_error(request, exc)
        priced_products = list(zip(products, prices or [], strict=True))
        return self.render(request, "home", currencies=self.shown_currencies(supported), user_currency=cur,
                           cart_size=_count(items), products=priced_products,
                           ad=random.choice(ads) if ads else None)

    async def _cart_count_items(self, session_id: str) -> list[pb.CartItem] | None:
        """The cart's lines for a page that only shows the cart count: None when the cart
        cannot be read (Redis down, say), and the page shows no count instead of failing."""
        try:
            return await self.be.cart_items(session_id)
        except BackendError as exc:
            log.warning("cart count unavailable: %s", exc, extra=logs.fields(call=exc.what, status=exc.code.name))
            return None

    async def product(self, request: Request) -> Response:
        be, visit, cur = self.be, request.scope["boutique.visit"], self.user_currency(request)
        product_id = request.path_params["id"]
        if len(product_id) > MAX_PRODUCT_ID or protect.has_control(product_id):
            return self.not_found(request, f"We have no product with the id {product_id[:MAX_PRODUCT_ID]!r}.")

        async def product_and_extras() -> tuple[pb.Product, list | None, list[pb.Ad]]:
            p = await be.get_product(product_id)
            (_, prices), ads = await be.all(self.priced(_ready([p]), cur), be.ads_for(list(p.categories)))
            return p, prices, ads

        try:
            (product, prices, ads), supported, items, recommended = await be.all(
                product_and_extras(), be.supported_currencies(), self._cart_count_items(visit.session_id),
                self._recommended(be.recommendations_for(visit.session_id, [product_id])))
            if prices is None or cur not in supported:
                cur = DEFAULT_CURRENCY
                _, prices = await self.priced(_ready([product]), cur)
        except BackendError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND and exc.what.endswith("GetProduct"):
                # Better than the original (a 500 there): an unknown product is a 404 page.
                return self.not_found(request, f"We have no product with the id {product_id[:MAX_PRODUCT_ID]!r}.")
            return self.backend_error(request, exc)
        return self.render(request, "product", currencies=self.shown_currencies(supported), user_currency=cur,
                           cart_size=_count(items), product=product, price=(prices or [None])[0],
                           quantities=validation.QUANTITIES, recommendations=recommended,
                           ad=random.choice(ads) if ads else None)

    async def add_to_cart(self, request: Request) -> Response:
        form = await _form(request)
        try:
            item = validation.add_to_cart(form)
        except validation.ValidationFailed as exc:
            return self.invalid(request, exc)
        visit: Visit = request.scope["boutique.visit"]
        if len(item.product_id) > MAX_PRODUCT_ID:
            return self.not_found(request, f"We have no product with the id {item.product_id[:MAX_PRODUCT_ID]!r}.")
        try:
            product = await self.be.get_product(item.product_id)
            await self.be.add_item(visit.session_id, product.id, item.quantity)
        except BackendError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND and exc.what.endswith("GetProduct"):
                return self.not_found(request, f"We have no product with the id {item.product_id!r}.")
            if exc.code is grpc.StatusCode.RESOURCE_EXHAUSTED and exc.what.endswith("AddItem"):
                log.info("cart full: %s", exc.detail)
                return self.error(request, 409, "Your cart is full", exc.detail.partition(": ")[2] or exc.detail)
            return self.backend_error(request, exc)
        return RedirectResponse(f"{self.base}/cart", status_code=302)

    async def view_cart(self, request: Request) -> Response:
        be, visit, cur = self.be, request.scope["boutique.visit"], self.user_currency(request)
        cart = _Once(lambda: be.cart_items(visit.session_id))  # one GetCart, shared by both chains

        async def lines_and_shipping(currency: str) -> tuple[list[pb.CartItem], list, pb.Money | None]:
            items = await cart.get()

            async def line(item: pb.CartItem) -> tuple[pb.CartItem, pb.Product, pb.Money]:
                product = await be.get_product(item.product_id)
                return item, product, await be.convert(product.price_usd, currency)

            async def shipping() -> pb.Money:
                return await be.convert(await be.shipping_quote(items), currency)

            try:
                ship, *lines = await be.all(shipping(), *(line(i) for i in items))
            except BackendError as exc:
                if exc.code is grpc.StatusCode.INVALID_ARGUMENT and exc.what.endswith("Convert"):
                    return items, [], None
                raise
            return items, lines, ship

        async def recommended_for_cart() -> list[pb.Product]:
            items = await cart.get()
            return await self._recommended(be.recommendations_for(visit.session_id, [i.product_id for i in items]))

        try:
            supported, (items, lines, ship), recommended = await be.all(
                be.supported_currencies(), lines_and_shipping(cur), recommended_for_cart())
            if ship is None or cur not in supported:
                cur = DEFAULT_CURRENCY
                items, lines, ship = await lines_and_shipping(cur)
            assert ship is not None
            rows = []
            total = money.add(money.zero(cur), ship)
            for item, product, unit in lines:
                line_total = money.multiply(unit, item.quantity)
                total = money.add(total, line_total)
                rows.append({"item": item, "product": product, "price": line_total})
        except BackendError as exc:
            return self.backend_error(request, exc)
        except MoneyError as exc:
            log.error("cart prices do not add up: %s", exc)
            return self.error(request, 500, "Something went wrong", "The cart's prices do not add up.")
        year = time.gmtime().tm_year
        return self.render(request, "cart", currencies=self.shown_currencies(supported), user_currency=cur,
                           cart_size=sum(i.quantity for i in items), rows=rows, shipping=ship, total=total,
                           order_token=str(uuid.uuid4()),
                           recommendations=recommended, years=list(range(year, year + 5)), default_year=year + 1)

    async def empty_cart(self, request: Request) -> Response:
        try:
            await self.be.empty_cart(request.scope["boutique.visit"].session_id)
        except BackendError as exc:
            return self.backend_error(request, exc)
        return RedirectResponse(f"{self.base}/", status_code=302)

    async def checkout(self, request: Request) -> Response:
        form = await _form(request)
        try:
            order = validation.checkout(form)
        except validation.ValidationFailed as exc:
            return self.invalid(request, exc)
        be, visit, cur = self.be, request.scope["boutique.visit"], self.user_currency(request)
        try:
            supported = await be.supported_currencies()
            if cur not in supported:
                cur = DEFAULT_CURRENCY
            req = pb.PlaceOrderRequest(
                user_id=visit.session_id, user_currency=cur, email=order.email,
                address=pb.Address(street_address=order.street_address, city=order.city, state=order.state,
                                   country=order.country, zip_code=order.zip_code),
                credit_card=pb.CreditCardInfo(
                    credit_card_number=order.credit_card_number, credit_card_cvv=order.credit_card_cvv,
                    credit_card_expiration_year=order.credit_card_expiration_year,
                    credit_card_expiration_month=order.credit_card_expiration_month))
            result = await be.place_order(req, order.order_token)
        except BackendError as exc:
            refusal = card_refusal(exc.detail)
            if refusal:  # the card was refused: the user's to fix, and safe to tell
                log.info("card refused: %s", refusal, extra=logs.fields(call=exc.what, status=exc.code.name))
                return self.error(request, 422, "Your card was refused", refusal)
            if exc.code is grpc.StatusCode.FAILED_PRECONDITION and exc.detail.startswith("cart: the cart is empty"):
                log.info("order form resubmitted after its order emptied the cart", extra=logs.fields(
                    order_token=order.order_token))
                return self.error(request, 409, "Your cart is empty",
                                  "If you submitted this order before, it has gone through: "
                                  "the confirmation is on its way by e-mail.")
            if exc.code is grpc.StatusCode.ALREADY_EXISTS:  # the form's token was used for another order
                log.info("order token reused: %s", exc.detail)
                return self.error(request, 409, "This order form was already used",
                                  "Please open your cart again and place the order from there.")
            log.error("order failed: %s", exc, extra=logs.fields(call=exc.what, status=exc.code.name,
                                                                 detail=exc.detail))
            return self.error(request, 500, "Your order could not be completed",
                              "Your order could not be completed. Please try again in a moment; "
                              "submitting the same form again never charges your card twice.")
        try:
            total = money.add(money.zero(result.shipping_cost.currency_code or cur), result.shipping_cost)
            for oi in result.items:
                total = money.add(total, money.multiply(oi.cost, oi.item.quantity))
        except MoneyError as exc:
            log.error("order prices do not add up: %s", exc)
            return self.error(request, 500, "Something went wrong", "The order's prices do not add up.")
        names = await be.all(self._recommended(be.recommendations_for(visit.session_id, [])),
                             *(be.get_product_optional(oi.item.product_id) for oi in result.items))
        recommended, products = names[0], names[1:]
        lines = [{"item": oi.item, "cost": money.multiply(oi.cost, oi.item.quantity),
                  "name": p.name if p is not None else oi.item.product_id}
                 for oi, p in zip(result.items, products, strict=True)]
        return self.render(request, "order", show_currency=False, user_currency=cur, order=result,
                           lines=lines, total=total, recommendations=recommended)

    async def set_currency(self, request: Request) -> Response:
        form = await _form(request)
        try:
            code = validation.set_currency(form)
        except validation.ValidationFailed as exc:
            return self.invalid(request, exc)
        response = RedirectResponse(self._back(request), status_code=302)
        response.raw_headers.append((b"set-cookie", cookie_header(CURRENCY_COOKIE, code, self.base or "/",
                                                                  secure=request.scope["boutique.visit"].secure)))
        return response

    def _back(self, request: Request) -> str:
        """Where /setCurrency returns to: the Referer when it is a page of this shop.
        Better than the original, which redirects to any Referer (an open redirect)."""
        referer = request.headers.get("referer", "")
        if referer:
            parts = urlsplit(referer)
            host = request.headers.get("host", "")
            same_site = not parts.netloc or parts.netloc == host
            if same_site and parts.path.startswith(self.base or "/") and not parts.path.startswith("//"):
                return parts.path + (f"?{parts.query}" if parts.query else "")
        return f"{self.base}/"

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(f"{self.base}/", status_code=302)
        expired = formatdate(time.time() - 365 * 86400, usegmt=True)
        for name, value in request.scope["boutique.visit"].cookies.items():
            secure = "; Secure" if request.scope["boutique.visit"].secure else ""
            response.raw_headers.append((b"set-cookie", (
                f"{name}={value}; Path={self.base or '/'}; Expires={expired}; Max-Age=0{secure}").encode("latin-1")))
        return response

    async def product_meta(self, request: Request) -> Response:
        product_id = request.path_params["id"]
        if len(product_id) > MAX_PRODUCT_ID or protect.has_control(product_id):
            return Response(b"", status_code=404, media_type="text/plain; charset=utf-8")
        try:
            p = await self.be.get_product(product_id)
        except BackendError as exc:
            # The original answers 200 with an empty body on any error; an unknown id is a 404 here,
            # a catalog that cannot answer a 503.
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                log.error("backend call failed: %s", exc, extra=logs.fields(call=exc.what, status=exc.code.name,
                                                                            detail=exc.detail))
            return Response(b"", status_code=404 if exc.code is grpc.StatusCode.NOT_FOUND else 503,
                            media_type="text/plain; charset=utf-8")
        return Response(product_json(p), media_type="text/plain; charset=utf-8")

    def invalid(self, request: Request, exc: validation.ValidationFailed) -> Response:
        return self.error(request, 422, "Please check the form",
                          "Some of the details you entered are not valid:", errors=exc.errors)

    async def healthz(self, request: Request) -> Response:
        if self.shared.draining:
            return PlainTextResponse("draining", status_code=503)
        return PlainTextResponse("ok")

    async def robots(self, request: Request) -> Response:
        return PlainTextResponse("User-agent: *\nDisallow: /")


def product_json(p: pb.Product) -> bytes:
    """Go's json.Marshal of the generated Product struct: snake_case, empty fields omitted."""
    import json

    out: dict[str, Any] = {}
    for key in ("id", "name", "description", "picture"):
        if getattr(p, key):
            out[key] = getattr(p, key)
    if p.HasField("price_usd"):
        m = p.price_usd
        price: dict[str, Any] = {}
        if m.currency_code:
            price["currency_code"] = m.currency_code
        if m.units:
            price["units"] = m.units
        if m.nanos:
            price["nanos"] = m.nanos
        out["price_usd"] = price
    if p.categories:
        out["categories"] = list(p.categories)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


async def _ready(value: Any) -> Any:
    return value


class _Once:
    """A call made once and awaited by several chains of the same page."""

    def __init__(self, factory: Callable[[], Awaitable[Any]]) -> None:
        self.factory = factory
        self.task: asyncio.Future[Any] | None = None

    async def get(self) -> Any:
        if self.task is None:
            self.task = asyncio.ensure_future(self.factory())
        return await asyncio.shield(self.task)


def _count(items: list[pb.CartItem] | None) -> int | None:
    return None if items is None else sum(i.quantity for i in items)


def card_refusal(detail: str) -> str:
    """The payment service's refusal text inside a checkout error ("" when it is not one)."""
    marker = "could not charge the card: rpc error: code = Code(400) desc = "
    _, found, reason = detail.partition(marker)
    return reason.strip() if found else ""


async def _form(request: Request) -> dict[str, str]:
    """The form's text fields; a malformed or oversized form is a 400/413 ClientError, a field
    with control characters a 422 naming the field."""
    try:
        form = await request.form(max_files=0, max_fields=protect.MAX_FORM_FIELDS,
                                  max_part_size=protect.MAX_BODY_BYTES)
    except HTTPException as exc:  # Starlette's 400 for a malformed multipart body or too many parts
        raise protect.ClientError(exc.status_code, f"the form could not be read: {exc.detail}") from None
    out = {k: v for k, v in form.items() if isinstance(v, str)}
    bad = {k[:40]: "must not contain control characters" for k, v in out.items()
           if protect.has_control(k) or protect.has_control(v)}
    if bad:
        raise validation.ValidationFailed(bad)
    return out


# --- application -------------------------------------------------------------------------------
def create_app(cfg: FrontendConfig, catalog: Catalog, env: dict[str, str] | None = None) -> tuple[Any, Shared]:
    """The ASGI app (ShopMiddleware around Starlette) and its shared state."""
    env_map = dict(os.environ if env is None else env)
    shared = Shared(cfg=cfg, catalog=catalog, body_timeout=protect.timeouts(env_map)[1])
    pages = Pages(shared)
    base = cfg.base_url
    tracer = tracing.from_env("frontend", env_map)  # None unless tracing is on

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        clients = FrontendClients(catalog, env_map, cfg.service.tls, tracer.client_interceptors() if tracer else ())
        shared.backend = Backend(clients, concurrent=cfg.concurrent, ad_timeout=cfg.ad_timeout,
                                 recommendation_timeout=cfg.recommendation_timeout)
        for callee in cfg.addresses:  # start connecting now, so the first page does not pay for it
            clients.channel(callee).get_state(try_to_connect=True)
        try:
            yield
        finally:
            shared.backend = None
            await clients.close()
            if tracer:
                await tracer.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("404 page not found\n", status_code=404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        headers = getattr(exc, "headers", None) or {}
        return Response(b"", status_code=405, headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return await not_found(request, exc)
        if exc.status_code == 405:
            return await not_allowed(request, exc)
        return PlainTextResponse(exc.detail, status_code=exc.status_code)

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """An unexpected exception becomes the friendly 500 page (logged once, no stack trace shown)."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except protect.ClientError as exc:
                log.info("refused a request: %s", exc.message, extra=logs.fields(status=exc.status))
                response = pages.error(request, exc.status, HTTPStatus(exc.status).phrase, exc.message)
                response.headers["connection"] = "close"  # the rest of the body is not worth waiting for
                return response
            except validation.ValidationFailed as exc:
                return pages.invalid(request, exc)
            except ClientDisconnect:
                log.info("client disconnected before sending the whole request on %s", request.url.path)
                return Response(b"", status_code=400)
            except Exception:
                log.exception("unhandled error on %s", request.url.path)
                return pages.error(request, 500, "Something went wrong",
                                   "The shop hit an unexpected problem. Please try again.")

        return endpoint

    routes = [
        Route(f"{base}/", guarded(pages.home), methods=["GET"]),
        Route(f"{base}/product/{{id}}", guarded(pages.product), methods=["GET"]),
        Route(f"{base}/cart", guarded(pages.view_cart), methods=["GET"]),
        Route(f"{base}/cart", guarded(pages.add_to_cart), methods=["POST"]),
        Route(f"{base}/cart/empty", guarded(pages.empty_cart), methods=["POST"]),
        Route(f"{base}/cart/checkout", guarded(pages.checkout), methods=["POST"]),
        Route(f"{base}/setCurrency", guarded(pages.set_currency), methods=["POST"]),
        Route(f"{base}/logout", guarded(pages.logout), methods=["GET"]),
        Route(f"{base}/product-meta/{{id}}", guarded(pages.product_meta), methods=["GET"]),
        Route(f"{base}/_healthz", guarded(pages.healthz), methods=ALL_METHODS),
        Route(f"{base}/robots.txt", guarded(pages.robots), methods=ALL_METHODS),
        Mount(f"{base}/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    return (tracer.asgi(ShopMiddleware(app, shared)) if tracer else ShopMiddleware(app, shared)), shared
