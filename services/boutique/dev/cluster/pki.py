"""The test node's own PKI: one CA, a certificate per component, kubeconfigs, the service-account
key and the key that encrypts Secrets at rest. Made fresh by every `up` (ECDSA P-256, 30 days)."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from boutique.certs import CertificateAuthority, Issued, _write, write_issued
from boutique.dev.cluster.settings import Settings

VALIDITY = dt.timedelta(days=30)
# Client identities: file name -> (user, groups). The default RBAC policy already binds these users
# (system:kube-controller-manager, system:kube-scheduler, system:kube-proxy) and the Node authorizer
# covers the kubelet; admin and the apiserver's kubelet client are cluster admins.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("boutique-admin", ("system:masters",)),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "kube-proxy": ("system:kube-proxy", ()),
}
KUBECONFIGS = ("admin", "controller-manager", "scheduler", "kube-proxy", "kubelet")


def kubelet_identity(settings: Settings) -> tuple[str, tuple[str, ...]]:
    return f"system:node:{settings.node_name}", ("system:nodes",)


def kubeconfig(settings: Settings, name: str, cert: Path, key: Path) -> dict:
    ca = (settings.pki / "ca.pem").read_bytes()
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "boutique-node", "cluster": {
            "server": settings.apiserver_url, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": name, "user": {
            "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode()}}],
        "contexts": [{"name": "boutique-node", "context": {"cluster": "boutique-node", "user": name}}],
        "current-context": "boutique-node",
    }


def generate(settings: Settings) -> None:
    """Write every certificate, key and kubeconfig the node's components read."""
    pki = settings.pki
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    ca = CertificateAuthority("boutique test node CA", validity=VALIDITY)
    _write(pki / "ca.pem", ca.cert_pem, 0o644)
    _write(pki / "ca.key", ca.key_pem, 0o600)  # the controller-manager signs CSRs with it

    node_dns = ("localhost", settings.node_name)
    api_dns = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
               f"kubernetes.default.svc.{settings.cluster_domain}", *node_dns)
    write_issued(pki, "apiserver", ca.issue("kube-apiserver", dns=api_dns,
                                            ips=(settings.node_ip, "127.0.0.1", settings.kubernetes_service_ip)))
    write_issued(pki, "kubelet-serving", ca.issue(settings.node_name, dns=node_dns, ips=(settings.node_ip,)))
    for name, (user, groups) in CLIENTS.items():
        write_issued(pki, name, ca.issue(user, server=False, organizations=groups))
    user, groups = kubelet_identity(settings)
    write_issued(pki, "kubelet", ca.issue(user, server=False, organizations=groups))

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write(pki / "sa.key", sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()), 0o600)
    _write(pki / "sa.pub", sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)

    secret = base64.b64encode(os.urandom(32)).decode()
    encryption = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration", "resources": [
        {"resources": ["secrets"], "providers": [{"secretbox": {"keys": [{"name": "k1", "secret": secret}]}},
                                                 {"identity": {}}]}]}
    _write(pki / "encryption.yaml", yaml.safe_dump(encryption).encode(), 0o600)

    for name in KUBECONFIGS:
        config = kubeconfig(settings, name, pki / f"{name}.pem", pki / f"{name}.key")
        target = settings.admin_kubeconfig if name == "admin" else settings.path(f"{name}.kubeconfig")
        _write(target, yaml.safe_dump(config, sort_keys=False).encode(), 0o600)


__all__ = ["CLIENTS", "KUBECONFIGS", "Issued", "generate", "kubeconfig", "kubelet_identity"]
