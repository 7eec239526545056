"""`boutique cluster up | down | status | kubeconfig`: a real single-node Kubernetes for the tests.

A test node, not a production cluster: one machine, one node, its own PKI, every address inside
this machine. `up` builds (or reuses) the Kubernetes binaries, then starts etcd, the control plane,
containerd, the kubelet and kube-proxy under one supervisor, waits for the node to be Ready and
for CoreDNS to be Available. `down` stops every process and removes everything `up` created.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boutique.dev import gotools, supervisor
from boutique.dev.cluster import addons, components, host, oci, pki
from boutique.dev.cluster.settings import ClusterError, Settings

Log = Callable[[str], None]


def _binaries(log: Log) -> tuple[Path, Path, str]:
    try:
        kube = gotools.path("kube")
        coredns = gotools.path("coredns")
        if kube is None or coredns is None:
            log("cluster: building the Kubernetes node binaries and CoreDNS from the Go module proxy "
                "(a cold build takes 10-15 minutes on 2 cores; later runs reuse the cache)")
            kube = gotools.ensure("kube", log=log)
            coredns = gotools.ensure("coredns", log=log)
    except gotools.GoToolError as exc:
        raise ClusterError(f"{exc}\n(or point KUBE_BIN_DIR / COREDNS_BIN_DIR at binaries you already have)") from None
    return kube, coredns, gotools.load("coredns").version


def _check_ports(s: Settings) -> None:
    for what, (address, port) in components.listen_ports(s).items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                raise ClusterError(f"port {address}:{port} for {what} is in use ({exc.strerror}); free it or set "
                                   f"BOUTIQUE_CLUSTER_PORT_* (see `boutique cluster up --help`)") from None


def _preflight(s: Settings) -> None:
    host.require_root()
    for program in ("etcd", "containerd", "ctr", "runc", "catatonit", "iptables", "ip6tables", "ip", "umount"):
        components.system_program(program)
    components.cni_bin_dir()
    if supervisor.supervisor_pid(s.work) is not None:
        raise ClusterError(f"a test node is already up (work folder {s.work}); `boutique cluster status` shows it")
    if s.work.exists() and any(s.work.iterdir()):
        raise ClusterError(f"{s.work} is left over from an earlier node; run `boutique cluster down` first")


def up(s: Settings, log: Log = print, registries: list[str] | None = None) -> dict[str, Any]:
    started = time.monotonic()
    _preflight(s)
    kube_bin, coredns_bin, coredns_version = _binaries(log)
    s.work.mkdir(parents=True, exist_ok=True)
    s.logs.mkdir(exist_ok=True)
    try:
        log(f"cluster: node {s.node_name} at {s.node_ip} (pods {s.pod_cidr}, services {s.service_cidr}); "
            f"state in {s.work}")
        pki.generate(s)
        host.save_sysctls(s)
        host.create_bridge(s)
        host.install_firewall(s)
        host.create_cgroups(s)
        _check_ports(s)
        components.cni_config(s)
        components.registry_hosts(s, registries or ["127.0.0.1:5055"])
        log(f"cluster: host prepared in {time.monotonic() - started:.1f}s; starting the node's programs")
        supervisor.start(s.work, components.programs(s, kube_bin), log=log)
        log(f"cluster: programs ready {time.monotonic() - started:.1f}s after `up`")
        oci.import_images(s, [
            oci.Image(name=components.PAUSE_IMAGE, files={"/pause": Path(components.system_program("catatonit"))},
                      entrypoint=["/pause", "-P"]),
            addons.coredns_image(coredns_bin, coredns_version),
        ])
        log(f"cluster: images imported {time.monotonic() - started:.1f}s after `up`")
        timings = addons.install(s, coredns_version, log)
    except BaseException:
        log("cluster: start failed; taking down what was started")
        down(s, log=lambda _m: None)
        raise
    result = {"seconds_to_ready": round(time.monotonic() - started, 1), **{
        k: round(v, 1) for k, v in timings.items()}, "kubeconfig": str(s.admin_kubeconfig)}
    s.path("up.json").write_text(json.dumps(result, indent=1))
    log(f"cluster: node Ready and CoreDNS Available {result['seconds_to_ready']}s after `up`; "
        f"kubeconfig {s.admin_kubeconfig}")
    return result


def down(s: Settings, log: Log = print) -> list[str]:
    """Stop everything and remove what `up` made. Returns what is left (empty when clean)."""
    host.require_root()
    pod_pids = host.cgroup_pids(s)
    inodes = host.pod_netns_inodes(pod_pids)
    if s.work.is_dir():
        host.record_netns(s, inodes)
    was_up = supervisor.stop(s.work) if s.work.is_dir() else False
    host.kill_all(host.cgroup_pids(s) | host.shim_pids(s) | pod_pids)
    recorded = []
    if s.path("pod-netns.json").is_file():
        recorded = [Path(p) for p in json.loads(s.path("pod-netns.json").read_text())]
    host.remove_netns(host.netns_files(inodes) + [p for p in recorded if p.exists()])
    host.unmount_all(host.mounts_under(s.work))
    host.remove_kube_chains()
    host.remove_firewall(s)
    host.delete_bridge(s)
    left_cgroups = host.remove_cgroups(s)
    host.restore_sysctls(s)
    if s.work.exists():
        shutil.rmtree(s.work, ignore_errors=True)
    left = leftovers(s) + left_cgroups
    if left:
        log("cluster: down left these behind:\n  " + "\n  ".join(left))
    else:
        log("cluster: down: " + ("stopped the node and removed" if was_up else "nothing was running; removed")
            + " its processes, bridge, firewall chains, cgroups, mounts and work folder")
    return left


def leftovers(s: Settings) -> list[str]:
    """Anything of the node still on the host."""
    left = [f"process {pid}: {' '.join(host._cmdline(pid))[:120]}" for pid in host.node_processes(s)]
    left += [f"process {pid} in cgroup {s.cgroup_root}" for pid in host.cgroup_pids(s)]
    if host.link_exists(s.bridge):
        left.append(f"network interface {s.bridge}")
    for tool, tables in host.kube_chains().items():
        for table, chains in tables.items():
            left.append(f"{tool} -t {table} chains {', '.join(chains)}")
    left += [f"mount {m}" for m in host.mounts_under(s.work)]
    left += [f"cgroup {h / s.cgroup_root}" for h in host.hierarchies() if (h / s.cgroup_root).exists()]
    if s.work.exists():
        left.append(f"work folder {s.work}")
    return left


def memory_bytes(s: Settings) -> dict[str, int]:
    """Resident memory of the node's programs, of the containerd shims and of the pods (cgroup)."""
    def rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    usage = {name: rss(pid) for name, pid in supervisor.running_pids(s.work).items()}
    usage["containerd-shims"] = sum(rss(pid) for pid in host.shim_pids(s))
    pods = Path("/sys/fs/cgroup/memory") / s.cgroup_root / "memory.usage_in_bytes"
    usage["pods (cgroup)"] = int(pods.read_text()) if pods.is_file() else 0
    return usage


