"""The node's programs, their configuration files and their flags, in start order:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from boutique.dev.cluster.settings import ClusterError, Settings
from boutique.dev.supervisor import Program, Ready

PAUSE_IMAGE = "docker.io/boutique/pause:catatonit"
# Debian packages (apt-get install ...) that provide the programs not built from Go.
SYSTEM_PROGRAMS = {
    "etcd": "etcd-server", "containerd": "containerd", "ctr": "containerd", "runc": "runc",
    "catatonit": "catatonit", "iptables": "iptables", "ip6tables": "iptables", "ip": "iproute2",
    "conntrack": "conntrack", "mount": "mount",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback")
CNI_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def system_program(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ClusterError(f"{name} is not installed: apt-get install {SYSTEM_PROGRAMS.get(name, name)} "
                       f"(scripts/system-deps.sh installs everything the node needs)")


def cni_bin_dir() -> str:
    for folder in CNI_DIRS:
        if all((Path(folder) / p).is_file() for p in CNI_PLUGINS):
            return folder
    raise ClusterError(f"the CNI plugins {', '.join(CNI_PLUGINS)} are not installed in {' or '.join(CNI_DIRS)}: "
                       "apt-get install containernetworking-plugins")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _yaml(path: Path, data: dict) -> Path:
    return _write(path, yaml.safe_dump(data, sort_keys=False))


def containerd_config(s: Settings) -> Path:
    """containerd 1.6 (Debian bookworm): own root, state and socket; cgroupfs; CNI from our folder;
    registries from hosts.toml files under certs.d (the loopback registry over plain HTTP)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    text = f"""version = 2
root = "{s.path('containerd', 'root')}"
state = "{s.path('containerd', 'state')}"
oom_score = 0

[grpc]
  address = "{s.containerd_socket}"

[ttrpc]
  address = "{s.containerd_socket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{s.path('containerd', 'opt')}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = true
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{system_program('runc')}"

[{cri}.cni]
  bin_dir = "{cni_bin_dir()}"
  conf_dir = "{s.path('cni', 'net.d')}"

[{cri}.registry]
  config_path = "{s.path('containerd', 'certs.d')}"
"""
    return _write(s.path("containerd", "config.toml"), text)


def registry_hosts(s: Settings, registries: list[str]) -> None:
    """hosts.toml per loopback registry: pull over plain HTTP from 127.0.0.1 only."""
    for registry in registries:
        host = registry.split("/", 1)[0]
        if not (host.startswith("127.") or host.startswith("localhost")):
            raise ClusterError(f"registry {registry} is not on loopback; the test node pulls only from 127.0.0.1")
        _write(s.path("containerd", "certs.d", host, "hosts.toml"),
               f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n')


def cni_config(s: Settings) -> Path:
    """A bridge with the node address as gateway and no default route in the pods: a pod reaches other
    pods, Service addresses and the node, and nothing else (no masquerade, no way out)."""
    conf = {
        "cniVersion": "1.0.0", "name": "boutique-node",
        "plugins": [{
            "type": "bridge", "bridge": s.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(s.path("cni", "ipam")),
                     "ranges": [[{"subnet": str(s.pod_cidr), "gateway": s.node_ip}]],
                     "routes": [{"dst": str(s.service_cidr)}]},
        }],
    }
    return _write(s.path("cni", "net.d", "10-boutique-node.conflist"), json.dumps(conf, indent=1))


