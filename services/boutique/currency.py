"""currencyservice: supported currencies and conversion through EUR.

Convert reproduces the original's IEEE-754 double arithmetic bit for bit
(contract section 2.3): JS remainder (math.fmod), floor, and JS Math.round
(floor(x + 0.5)), not Python's banker's round.

Deliberate difference from the original: an unknown currency code or a missing
`from` is INVALID_ARGUMENT naming the problem (the original returns 0 or UNKNOWN).
"""

from __future__ import annotations

import json
import math
from importlib import resources

import grpc

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.server import ServiceDefinition


def load_rates() -> dict[str, float]:
    """Units of each currency per 1 EUR, in file order (the ECB snapshot)."""
    raw = json.loads(resources.files("boutique.data").joinpath("currency_rates.json").read_text())
    return {code: float(value) for code, value in raw.items()}


def _carry(units: float, nanos: float) -> tuple[float, float]:
    nanos = nanos + math.fmod(units, 1) * 1e9
    units = math.floor(units) + math.floor(nanos / 1e9)
    return units, math.fmod(nanos, 1e9)


def convert(rates: dict[str, float], units: int, nanos: int, from_code: str, to_code: str) -> tuple[int, int]:
    """(units, nanos) of `to_code` for an amount in `from_code`; both codes must be in `rates`."""
    r_from, r_to = rates[from_code], rates[to_code]
    eu, en = _carry(float(units) / r_from, nanos / r_from)
    en = math.floor(en + 0.5)
    ru, rn = _carry(eu * r_to, en * r_to)
    return math.floor(ru), math.floor(rn)


class CurrencyService(rpc.CurrencyServiceServicer):
    def __init__(self) -> None:
        self.rates = load_rates()
        self._supported = pb.GetSupportedCurrenciesResponse(currency_codes=list(self.rates))

    async def GetSupportedCurrencies(self, request: pb.Empty, context: grpc.aio.ServicerContext):
        return self._supported

    async def Convert(self, request: pb.CurrencyConversionRequest, context: grpc.aio.ServicerContext):
        if not request.HasField("from"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "from: the amount to convert is missing")
        source = getattr(request, "from")
        for field, code in (("from.currency_code", source.currency_code), ("to_code", request.to_code)):
            if code not in self.rates:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{field}: unsupported currency code {code!r}")
        units, nanos = convert(self.rates, source.units, source.nanos, source.currency_code, request.to_code)
        return pb.Money(currency_code=request.to_code, units=units, nanos=nanos)


DEFINITION = ServiceDefinition(
    name="currencyservice",
    grpc_service="hipstershop.CurrencyService",
    default_port=7000,
    add_servicer=rpc.add_CurrencyServiceServicer_to_server,
    create=lambda ctx: CurrencyService(),
)
