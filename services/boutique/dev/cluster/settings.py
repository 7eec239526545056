"""Where the test node lives and how it is wired: one work folder, addresses only inside this machine."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from boutique.dev.gotools import REPO


class ClusterError(RuntimeError):
    """Something the user can fix; the message says what."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ClusterError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ClusterError(f"{name}={value} is outside 1-65535")
    return value


def _env_net(name: str, default: str) -> ipaddress.IPv4Network:
    raw = os.environ.get(name, default)
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise ClusterError(f"{name}={raw!r} is not a network ({exc})") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.is_private:
        raise ClusterError(f"{name}={raw} must be a private IPv4 network (it never leaves this machine)")
    return net


@dataclass(frozen=True)
class Ports:
    """Every port the node listens on. Only etcd and the local health ports are on loopback;
    the apiserver and the kubelet listen on the node address (the bridge), which pods can reach."""

    etcd_client: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 6443
    controller_manager: int = 10257
    scheduler: int = 10259
    kubelet: int = 10250
    kubelet_healthz: int = 10248
    proxy_healthz: int = 10256
    proxy_metrics: int = 10249

    @classmethod
    def from_env(cls) -> Ports:
        return cls(**{f: _env_int(f"BOUTIQUE_CLUSTER_PORT_{f.upper()}", getattr(cls, f))
                      for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Settings:
    """The node's layout. Everything `up` creates is named here, so `down` can remove exactly that."""

    work: Path
    node_name: str = "boutique-node"
    # Pods get addresses from pod_cidr on the bridge; the bridge's first address is the node's own
    # address (apiserver, kubelet). Services get virtual addresses from service_cidr (kube-proxy).
    cluster_cidr: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.ip_network("10.244.0.0/16"))
    service_cidr: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.ip_network("10.96.0.0/16"))
    bridge: str = "bmnode0"
    firewall_chain: str = "BOUTIQUE-NODE"
    cluster_domain: str = "cluster.local"
    cgroup_root: str = "boutique-node"
    ports: Ports = field(default_factory=Ports)

    @classmethod
    def from_env(cls) -> Settings:
        work = Path(os.environ.get("BOUTIQUE_CLUSTER_DIR") or REPO / ".work" / "cluster").resolve()
        if len(str(work / "run" / "containerd.sock.ttrpc")) > 100:
            raise ClusterError(f"BOUTIQUE_CLUSTER_DIR={work} is too long for unix sockets; choose a shorter path")
        cluster = _env_net("BOUTIQUE_CLUSTER_POD_CIDR", "10.244.0.0/16")
        services = _env_net("BOUTIQUE_CLUSTER_SERVICE_CIDR", "10.96.0.0/16")
        if cluster.overlaps(services):
            raise ClusterError(f"pod network {cluster} and service network {services} overlap")
        if cluster.prefixlen > 24 or services.prefixlen > 24:
            raise ClusterError("the pod and service networks need at least a /24 each")
        return cls(work=work, cluster_cidr=cluster, service_cidr=services, ports=Ports.from_env())

    # --- addresses ---------------------------------------------------------------------------
    @property
    def pod_cidr(self) -> ipaddress.IPv4Network:
        """This node's share of the cluster network (the controller-manager allocates the first /24)."""
        return next(self.cluster_cidr.subnets(new_prefix=24))

    @property
    def node_ip(self) -> str:
        return str(self.pod_cidr.network_address + 1)

    @property
    def kubernetes_service_ip(self) -> str:
        return str(self.service_cidr.network_address + 1)

    @property
    def dns_service_ip(self) -> str:
        return str(self.service_cidr.network_address + 10)

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.node_ip}:{self.ports.apiserver}"

    # --- folders -----------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    @property
    def pki(self) -> Path:
        return self.path("pki")

    @property
    def logs(self) -> Path:
        return self.path("logs")

    @property
    def containerd_socket(self) -> Path:
        return self.path("run", "containerd.sock")

    @property
    def admin_kubeconfig(self) -> Path:
        return self.path("admin.kubeconfig")
