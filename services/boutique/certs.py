"""Throw-away certificates for running the shop with mutual TLS on one machine.

`generate(out_dir, names)` writes a fresh CA and, per service, a certificate
whose SANs are DNS:<name>, DNS:localhost and IP:127.0.0.1 with both the
serverAuth and clientAuth extended key usages (every service is a server to its
callers and a client of its callees), plus `client.pem`/`client.key` for tools
and tests. Keys are ECDSA P-256 (fast to make, supported by gRPC's BoringSSL).

Files in out_dir (mode 0700; keys 0600):
  ca.pem                       the CA certificate (TLS_CA_FILE)
  <name>.pem / <name>.key      per-service certificate and key
  client.pem / client.key      a client-only certificate for tools and tests
The CA key is kept in memory only: these certificates are for one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_NAME = "client"
VALIDITY = dt.timedelta(days=7)


def _name(common_name: str, organizations: Sequence[str] = ("Boutique Mesh (local run)",)) -> x509.Name:
    """Subject: one O per organization (Kubernetes reads them as groups), then the CN (the user)."""
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


class CertificateAuthority:
    """An in-memory CA that signs service and client certificates."""

    def __init__(self, common_name: str = "boutique local CA", validity: dt.timedelta = VALIDITY) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.validity = validity
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The CA's private key (for a CA that must outlive this process, e.g. the test node's)."""
        return _key_pem(self._key)

    def issue(self, common_name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = (),
              server: bool = True, organizations: Sequence[str] | None = None) -> Issued:
        """A leaf certificate: clientAuth always, serverAuth unless server=False.
        `organizations` replaces the subject's O (Kubernetes groups such as system:nodes)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name) if organizations is None else _name(common_name, organizations))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + self.validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_service(self, name: str) -> Issued:
        """Server + client certificate for a service reachable as <name>, localhost, 127.0.0.1."""
        return self.issue(name, dns=(name, "localhost"), ips=("127.0.0.1",))

    def issue_client(self, name: str = CLIENT_NAME) -> Issued:
        return self.issue(name, dns=(name,), server=False)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def write_issued(out_dir: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = out_dir / f"{name}.pem", out_dir / f"{name}.key"
    _write(cert, issued.cert_pem, 0o644)
    _write(key, issued.key_pem, 0o600)
    return cert, key


def generate(out_dir: str | os.PathLike[str], names: Sequence[str]) -> Path:
    """Write ca.pem, <name>.pem/.key for every name, client.pem/.key; returns out_dir."""
    out = Path(out_dir)
    if CLIENT_NAME in names or "ca" in names:
        raise ValueError(f"service names {CLIENT_NAME!r} and 'ca' are reserved for the certificate files")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    ca = CertificateAuthority()
    _write(out / "ca.pem", ca.cert_pem, 0o644)
    for name in names:
        write_issued(out, name, ca.issue_service(name))
    write_issued(out, CLIENT_NAME, ca.issue_client())
    return out


def _certs_command(args: argparse.Namespace) -> int:
    from boutique import service_catalog as catalog_mod

    cat = catalog_mod.default()
    names = args.service or [s.name for s in cat.services.values() if s.deploy]
    for name in names:
        cat.get(name)  # unknown names: CatalogError, printed by the CLI (exit 2)
    out = generate(args.out, names)
    print(f"wrote a throw-away CA and certificates for {len(names)} services + {CLIENT_NAME} to {out}")
    print(f"  TLS_CA_FILE={out / 'ca.pem'}  TLS_CERT_FILE={out}/<name>.pem  TLS_KEY_FILE={out}/<name>.key")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("certs", help="write a throw-away CA and per-service mTLS certificates")
    p.add_argument("--out", required=True, help="directory to write into (created, mode 0700)")
    p.add_argument("--service", action="append", metavar="NAME",
                   help="only this catalog service (repeatable; default: every deployable service)")
    p.set_defaults(func=_certs_command)
