"""emailservice over real gRPC: rendering, validation, the log sender, and delivery to a
real local SMTP server (aiosmtpd) in plain, AUTH and STARTTLS modes (contract section 2.6)."""

from __future__ import annotations

import datetime
import email
import email.policy
import logging
import ssl

import grpc
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testkit import free_port

from boutique import email as email_svc
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc
from boutique.runtime.config import ConfigError

EVIL = '<script>alert("x")</script>'


def order(**overrides) -> pb.OrderResult:
    result = pb.OrderResult(
        order_id="3f1c2a4e-0000-11f0-9c1b-0242ac120002",
        shipping_tracking_id="QK-20123-101234567",
        shipping_cost=pb.Money(currency_code="EUR", units=7, nanos=952_233_525),
        shipping_address=pb.Address(street_address="1600 Amphitheatre Parkway", city="Mountain View",
                                    state="CA", country="United States", zip_code=94043),
        items=[
            pb.OrderItem(item=pb.CartItem(product_id="OLJCESPC7Z", quantity=2),
                         cost=pb.Money(currency_code="EUR", units=17, nanos=682_441_398)),
            pb.OrderItem(item=pb.CartItem(product_id="6E92ZMYYFZ", quantity=1),
                         cost=pb.Money(currency_code="EUR", units=7, nanos=952_233_525)),
        ],
    )
    for name, value in overrides.items():
        field = getattr(result, name)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        elif hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(result, name, value)
    return result


def request(to: str = "someone@example.com", **overrides) -> pb.SendOrderConfirmationRequest:
    return pb.SendOrderConfirmationRequest(email=to, order=order(**overrides))


# ----------------------------------------------------------------------------- rendering


def test_render_shows_the_order_properly():
    mail = email_svc.render(order())
    for text in (mail.text, mail.html):
        assert "3f1c2a4e-0000-11f0-9c1b-0242ac120002" in text
        assert "QK-20123-101234567" in text
        assert "1600 Amphitheatre Parkway" in text  # the real street address (the original's bug)
        assert "Mountain View, CA 94043" in text and "United States" in text
        assert "7.95 EUR" in text  # shipping: units.cents with the code
        assert "17.68 EUR" in text and "35.36 EUR" in text  # unit price and 2 x subtotal (exact)
        assert "51.26 EUR" in text  # 7.952233525 + 2 x 17.682441398 + 7.952233525 = 51.269...
    assert mail.subject == "Your Boutique Mesh order 3f1c2a4e-0000-11f0-9c1b-0242ac120002"


def test_render_escapes_html_in_fields():
    mail = email_svc.render(order(
        order_id=EVIL,
        shipping_address=pb.Address(street_address=f"1 {EVIL} Road", city="<b>Town</b>", country="X & Y"),
        items=[pb.OrderItem(item=pb.CartItem(product_id="<img src=x onerror=1>", quantity=1),
                            cost=pb.Money(currency_code="EUR", units=1))],
    ))
    assert "<script>" not in mail.html and "<img" not in mail.html and "<b>Town" not in mail.html
    assert "&lt;script&gt;" in mail.html and "&lt;b&gt;Town&lt;/b&gt;" in mail.html and "X &amp; Y" in mail.html
    assert "&lt;img src=x onerror=1&gt;" in mail.html
    assert f"1 {EVIL} Road" in mail.text  # plain text is not HTML: shown as typed


def test_render_mixed_currencies_has_no_total():
    mail = email_svc.render(order(shipping_cost=pb.Money(currency_code="USD", units=8, nanos=990_000_000)))
    assert "8.99 USD" in mail.text and "Total" not in mail.text


def test_render_empty_order():
    mail = email_svc.render(pb.OrderResult(order_id="o-1"))
    assert "No items." in mail.text and "(no address given)" in mail.text and "No items." in mail.html


@pytest.mark.parametrize(("nanos_total", "code", "text"), [
    (8_990_000_000, "USD", "8.99 USD"), (-3_130_500_002, "USD", "-3.13 USD"), (0, "", "0.00"),
    (5_000_000, "JPY", "0.00 JPY"), (2235_060_592_707, "JPY", "2235.06 JPY")])
