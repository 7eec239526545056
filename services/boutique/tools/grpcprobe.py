"""Probe gRPC health endpoints in plaintext, TLS and mutual TLS (playbooks/verify-mtls.yml).

  python -m boutique.tools.grpcprobe --target NAME=HOST:PORT [--target ...]
  python -m boutique.tools.grpcprobe --local-service NAME [...] [--port-offset N]   (the local runner's ports)
        [--ca ca.pem] [--cert client.pem --key client.key] [--modes plaintext,tls,mtls]
        [--server-name NAME] [--timeout 3]

For every target and mode it runs grpc.health.v1.Health/Check and prints one JSON
document: {"results": [{"target", "address", "mode", "ok", "status", "code", "error"}]}.
Modes:
  plaintext  h2c without TLS               (a mesh in STRICT mode must refuse it)
  tls        TLS, server verified, NO client certificate (mTLS must refuse it)
  mtls       TLS with the client certificate (must get SERVING)
  foreign    TLS with a client certificate from a CA made up on the spot (mTLS must refuse it)
A refused probe is a result, not an error: the exit status is 0 whenever every probe
ran, 2 on bad arguments (missing files, malformed targets).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

MODES = ("plaintext", "tls", "mtls", "foreign")


class ProbeError(Exception):
    """Bad arguments."""


@dataclass
class Result:
    target: str
    address: str
    mode: str
    ok: bool
    status: str
    code: str
    error: str


def parse_target(text: str) -> tuple[str, str]:
    name, sep, addr = text.partition("=")
    if not sep:
        name, addr = text, text
    host, colon, port = addr.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ProbeError(f"--target {text!r} must be NAME=HOST:PORT")
    return name, addr


def local_targets(names: Sequence[str], host: str, offset: int) -> list[tuple[str, str]]:
    """(name, host:port) of catalog services as the local runner places them."""
    from boutique import service_catalog as catalog_mod

    if offset < 0:
        raise ProbeError(f"--port-offset {offset} must not be negative")
    cat = catalog_mod.default()
    out = []
    for name in names:
        try:
            svc = cat.get(name)
        except catalog_mod.CatalogError as exc:
            raise ProbeError(str(exc)) from None
        if not svc.is_grpc:
            raise ProbeError(f"{name} is not a gRPC service")
        out.append((name, f"{host}:{svc.local_port + offset}"))
    return out


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(f"{what} {path}: {exc.strerror}") from None


def foreign_identity() -> tuple[bytes, bytes]:
    """A client certificate and key from a throw-away CA nobody trusts (the `foreign` mode)."""
    from boutique.certs import CertificateAuthority

    issued = CertificateAuthority("grpcprobe foreign CA").issue_client("grpcprobe-foreign")
    return issued.cert_pem, issued.key_pem


def channel(address: str, mode: str, ca: bytes | None, cert: bytes | None, key: bytes | None,
            server_name: str | None) -> grpc.Channel:
    if mode == "plaintext":
        return grpc.insecure_channel(address)
    if mode == "foreign":
        cert, key = foreign_identity()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=key if mode in ("mtls", "foreign") else None,
        certificate_chain=cert if mode in ("mtls", "foreign") else None,
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, creds, options=options)


def probe(name: str, address: str, mode: str, ca: bytes | None, cert: bytes | None, key: bytes | None,
          server_name: str | None, timeout: float, service: str = "") -> Result:
    with channel(address, mode, ca, cert, key, server_name) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return Result(name, address, mode, False, "", code.name, details or "")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    return Result(name, address, mode, status == "SERVING", status, "OK", "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boutique.tools.grpcprobe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", default=[], help="NAME=HOST:PORT (repeatable)")
    parser.add_argument("--local-service", action="append", default=[],
                        help="catalog name: probe the local runner's port for it (repeatable)")
    parser.add_argument("--port-offset", type=int, default=0, help="the runner's --port-offset (with --local-service)")
    parser.add_argument("--host", default="127.0.0.1", help="host of the local runner (with --local-service)")
    parser.add_argument("--modes", default="plaintext,tls,mtls", help="comma list of plaintext, tls, mtls, foreign")
    parser.add_argument("--ca", help="CA bundle that signed the servers' certificates")
    parser.add_argument("--cert", help="client certificate (mtls mode)")
    parser.add_argument("--key", help="client private key (mtls mode)")
    parser.add_argument("--server-name", help="expected name in the server certificate (default: the host)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per probe")
    args = parser.parse_args(argv)
    try:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ProbeError(f"--modes: {', '.join(bad) or '(empty)'} not one of {', '.join(MODES)}")
        if any(m != "plaintext" for m in modes) and not args.ca:
            raise ProbeError("--ca is required for the tls and mtls modes")
        if "mtls" in modes and not (args.cert and args.key):
            raise ProbeError("--cert and --key are required for the mtls mode")
        targets = [parse_target(t) for t in args.target]
        targets += local_targets(args.local_service, args.host, args.port_offset)
        if not targets:
            raise ProbeError("give at least one --target or --local-service")
        ca, cert, key = _read(args.ca, "--ca"), _read(args.cert, "--cert"), _read(args.key, "--key")
    except ProbeError as exc:
        print(f"grpcprobe: {exc}", file=sys.stderr)
        return 2
    results = [probe(name, addr, mode, ca, cert, key, args.server_name, args.timeout)
               for name, addr in targets for mode in modes]
    print(json.dumps({"results": [asdict(r) for r in results]}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
