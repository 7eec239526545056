"""`Shop(mtls=True)` / `boutique run --mtls`: every gRPC hop uses mutual TLS with throw-away certificates."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from runtime_samples import SAMPLES, place_order

from boutique import service_catalog as catalog_mod
from boutique.certs import CertificateAuthority
from boutique.dev.shop import Shop, start_on_free_offset
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

pytestmark = [pytest.mark.slow]
CAT = catalog_mod.default()
GRPC_SERVICES = [s.name for s in CAT.grpc_services() if s.deploy]


@pytest.fixture(scope="module")
def mtls_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    shop = start_on_free_offset(mtls=True, redis=False, log_dir=tmp_path_factory.mktemp("mtls-logs"))
    yield shop
    shop.stop()


def _convert(channel: grpc.Channel) -> pb.Money:
    req = pb.CurrencyConversionRequest(**{"from": pb.Money(currency_code="EUR", units=1)}, to_code="USD")
    return rpc.CurrencyServiceStub(channel).Convert(req, timeout=5)


def test_every_service_gets_its_certificate(mtls_shop: Shop) -> None:
    assert mtls_shop.tls_dir is not None
    for name in mtls_shop.names:
        env = mtls_shop.env_for(name)
        assert env["TLS_CERT_FILE"] == str(mtls_shop.tls_dir / f"{name}.pem")
        assert env["TLS_KEY_FILE"] == str(mtls_shop.tls_dir / f"{name}.key")
        assert env["TLS_CA_FILE"] == str(mtls_shop.tls_dir / "ca.pem")
    assert stat.S_IMODE(mtls_shop.tls_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_client_with_our_certificate_gets_through(mtls_shop: Shop, name: str) -> None:
    # each sample checks the answer's contract values; place_order also checks the order and the emptied cart
    with mtls_shop.channel(name) as ch:
        if name == "checkoutservice":
            # checkout calls cart, catalog, currency, shipping, payment, email: all of them over mTLS
            with mtls_shop.channel("cartservice") as cart_ch:
                assert len(place_order(ch, cart_ch, lines=2).items) == 2
        else:
            assert SAMPLES[CAT.get(name).grpc_service](ch) in {m.name for m in CAT.get(name).methods}


def test_plaintext_client_is_refused(mtls_shop: Shop) -> None:
    with grpc.insecure_channel(mtls_shop.address("currencyservice")) as ch, pytest.raises(grpc.RpcError) as err:
        _convert(ch)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_client_without_certificate_is_refused(mtls_shop: Shop) -> None:
    assert mtls_shop.tls_dir is not None
    creds = grpc.ssl_channel_credentials(root_certificates=(mtls_shop.tls_dir / "ca.pem").read_bytes())
    with grpc.secure_channel(mtls_shop.address("currencyservice"), creds) as ch, \
            pytest.raises(grpc.RpcError) as err:
        _convert(ch)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_client_with_certificate_from_another_ca_is_refused(mtls_shop: Shop) -> None:
    assert mtls_shop.tls_dir is not None
    stranger = CertificateAuthority("some other CA").issue_client("intruder")
    creds = grpc.ssl_channel_credentials(root_certificates=(mtls_shop.tls_dir / "ca.pem").read_bytes(),
                                         private_key=stranger.key_pem, certificate_chain=stranger.cert_pem)
    with grpc.secure_channel(mtls_shop.address("currencyservice"), creds) as ch, \
            pytest.raises(grpc.RpcError) as err:
        _convert(ch)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_server_certificate_from_another_ca_is_not_trusted(mtls_shop: Shop) -> None:
    """The client side checks too: a client trusting only a foreign CA cannot talk to our services."""
    assert mtls_shop.tls_dir is not None
    other = CertificateAuthority("some other CA")
    mine = other.issue_client()
    creds = grpc.ssl_channel_credentials(root_certificates=other.cert_pem, private_key=mine.key_pem,
                                         certificate_chain=mine.cert_pem)
    with grpc.secure_channel(mtls_shop.address("currencyservice"), creds) as ch, \
            pytest.raises(grpc.RpcError) as err:
        _convert(ch)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_certs_command_writes_ca_and_service_certificates(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    result = subprocess.run([sys.executable, "-m", "boutique.cli", "certs", "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    deployable = [s.name for s in CAT.services.values() if s.deploy]
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    for name in [*deployable, "client"]:
        cert = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
        cert.verify_directly_issued_by(ca)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        if name != "client":
            assert ExtendedKeyUsageOID.SERVER_AUTH in eku
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.DNSName) == [name, "localhost"]
            assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_certs_command_rejects_an_unknown_service(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "boutique.cli", "certs", "--out", str(tmp_path / "x"),
                             "--service", "nosuchservice"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown service 'nosuchservice'" in result.stderr and "Traceback" not in result.stderr