def test_format_amount(nanos_total, code, text):
    assert email_svc.format_amount(nanos_total, code) == text


# ----------------------------------------------------------------------------- log sender over gRPC


@pytest.fixture(scope="module")
def log_stub():
    with BackgroundService(email_svc.DEFINITION) as svc, grpc.insecure_channel(svc.address) as channel:
        yield rpc.EmailServiceStub(channel)


def test_log_sender_logs_recipient_and_order_not_body(log_stub, caplog):
    caplog.set_level(logging.DEBUG, logger="emailservice")
    log_stub.SendOrderConfirmation(request("buyer@example.com"), timeout=5)
    mine = [r for r in caplog.records if r.name == "emailservice"]
    info = [r for r in mine if r.levelno == logging.INFO]
    debug = [r for r in mine if r.levelno == logging.DEBUG]
    assert len(info) == 1
    assert "buyer@example.com" in info[0].getMessage()
    assert "3f1c2a4e-0000-11f0-9c1b-0242ac120002" in info[0].getMessage()
    assert "1600 Amphitheatre Parkway" not in info[0].getMessage()  # the body stays out of INFO
    assert any("1600 Amphitheatre Parkway" in r.getMessage() for r in debug)


@pytest.mark.parametrize("bad", ["", "someone", "someone@", "@example.com", "a b@example.com",
                                 "x@example.com\r\nBcc: evil@example.com", "<x@example.com>", "x@-bad-.com"])
