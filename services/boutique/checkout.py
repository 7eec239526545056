"""checkoutservice: PlaceOrder orchestrates cart, catalog, currency, shipping, payment and
e-mail (contract section 2.7).

Order of calls (as the original): GetCart; per cart line GetProduct then Convert; GetQuote;
Convert(shipping); total; Charge; ShipOrder; EmptyCart (error logged and ignored);
SendOrderConfirmation (error only logged). Payment is called only after every earlier step
succeeded, and nothing after a failed Charge is called.

One deliberate change in *scheduling*, not in result: the per-line GetProduct -> Convert chains
run concurrently (at most LINE_CONCURRENCY at a time) instead of one line after another. Each
line still does GetProduct before its own Convert, the lines come back in cart order, and when
several lines fail the error reported is the first failing line in cart order, exactly the
error the sequential original reports. So the response (items, costs, total, status and
message) is identical; only the latency of a many-line cart drops from 2N round trips to about
2. The one observable difference: after a line fails, other lines' lookups may already be in
flight (the original would not have started them); they are read-only calls and are cancelled.

Error mapping (status and message texts from the contract; `<rpc err>` is rendered like Go's
`rpc error: code = NotFound desc = ...`):
  GetCart              INTERNAL     cart failure: failed to get user cart during checkout: <rpc err>
  GetProduct           INTERNAL     failed to prepare order: failed to get product #"<id>"
  Convert (line)       INTERNAL     failed to prepare order: failed to convert price of "<id>" to <CUR>
  GetQuote             INTERNAL     shipping quote failure: failed to get shipping quote: <rpc err>
  Convert (shipping)   INTERNAL     failed to convert shipping cost to currency: failed to convert currency: <rpc err>
  Charge               INTERNAL     failed to charge card: could not charge the card: <rpc err>
  ShipOrder            UNAVAILABLE  shipping error: shipment failed: <rpc err>
A payment refusal (our paymentservice: INVALID_ARGUMENT; the original: status 400) is rendered
`code = Code(400)` as the original checkout prints it, so the text users see is the same.

Deliberate differences from the original:
  * Input is validated before any call: empty user_id, a user_currency that is not three
    capital letters, a missing address, an empty email or a missing credit_card are
    INVALID_ARGUMENT naming the field (the original panics on a nil address in shipping).
  * A cart line with quantity < 1 (the original cart stores those) is FAILED_PRECONDITION,
    before anything is priced or charged. The original multiplies by uint32(quantity): 0
    charges one unit, a negative quantity loops ~4 billion times.
  * cost x quantity is computed in closed form (money.multiply) with exactly MultiplySlow's
    result, so a large quantity cannot stall the service; an invalid Money or a currency
    mismatch from a callee is INTERNAL (the original panics).
  * An email that is not an address with a dotted domain is INVALID_ARGUMENT (the frontend's rule).
  * Idempotency (the wire contract is unchanged): PlaceOrder with the gRPC metadata
    `idempotency-key` (the frontend's checkout-form token) answers a repeat within
    IDEMPOTENCY_WINDOW with the order already placed, a concurrent repeat waits for the first,
    and the key goes on to payment's Charge, which never charges one key twice. After a
    checkout crash between Charge and its reply, the retried form reaches payment with the
    same key and gets the first transaction back: the order completes, charged once. After a
    crash later on (the cart already emptied), a keyed retry finds an empty cart and is
    FAILED_PRECONDITION "cart: the cart is empty; ..." instead of a second (empty) order.
  * Every callee call carries the remaining deadline of the incoming PlaceOrder (and the
    callee's catalog timeout, whichever is shorter); the original propagates none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid

import grpc

from boutique import money
from boutique.frontend.validation import valid_email
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime import logs
from boutique.runtime.server import ServiceContext, ServiceDefinition

LINE_CONCURRENCY = 16
_CURRENCY = re.compile(r"^[A-Z]{3}$")
IDEMPOTENCY_METADATA = "idempotency-key"  # from the frontend's checkout form; passed on to payment
IDEMPOTENCY_WINDOW = 600.0  # seconds a placed order is answered again for its key
MAX_KEY = 200
MAX_ORDERS_KEPT = 10_000

# grpc-go's codes.Code.String(), used to render `rpc error: code = X desc = Y` like the original.
GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def rpc_error(exc: grpc.aio.AioRpcError, code_name: str | None = None) -> str:
    """Go's rendering of a gRPC error: `rpc error: code = NotFound desc = ...`."""
    name = code_name or GO_CODE_NAMES.get(exc.code(), str(exc.code()))
    return f"rpc error: code = {name} desc = {exc.details() or ''}"


def go_quote(text: str) -> str:
    """Go's %q for ordinary strings (double quotes, backslash escapes)."""
    return json.dumps(text, ensure_ascii=False)