def status(s: Settings, log: Log = print) -> int:
    state = supervisor.read_state(s.work)
    if supervisor.supervisor_pid(s.work) is None:
        log(f"cluster: no test node is up (work folder {s.work})")
        return 1
    log(f"cluster: supervisor pid {state.get('supervisor')}, phase {state.get('phase')}")
    for name, info in state.get("programs", {}).items():
        log(f"  {name:24} {info.get('state', '?'):10} pid {info.get('pid', '-'):>7}  "
            f"restarts {info.get('restarts', 0)}")
    try:
        client = addons.api(s)
        ready = addons.node_ready(client, s)
        pods = client.resources.get(api_version="v1", kind="Pod").get()
        log(f"  node {s.node_name}: {'Ready' if ready else 'NOT Ready'}; {len(pods.items)} pods")
        for pod in pods.items:
            log(f"    {pod.metadata.namespace}/{pod.metadata.name}: {pod.status.phase}")
    except Exception as exc:
        log(f"  API server not answering: {str(exc).splitlines()[0][:200]}")
        ready = False
    total = memory_bytes(s)
    log("  memory: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in total.items())
        + f"; total {sum(total.values()) / 2**20:.0f} MiB")
    return 0 if ready and state.get("phase") == "running" else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "cluster", help="a real single-node Kubernetes for the tests (development checkout only)",
        description=__doc__ + "\nEnvironment: BOUTIQUE_CLUSTER_DIR (work folder, default .work/cluster), "
        "BOUTIQUE_CLUSTER_POD_CIDR (10.244.0.0/16), BOUTIQUE_CLUSTER_SERVICE_CIDR (10.96.0.0/16), "
        "BOUTIQUE_CLUSTER_PORT_<NAME> (APISERVER, ETCD_CLIENT, ...), KUBE_BIN_DIR / COREDNS_BIN_DIR "
        "(binaries you already have).", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down", "status", "kubeconfig"])
    p.add_argument("--registry", action="append", metavar="HOST:PORT",
                   help="loopback registry containerd may pull from over plain HTTP (default 127.0.0.1:5055)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        s = Settings.from_env()
        if args.action == "up":
            up(s, registries=args.registry)
            return 0
        if args.action == "down":
            return 1 if down(s) else 0
        if args.action == "status":
            return status(s)
        if not s.admin_kubeconfig.is_file():
            print(f"cluster: no test node is up ({s.admin_kubeconfig} does not exist)", file=sys.stderr)
            return 1
        print(s.admin_kubeconfig)
        return 0
    except (ClusterError, supervisor.SupervisorError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