def test_invalid_email_is_rejected(log_stub, bad):
    with pytest.raises(grpc.RpcError) as err:
        log_stub.SendOrderConfirmation(request(bad), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("email:")


def test_missing_order_is_rejected(log_stub):
    with pytest.raises(grpc.RpcError) as err:
        log_stub.SendOrderConfirmation(pb.SendOrderConfirmationRequest(email="a@example.com"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("order:")


def test_plausible_addresses_are_accepted(log_stub):
    for good in ("someone@example.com", "first.last+tag@mail.example.co.uk", "ops@localhost"):
        assert log_stub.SendOrderConfirmation(request(good), timeout=5) == pb.Empty()


# ----------------------------------------------------------------------------- SMTP delivery


class Mailbox:
    """aiosmtpd handler: keeps every envelope; refuses recipients at refused.test."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.test"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"shop", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 on failure


@pytest.fixture
def smtp_server(request):
    """A real SMTP server on 127.0.0.1; param kwargs go to aiosmtpd's SMTP."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **getattr(request, "param", {}))
    controller.start()
    yield mailbox, controller
    controller.stop()


def smtp_env(controller, **extra: str) -> dict[str, str]:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port),
            "SMTP_FROM": "Boutique Mesh <orders@boutique.test>", **extra}


def send(env: dict[str, str], req: pb.SendOrderConfirmationRequest) -> None:
    with BackgroundService(email_svc.DEFINITION, env) as svc, grpc.insecure_channel(svc.address) as channel:
        rpc.EmailServiceStub(channel).SendOrderConfirmation(req, timeout=10)


def _parts(envelope):
    msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
    return msg, msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_smtp_delivers_text_and_html(smtp_server):
    mailbox, controller = smtp_server
    send(smtp_env(controller), request("buyer@example.com", shipping_address=pb.Address(street_address=EVIL)))
    assert len(mailbox.envelopes) == 1
    env = mailbox.envelopes[0]
    assert env.mail_from == "orders@boutique.test" and env.rcpt_tos == ["buyer@example.com"]
    msg, text, html = _parts(env)
    assert msg["To"] == "buyer@example.com"
    assert msg["From"] == "Boutique Mesh <orders@boutique.test>"
    assert msg["Subject"] == "Your Boutique Mesh order 3f1c2a4e-0000-11f0-9c1b-0242ac120002"
    assert "QK-20123-101234567" in text and EVIL in text
    assert "QK-20123-101234567" in html and "&lt;script&gt;" in html and "<script>" not in html


@pytest.mark.parametrize("smtp_server", [{"authenticator": _authenticator, "auth_require_tls": False}],
                         indirect=True)
def test_smtp_auth(smtp_server):
    mailbox, controller = smtp_server
    send(smtp_env(controller, SMTP_USERNAME="shop", SMTP_PASSWORD="s3cret"), request())
    assert len(mailbox.envelopes) == 1
    with pytest.raises(grpc.RpcError) as err:
        send(smtp_env(controller, SMTP_USERNAME="shop", SMTP_PASSWORD="wrong"), request())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "SMTP_USERNAME/SMTP_PASSWORD" in err.value.details()
    assert len(mailbox.envelopes) == 1


def test_smtp_refused_recipient_is_invalid_argument(smtp_server):
    mailbox, controller = smtp_server
    with pytest.raises(grpc.RpcError) as err:
        send(smtp_env(controller), request("nobody@refused.test"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nobody@refused.test" in err.value.details()
    assert mailbox.envelopes == []


def test_smtp_server_down_is_unavailable():
    port = free_port()
    with pytest.raises(grpc.RpcError) as err:
        send({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_FROM": "orders@boutique.test"}, request())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"SMTP server 127.0.0.1:{port}" in err.value.details()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    out = tmp_path_factory.mktemp("smtp-tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test smtp ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (out / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return out


def test_smtp_starttls_with_auth(tls_files):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files / "server.pem", tls_files / "server.key")
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=ctx,
                            require_starttls=True, authenticator=_authenticator)  # AUTH only after STARTTLS
    controller.start()
    try:
        send(smtp_env(controller, SMTP_STARTTLS="true", SMTP_CA_FILE=str(tls_files / "ca.pem"),
                      SMTP_USERNAME="shop", SMTP_PASSWORD="s3cret"), request())
        assert len(mailbox.envelopes) == 1
        # without STARTTLS the server refuses to go on
        with pytest.raises(grpc.RpcError) as err:
            send(smtp_env(controller), request())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # a certificate we do not trust (the system CAs) fails too
        with pytest.raises(grpc.RpcError) as err:
            send(smtp_env(controller, SMTP_STARTTLS="true"), request())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.details()
        assert len(mailbox.envelopes) == 1
    finally:
        controller.stop()


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("env", "names"), [
    ({"SMTP_HOST": "mail"}, "SMTP_FROM"),
    ({"SMTP_HOST": "mail", "SMTP_FROM": "not an address"}, "SMTP_FROM"),
    ({"SMTP_HOST": "mail", "SMTP_FROM": "a@b.test", "SMTP_USERNAME": "u"}, "SMTP_USERNAME and SMTP_PASSWORD"),
    ({"SMTP_HOST": "mail", "SMTP_FROM": "a@b.test", "SMTP_PORT": "smtp"}, "SMTP_PORT"),
    ({"SMTP_HOST": "mail", "SMTP_FROM": "a@b.test", "SMTP_STARTTLS": "maybe"}, "SMTP_STARTTLS"),
    ({"SMTP_HOST": "mail", "SMTP_FROM": "a@b.test", "SMTP_CA_FILE": "/nonexistent/ca.pem"}, "SMTP_CA_FILE"),
    ({"SMTP_HOST": "mail", "SMTP_FROM": "a@b.test", "SMTP_TIMEOUT_SECONDS": "0"}, "SMTP_TIMEOUT_SECONDS"),
])
def test_bad_smtp_config_stops_startup(env, names):
    svc = BackgroundService(email_svc.DEFINITION, env)
    try:
        with pytest.raises(ConfigError, match=names):
            svc.start()
    finally:
        svc.stop()


def test_no_smtp_host_means_log_sender():
    assert email_svc.SmtpSettings.from_env({}) is None
    settings = email_svc.SmtpSettings.from_env({"SMTP_HOST": "mail", "SMTP_FROM": "a@b.test"})
    assert settings is not None and (settings.port, settings.starttls, settings.username) == (25, False, "")
