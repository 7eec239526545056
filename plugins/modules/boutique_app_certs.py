#!/usr/bin/python
"""Ansible module: the certificates of app-level mutual TLS (clusters without a mesh)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: boutique_app_certs
short_description: Issue, keep or renew one certificate per service from a CA (app-level mutual TLS)
description:
  - Works out the data of one C(kubernetes.io/tls) Secret per service (tls.crt, tls.key, ca.crt)
    from the CA given, or from a CA it generates when none is given and none exists yet.
  - A certificate already in a Secret is kept while it is signed by the CA, matches its key, names
    exactly the wanted DNS names and has more than O(renew_days) left; otherwise a new one is issued.
    So a second run changes nothing, and renewals happen only when due.
  - Runs on the controller with the C(cryptography) package; keys never leave the returned data
    (use C(no_log)).
options:
  ca_cert: {description: CA certificate (PEM); empty to use O(existing_ca) or generate one, type: str, default: ""}
  ca_key: {description: CA private key (PEM), type: str, default: "", no_log: true}
  existing_ca:
    description:
      - The data of the Secret holding a CA generated earlier (tls.crt, tls.key; base64).
      - Call the module with C(no_log) on the task, since this and the result hold private keys.
    type: dict
    default: {}
  existing:
    description: Secret name -> its data (base64 values, as the API returns them).
    type: dict
    default: {}
  services:
    description:
      - Service names. Each gets the Secret C(<name><secret_suffix>) with a server and client certificate for
        C(<name>), C(<name>.<namespace>), C(<name>.<namespace>.svc) and C(<name>.<namespace>.svc.<cluster_domain>).
    type: list
    elements: str
    required: true
  client: {description: Name (Secret and CN) of a client-only certificate for tools and probes, type: str, default: ""}
  namespace: {description: The services' namespace, type: str, required: true}
  cluster_domain: {description: The cluster's DNS domain, type: str, default: cluster.local}
  secret_suffix: {description: Appended to a service name to name its Secret, type: str, default: -mtls}
  days: {description: Validity of a new certificate in days, type: int, default: 90}
  renew_days: {description: Renew when fewer days than this remain, type: int, default: 30}
  ca_days: {description: Validity of a generated CA in days, type: int, default: 3650}
author: [boutique-mesh]
"""

RETURN = r"""
ca: {description: "The CA: cert (PEM), key (PEM, only when generated), generated (bool)", type: dict, returned: always}
secrets: {description: "Secret name -> data (base64) of every certificate asked for", type: dict, returned: always}
issued: {description: Secret names that got a new certificate this run, type: list, returned: always}
"""

import base64
import datetime as dt
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover (the module reports it)
    CRYPTOGRAPHY_ERROR = traceback.format_exc()
else:
    CRYPTOGRAPHY_ERROR = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text or "")


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_ca(days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Boutique Mesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "boutique app mTLS CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(hours=1)).not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _issue(ca_cert, ca_key, common_name: str, dns: list[str], client_only: bool, days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([] if client_only else [ExtendedKeyUsageOID.SERVER_AUTH])
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Boutique Mesh"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(_now() - dt.timedelta(hours=1)).not_valid_after(_now() + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                              critical=False))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _still_good(data: dict, ca_cert, want: dict, renew_days: int) -> bool:
    """Is the certificate in this Secret data signed by the CA, for its key and names, and not due?"""
    try:
        cert = x509.load_pem_x509_certificate(_unb64(data.get("tls.crt", "")))
        key = serialization.load_pem_private_key(_unb64(data.get("tls.key", "")), password=None)
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # noqa: BLE001 (anything unreadable or foreign is simply replaced)
        return False
    if _unb64(data.get("ca.crt", "")) != ca_cert.public_bytes(serialization.Encoding.PEM):
        return False
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        return False
    try:
        names = sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                       .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    if names != sorted(want.get("dns") or []):
        return False
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != want["common_name"]:
        return False
    return cert.not_valid_after_utc - _now() > dt.timedelta(days=renew_days)


def _wanted(params: dict) -> dict:
    """Secret name -> {common_name, dns, client_only} for every certificate asked for."""
    ns, domain = params["namespace"], params["cluster_domain"]
    wanted = {f"{svc}{params['secret_suffix']}": {
        "common_name": svc, "dns": [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.{domain}"]}
        for svc in params["services"]}
    if params["client"]:
        wanted[params["client"]] = {"common_name": params["client"], "dns": [], "client_only": True}
    return wanted


def run(params: dict) -> dict:
    generated = False
    if params["ca_cert"]:
        ca_cert = x509.load_pem_x509_certificate(params["ca_cert"].encode())
        ca_key = serialization.load_pem_private_key(params["ca_key"].encode(), password=None)
        if ca_cert.public_key().public_numbers() != ca_key.public_key().public_numbers():
            raise ValueError("the CA key does not belong to the CA certificate (boutique_app_mtls_ca_*_file)")
    elif params["existing_ca"].get("tls.crt"):
        ca_cert = x509.load_pem_x509_certificate(_unb64(params["existing_ca"]["tls.crt"]))
        ca_key = serialization.load_pem_private_key(_unb64(params["existing_ca"]["tls.key"]), password=None)
    else:
        ca_cert, ca_key = _new_ca(params["ca_days"])
        generated = True
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    secrets, issued = {}, []
    for name, want in sorted(_wanted(params).items()):
        data = params["existing"].get(name) or {}
        if not generated and _still_good(data, ca_cert, want, params["renew_days"]):
            secrets[name] = {k: data[k] for k in ("tls.crt", "tls.key", "ca.crt")}
            continue
        cert, key = _issue(ca_cert, ca_key, want["common_name"], list(want.get("dns") or []),
                           bool(want.get("client_only")), params["days"])
        secrets[name] = {"tls.crt": _b64(cert.public_bytes(serialization.Encoding.PEM)),
                         "tls.key": _b64(_key_pem(key)), "ca.crt": _b64(ca_pem)}
        issued.append(name)
    ca = {"cert": ca_pem.decode(), "generated": generated,
          "key": _key_pem(ca_key).decode() if generated else ""}
    return {"changed": generated or bool(issued), "ca": ca, "secrets": secrets, "issued": issued}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "ca_cert": {"type": "str", "default": ""},
            "ca_key": {"type": "str", "default": "", "no_log": True},
            # Not no_log: Ansible would then mask these values in what the module returns (the
            # kept certificates). The task that calls the module sets no_log instead.
            "existing_ca": {"type": "dict", "default": {}, "no_log": False},
            "existing": {"type": "dict", "default": {}, "no_log": False},
            "services": {"type": "list", "elements": "str", "required": True},
            "client": {"type": "str", "default": ""},
            "namespace": {"type": "str", "required": True},
            "cluster_domain": {"type": "str", "default": "cluster.local"},
            "secret_suffix": {"type": "str", "default": "-mtls"},
            "days": {"type": "int", "default": 90},
            "renew_days": {"type": "int", "default": 30},
            "ca_days": {"type": "int", "default": 3650},
        },
        required_together=[("ca_cert", "ca_key")],
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_ERROR:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_ERROR)
    if module.params["renew_days"] >= module.params["days"]:
        module.fail_json(msg=f"renew_days ({module.params['renew_days']}) must be below days ({module.params['days']})")
    try:
        module.exit_json(**run(module.params))
    except ValueError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
