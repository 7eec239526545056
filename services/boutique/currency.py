"""currencyservice: supported currencies and conversion through EUR.

Convert reproduces the original's IEEE-754 double arithmetic bit for bit
(contract section 2.3): JS remainder (math.fmod), floor, and JS Math.round
(floor(x + 0.5)), not Python's banker's round.

Deliberate differences from the original: an unknown currency code, a missing `from`,
an invalid Money (nanos outside +-999999999, units and nanos of different signs) and a
result that does not fit int64 are INVALID_ARGUMENT naming the field (the original
returns 0, garbage or UNKNOWN).
"""

from __future__ import annotations

import json
import math
from importlib import resources

import grpc

from boutique import money
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
                                    f"{field}: unsupported currency code {code[:16]!r}")
        if not -money.NANOS_MAX <= source.nanos <= money.NANOS_MAX:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"from.nanos: must be between -999999999 and 999999999, got {source.nanos}")
        if not money.is_valid(source):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "from: units and nanos must have the same sign, got "
                                f"units={source.units} nanos={source.nanos}")
        units, nanos = convert(self.rates, source.units, source.nanos, source.currency_code, request.to_code)
        if not money.INT64_MIN <= units <= money.INT64_MAX:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"from.units: {source.units} {source.currency_code} in {request.to_code} "
                                "does not fit a 64-bit amount")
        return pb.Money(currency_code=request.to_code, units=units, nanos=nanos)


# Name, port, gRPC service and callees: the catalog entry whose module this is.
DEFINITION = ServiceDefinition(module=__name__, add_servicer=rpc.add_CurrencyServiceServicer_to_server,
                               create=lambda ctx: CurrencyService())