def kubelet_config(s: Settings) -> Path:
    pki = s.pki
    _write(s.path("kubelet", "resolv.conf"), "nameserver 127.0.0.1\noptions ndots:1\n")
    return _yaml(s.path("kubelet", "config.yaml"), {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": s.node_ip, "port": s.ports.kubelet, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": s.ports.kubelet_healthz,
        "tlsCertFile": str(pki / "kubelet-serving.pem"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.pem")}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{s.cgroup_root}", "cgroupsPerQOS": True,
        "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{s.containerd_socket}",
        "clusterDNS": [s.dns_service_ip], "clusterDomain": s.cluster_domain,
        "resolvConf": str(s.path("kubelet", "resolv.conf")),
        "rotateCertificates": False, "serverTLSBootstrap": False,
        "staticPodPath": "", "protectKernelDefaults": False,
        "volumePluginDir": str(s.path("kubelet", "volume-plugins")),
        # A test node on a shared disk: evict only when really short of memory or space.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                         "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 98, "imageGCLowThresholdPercent": 95,
        "enforceNodeAllocatable": ["pods"], "maxPods": 110,
        "serializeImagePulls": False, "registryPullQPS": 0,
        "shutdownGracePeriod": "0s",
    })


def proxy_config(s: Settings) -> Path:
    return _yaml(s.path("kube-proxy", "config.yaml"), {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(s.path("kube-proxy.kubeconfig"))},
        "hostnameOverride": s.node_name, "mode": "iptables", "clusterCIDR": str(s.cluster_cidr),
        "healthzBindAddress": f"127.0.0.1:{s.ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{s.ports.proxy_metrics}",
        # NodePorts only on the node address, never on an outside interface or on loopback.
        "nodePortAddresses": [f"{s.node_ip}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        # 0 = leave the machine's conntrack settings as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    })


def programs(s: Settings, kube_bin: Path) -> list[Program]:
    pki, ports, logs = s.pki, s.ports, s.logs

    def log(name: str) -> str:
        return str(logs / f"{name}.log")

    common = ["--v=1"]
    etcd = Program("etcd", [
        system_program("etcd"), "--name", s.node_name, "--data-dir", str(s.path("etcd")),
        "--listen-client-urls", f"http://127.0.0.1:{ports.etcd_client}",
        "--advertise-client-urls", f"http://127.0.0.1:{ports.etcd_client}",
        "--listen-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
        "--initial-cluster", f"{s.node_name}=http://127.0.0.1:{ports.etcd_peer}",
        "--quota-backend-bytes", str(2 * 1024**3), "--snapshot-count", "10000",
        "--logger", "zap", "--log-level", "warn",
    ], log("etcd"), Ready(url=f"http://127.0.0.1:{ports.etcd_client}/health", timeout=60))
    apiserver = Program("kube-apiserver", [
        str(kube_bin / "kube-apiserver"), *common,
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        f"--bind-address={s.node_ip}", f"--advertise-address={s.node_ip}", f"--secure-port={ports.apiserver}",
        f"--service-cluster-ip-range={s.service_cidr}", "--service-node-port-range=30000-32767",
        f"--client-ca-file={pki / 'ca.pem'}",
        f"--tls-cert-file={pki / 'apiserver.pem'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.pem'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.pem'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-issuer=https://kubernetes.default.svc.{s.cluster_domain}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction,PodSecurity",
        # Privileged pods pass validation so that Pod Security admission is what refuses them.
        "--allow-privileged=true",
        f"--encryption-provider-config={pki / 'encryption.yaml'}",
        "--profiling=false", "--event-ttl=30m",
        "--endpoint-reconciler-type=lease",
    ], log("kube-apiserver"), Ready(url=f"{s.apiserver_url}/readyz", ca=str(pki / "ca.pem"), timeout=120))
    controller_manager = Program("kube-controller-manager", [
        str(kube_bin / "kube-controller-manager"), *common,
        f"--kubeconfig={s.path('controller-manager.kubeconfig')}",
        f"--authentication-kubeconfig={s.path('controller-manager.kubeconfig')}",
        f"--authorization-kubeconfig={s.path('controller-manager.kubeconfig')}",
        "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
        "--leader-elect=false", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.pem'}",
        f"--cluster-signing-cert-file={pki / 'ca.pem'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--allocate-node-cidrs=true", f"--cluster-cidr={s.cluster_cidr}", "--node-cidr-mask-size=24",
        f"--service-cluster-ip-range={s.service_cidr}",
        "--controllers=*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        "--profiling=false",
        f"--cert-dir={s.path('controller-manager')}",
    ], log("kube-controller-manager"),
        Ready(url=f"https://127.0.0.1:{ports.controller_manager}/healthz", timeout=60))
    scheduler = Program("kube-scheduler", [
        str(kube_bin / "kube-scheduler"), *common,
        f"--kubeconfig={s.path('scheduler.kubeconfig')}",
        f"--authentication-kubeconfig={s.path('scheduler.kubeconfig')}",
        f"--authorization-kubeconfig={s.path('scheduler.kubeconfig')}",
        "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}", "--leader-elect=false",
        "--profiling=false", f"--cert-dir={s.path('scheduler')}",
    ], log("kube-scheduler"), Ready(url=f"https://127.0.0.1:{ports.scheduler}/healthz", timeout=60))
    containerd = Program("containerd", [
        system_program("containerd"), "--config", str(containerd_config(s)),
    ], log("containerd"), Ready(unix=str(s.containerd_socket), timeout=60))
    kubelet = Program("kubelet", [
        str(kube_bin / "kubelet"), *common, f"--config={kubelet_config(s)}",
        f"--kubeconfig={s.path('kubelet.kubeconfig')}", f"--root-dir={s.path('kubelet', 'root')}",
        f"--cert-dir={s.path('kubelet', 'pki')}",
        f"--hostname-override={s.node_name}", f"--node-ip={s.node_ip}",
        "--node-labels=node.kubernetes.io/test-node=true,topology.kubernetes.io/zone=local",
    ], log("kubelet"), Ready(url=f"http://127.0.0.1:{ports.kubelet_healthz}/healthz", timeout=90))
    proxy = Program("kube-proxy", [
        str(kube_bin / "kube-proxy"), *common, f"--config={proxy_config(s)}",
    ], log("kube-proxy"), Ready(url=f"http://127.0.0.1:{ports.proxy_healthz}/healthz", timeout=90))
    return [etcd, apiserver, controller_manager, scheduler, containerd, kubelet, proxy]


def listen_ports(s: Settings) -> dict[str, tuple[str, int]]:
    """What each program will bind (checked free before `up` starts anything)."""
    p = s.ports
    return {
        "etcd (client)": ("127.0.0.1", p.etcd_client), "etcd (peer)": ("127.0.0.1", p.etcd_peer),
        "kube-apiserver": (s.node_ip, p.apiserver),
        "kube-controller-manager": ("127.0.0.1", p.controller_manager),
        "kube-scheduler": ("127.0.0.1", p.scheduler),
        "kubelet": (s.node_ip, p.kubelet), "kubelet (healthz)": ("127.0.0.1", p.kubelet_healthz),
        "kube-proxy (healthz)": ("127.0.0.1", p.proxy_healthz),
        "kube-proxy (metrics)": ("127.0.0.1", p.proxy_metrics),
    }
