"""The benchmark's floor: a minimal grpc.aio server with none of our runtime.

    python -m boutique.bench.baseline [--port 0]       (prints `listening on 127.0.0.1:PORT`)

It answers CurrencyService/Convert with one constant Money and ProductCatalogService/GetProduct
with one constant Product: the generated servicers and (de)serialisers, no interceptor, no
metrics, no logs, no deadlines, no validation, no health or reflection. `make bench-services`
starts one of these beside the shop and drives it with the same client and settings, so
"ours / baseline" is what our runtime and handlers cost on top of grpc.aio and protobuf.
SIGTERM or SIGINT stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from importlib import resources

import grpc
from google.protobuf import json_format

from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

HOST = "127.0.0.1"
CONSTANT_MONEY = pb.Money(currency_code="EUR", units=17, nanos=563634284)


def _first_product() -> pb.Product:
    """The catalog's first product (data/products.json), so GetProduct serialises what ours does."""
    text = resources.files("boutique.data").joinpath("products.json").read_text(encoding="utf-8")
    return json_format.Parse(text, pb.ListProductsResponse()).products[0]


CONSTANT_PRODUCT = _first_product()
# the same server options as boutique.runtime.server, so only the runtime differs
SERVER_OPTIONS = [("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1000)]


class ConstantCurrency(rpc.CurrencyServiceServicer):
    async def Convert(self, request: pb.CurrencyConversionRequest, context: grpc.aio.ServicerContext) -> pb.Money:
        return CONSTANT_MONEY


class ConstantCatalog(rpc.ProductCatalogServiceServicer):
    async def GetProduct(self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext) -> pb.Product:
        return CONSTANT_PRODUCT


async def start(port: int = 0, host: str = HOST) -> tuple[grpc.aio.Server, int]:
    """A started baseline server and its bound port."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    rpc.add_CurrencyServiceServicer_to_server(ConstantCurrency(), server)
    rpc.add_ProductCatalogServiceServicer_to_server(ConstantCatalog(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def _serve(port: int) -> None:
    server, bound = await start(port)
    print(f"listening on {HOST}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boutique.bench.baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free one)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be 0..65535")
    try:
        asyncio.run(_serve(args.port))
    except RuntimeError as exc:  # grpc: the port is taken
        print(f"baseline: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