class StepFailed(Exception):
    """A step of PlaceOrder failed: the status and message to return."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    """The incoming call's remaining time, for the outgoing call's deadline."""
    left = context.time_remaining()
    return None if left is None else max(left, 0.0)


class PlacedOrders:
    """Orders by idempotency key: placed ones for IDEMPOTENCY_WINDOW seconds (answered again
    as they were), and the one in flight (a concurrent repeat waits for it)."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[float, pb.OrderResult]] = {}
        self.running: dict[str, asyncio.Future[pb.OrderResult]] = {}

    def placed(self, key: str) -> pb.OrderResult | None:
        found = self.done.get(key)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self.done[key]
            return None
        return found[1]

    def remember(self, key: str, order: pb.OrderResult) -> None:
        now = time.monotonic()
        if len(self.done) >= MAX_ORDERS_KEPT:
            self.done = {k: v for k, v in self.done.items() if v[0] >= now}
            while len(self.done) >= MAX_ORDERS_KEPT:
                del self.done[next(iter(self.done))]
        self.done[key] = (now + IDEMPOTENCY_WINDOW, order)


def _key(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_METADATA:
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


class CheckoutService(rpc.CheckoutServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.log = ctx.log
        self.orders = PlacedOrders()
        self.catalog = ctx.stub("productcatalogservice", rpc.ProductCatalogServiceStub)
        self.shipping = ctx.stub("shippingservice", rpc.ShippingServiceStub)
        self.payment = ctx.stub("paymentservice", rpc.PaymentServiceStub)
        self.email = ctx.stub("emailservice", rpc.EmailServiceStub)
        self.currency = ctx.stub("currencyservice", rpc.CurrencyServiceStub)
        self.cart = ctx.stub("cartservice", rpc.CartServiceStub)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext):
        problem = self._validate(request)
        key = _key(context)
        if not problem and len(key) > MAX_KEY:
            problem = f"{IDEMPOTENCY_METADATA} (metadata): longer than {MAX_KEY} characters"
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if key:
            placed = self.orders.placed(key)
            if placed is None and key in self.orders.running:  # the same form, submitted again meanwhile
                with contextlib.suppress(StepFailed):
                    placed = await asyncio.shield(self.orders.running[key])
            if placed is not None:
                self.log.info("order repeated: answered with the order already placed",
                              extra=logs.fields(order_id=placed.order_id, idempotency_key=key))
                return pb.PlaceOrderResponse(order=placed)
        running: asyncio.Future[pb.OrderResult] = asyncio.get_running_loop().create_future()
        if key:
            self.orders.running[key] = running
        try:
            order = await self._place_order(request, context, key)
        except StepFailed as exc:
            running.set_exception(exc)
            running.exception()  # retrieved: a failed attempt with no waiter logs nothing
            self.log.warning("order failed: %s", exc.message,
                             extra=logs.fields(user_id=request.user_id, status=exc.code.name))
            await context.abort(exc.code, exc.message)
        except BaseException as exc:
            running.set_exception(StepFailed(grpc.StatusCode.ABORTED, f"the first attempt ended: {exc!s}"[:200]))
            running.exception()
            raise
        finally:
            if key and self.orders.running.get(key) is running:
                del self.orders.running[key]
        running.set_result(order)
        if key:
            self.orders.remember(key, order)
        return pb.PlaceOrderResponse(order=order)

    @staticmethod
    def _validate(request: pb.PlaceOrderRequest) -> str:
        if not request.user_id:
            return "user_id: must not be empty"
        if not _CURRENCY.match(request.user_currency):
            return f"user_currency: must be a three-letter ISO 4217 code such as USD, got {request.user_currency!r}"
        if not request.HasField("address"):
            return "address: is missing"
        if not request.email:
            return "email: must not be empty"
        if not valid_email(request.email):
            return f"email: {request.email[:64]!r} is not an e-mail address with a dotted domain"
        if not request.HasField("credit_card"):
            return "credit_card: is missing"
        return ""

    async def _place_order(self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext,
                           key: str = "") -> pb.OrderResult:
        order_id = str(uuid.uuid1())
        currency = request.user_currency

        try:
            cart = await self.cart.GetCart(pb.GetCartRequest(user_id=request.user_id), timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:
            raise StepFailed(grpc.StatusCode.INTERNAL,
                             f"cart failure: failed to get user cart during checkout: {rpc_error(exc)}") from None
        if key and not cart.items:
            # A keyed order of an empty cart: the form's earlier attempt (whose reply was lost, say to
            # a crash) has already placed the order and emptied the cart. Nothing to charge again.
            raise StepFailed(grpc.StatusCode.FAILED_PRECONDITION,
                             "cart: the cart is empty; an order placed with this form may already have emptied it")
        for line in cart.items:
            if line.quantity < 1:
                raise StepFailed(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"cart: item {go_quote(line.product_id)} has quantity {line.quantity}; "
                                 "every cart line needs a quantity of at least 1")

        items = await self._prepare_items(list(cart.items), currency, context)

        try:
            quote = await self.shipping.GetQuote(pb.GetQuoteRequest(address=request.address, items=cart.items),
                                                 timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:
            raise StepFailed(grpc.StatusCode.INTERNAL,
                             f"shipping quote failure: failed to get shipping quote: {rpc_error(exc)}") from None
        try:
            shipping_cost = await self.currency.Convert(
                pb.CurrencyConversionRequest(**{"from": quote.cost_usd, "to_code": currency}),
                timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:
            raise StepFailed(grpc.StatusCode.INTERNAL,
                             "failed to convert shipping cost to currency: failed to convert currency: "
                             f"{rpc_error(exc)}") from None

        try:
            total = money.add(money.zero(currency), shipping_cost)
            for item in items:
                total = money.add(total, money.multiply(item.cost, item.item.quantity))
        except money.MoneyError as exc:
            raise StepFailed(grpc.StatusCode.INTERNAL, f"failed to calculate the order total: {exc}") from None

        try:
            charged = await self.payment.Charge(pb.ChargeRequest(amount=total, credit_card=request.credit_card),
                                                timeout=_remaining(context),
                                                metadata=((IDEMPOTENCY_METADATA, key),) if key else None)
        except grpc.aio.AioRpcError as exc:
            # The original payment refuses cards with status 400, which the Go checkout prints
            # as Code(400); ours uses INVALID_ARGUMENT: keep the text users see identical.
            code_name = "Code(400)" if exc.code() is grpc.StatusCode.INVALID_ARGUMENT else None
            raise StepFailed(grpc.StatusCode.INTERNAL,
                             f"failed to charge card: could not charge the card: {rpc_error(exc, code_name)}") from None
        self.log.info("payment went through", extra=logs.fields(
            order_id=order_id, transaction_id=charged.transaction_id, idempotency_key=key or None,
            amount=f"{total.units}.{abs(total.nanos):09d} {total.currency_code}"))

        try:
            shipped = await self.shipping.ShipOrder(pb.ShipOrderRequest(address=request.address, items=cart.items),
                                                    timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:
            raise StepFailed(grpc.StatusCode.UNAVAILABLE,
                             f"shipping error: shipment failed: {rpc_error(exc)}") from None

        try:
            await self.cart.EmptyCart(pb.EmptyCartRequest(user_id=request.user_id), timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:  # as the original: ignored, the order stands
            self.log.warning("failed to empty the cart of %s: %s", request.user_id, rpc_error(exc),
                             extra=logs.fields(order_id=order_id))

        order = pb.OrderResult(order_id=order_id, shipping_tracking_id=shipped.tracking_id,
                               shipping_cost=shipping_cost, shipping_address=request.address, items=items)
        try:
            await self.email.SendOrderConfirmation(pb.SendOrderConfirmationRequest(email=request.email, order=order),
                                                   timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:  # as the original: only logged
            self.log.warning("failed to send the order confirmation to %s: %s", request.email, rpc_error(exc),
                             extra=logs.fields(order_id=order_id))
        self.log.info("order placed", extra=logs.fields(order_id=order_id, tracking_id=shipped.tracking_id,
                                                        lines=len(items)))
        return order

    async def _prepare_items(self, lines: list[pb.CartItem], currency: str,
                             context: grpc.aio.ServicerContext) -> list[pb.OrderItem]:
        """OrderItems in cart order; on failure, the first failing line in cart order wins."""
        limit = asyncio.Semaphore(LINE_CONCURRENCY)

        async def price(line: pb.CartItem) -> pb.OrderItem:
            async with limit:
                return await self._price_line(line, currency, context)

        tasks = [asyncio.ensure_future(price(line)) for line in lines]
        try:
            return [await task for task in tasks]
        finally:
            for task in tasks:
                task.cancel()  # no-op for finished ones
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _price_line(self, line: pb.CartItem, currency: str,
                          context: grpc.aio.ServicerContext) -> pb.OrderItem:
        pid = line.product_id
        try:
            product = await self.catalog.GetProduct(pb.GetProductRequest(id=pid), timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:
            self.log.warning("GetProduct(%s) failed: %s", pid, rpc_error(exc))
            raise StepFailed(grpc.StatusCode.INTERNAL,
                             f"failed to prepare order: failed to get product #{go_quote(pid)}") from None
        try:
            cost = await self.currency.Convert(
                pb.CurrencyConversionRequest(**{"from": product.price_usd, "to_code": currency}),
                timeout=_remaining(context))
        except grpc.aio.AioRpcError as exc:
            self.log.warning("Convert(price of %s to %s) failed: %s", pid, currency, rpc_error(exc))
            raise StepFailed(
                grpc.StatusCode.INTERNAL,
                f"failed to prepare order: failed to convert price of {go_quote(pid)} to {currency}") from None
        return pb.OrderItem(item=line, cost=cost)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_CheckoutServiceServicer_to_server,
                               create=CheckoutService)
