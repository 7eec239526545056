"""What the node changes on the host, and how `down` takes every bit of it back: kernel settings,
the bridge and its veths, firewall chains, cgroups, mounts and the pods' network namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from boutique.dev.cluster.components import system_program
from boutique.dev.cluster.settings import ClusterError, Settings

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
# Kernel settings the node needs, and those the kubelet itself sets (protectKernelDefaults=false):
# their old values are saved by `up` and put back by `down`.
NODE_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
IPTABLES_TABLES = ("filter", "nat", "mangle")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError("the test node needs root (network namespaces, cgroups, mounts, iptables): run it as root")


# --- kernel settings -----------------------------------------------------------------------------
def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key


def save_sysctls(s: Settings) -> None:
    saved = {}
    for key in (*NODE_SYSCTLS, *KUBELET_SYSCTLS):
        path = _sysctl_path(key)
        if not path.exists():
            if key in NODE_SYSCTLS:
                raise ClusterError(f"the kernel has no {path} (bridge netfilter / IP forwarding are needed)")
            continue
        saved[key] = path.read_text().strip()
    s.path("host-sysctls.json").write_text(json.dumps(saved, indent=1))
    for key, value in NODE_SYSCTLS.items():
        _sysctl_path(key).write_text(value)


def restore_sysctls(s: Settings) -> None:
    saved_file = s.path("host-sysctls.json")
    if not saved_file.is_file():
        return
    for key, value in json.loads(saved_file.read_text()).items():
        with contextlib.suppress(OSError):
            _sysctl_path(key).write_text(value)


# --- the bridge and the firewall -----------------------------------------------------------------
def link_exists(name: str) -> bool:
    return run(system_program("ip"), "link", "show", name, check=False).returncode == 0


def create_bridge(s: Settings) -> None:
    ip = system_program("ip")
    if link_exists(s.bridge):
        raise ClusterError(f"network interface {s.bridge} already exists: a node is up, or a `down` was "
                           f"interrupted; run `boutique cluster down` first")
    run(ip, "link", "add", s.bridge, "type", "bridge")
    run(ip, "addr", "add", f"{s.node_ip}/{s.pod_cidr.prefixlen}", "dev", s.bridge)
    run(ip, "link", "set", s.bridge, "up")


def delete_bridge(s: Settings) -> None:
    ip = system_program("ip")
    ports = run(ip, "-o", "link", "show", "master", s.bridge, check=False).stdout
    for line in ports.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        run(ip, "link", "del", name, check=False)
    if link_exists(s.bridge):
        run(ip, "link", "del", s.bridge)


def _firewall_rules(s: Settings) -> dict[str, list[list[str]]]:
    """Our chains: pods talk to pods (through Service addresses too) and to the API server, the
    host talks to pods, and nothing is forwarded between the pods and any other interface."""
    br, api = s.bridge, str(s.ports.apiserver)
    return {
        f"{s.firewall_chain}-FWD": [
            ["-i", br, "-o", br, "-j", "ACCEPT"],
            ["-i", br, "-j", "DROP"],
            ["-o", br, "-j", "DROP"],
        ],
        f"{s.firewall_chain}-IN": [
            ["-i", br, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["-i", br, "-p", "tcp", "-d", s.node_ip, "--dport", api, "-j", "ACCEPT"],
            ["-i", br, "-j", "DROP"],
        ],
    }


def _hooks(s: Settings) -> dict[str, str]:
    return {f"{s.firewall_chain}-FWD": "FORWARD", f"{s.firewall_chain}-IN": "INPUT"}


def install_firewall(s: Settings) -> None:
    iptables = system_program("iptables")
    for chain, rules in _firewall_rules(s).items():
        run(iptables, "-t", "filter", "-N", chain)
        for rule in rules:
            run(iptables, "-t", "filter", "-A", chain, *rule)
        run(iptables, "-t", "filter", "-I", _hooks(s)[chain], "1", "-j", chain)


def remove_firewall(s: Settings) -> None:
    iptables = system_program("iptables")
    for chain, hook in _hooks(s).items():
        while run(iptables, "-t", "filter", "-D", hook, "-j", chain, check=False).returncode == 0:
            pass
        run(iptables, "-t", "filter", "-F", chain, check=False)
        run(iptables, "-t", "filter", "-X", chain, check=False)


def kube_chains() -> dict[str, dict[str, list[str]]]:
    """Chains the kubelet and kube-proxy made (KUBE-*), per tool and table, and what we own."""
    found: dict[str, dict[str, list[str]]] = {}
    for tool in ("iptables", "ip6tables"):
        binary = system_program(tool)
        for table in IPTABLES_TABLES:
            out = run(binary, "-t", table, "-S", check=False).stdout
            chains = [line.split()[1] for line in out.splitlines() if line.startswith("-N ") and
                      (line.split()[1].startswith("KUBE-") or line.split()[1].startswith("BOUTIQUE-NODE"))]
            if chains:
                found.setdefault(tool, {})[table] = chains
    return found


def remove_kube_chains() -> None:
    """Delete every KUBE-* chain and the jumps to them (the node's kubelet and kube-proxy made them)."""
    for tool in ("iptables", "ip6tables"):
        binary = system_program(tool)
        for table in IPTABLES_TABLES:
            rules = run(binary, "-t", table, "-S", check=False).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            if not chains:
                continue
            for rule in rules:  # jumps from the built-in chains into ours
                parts = shlex.split(rule)
                if parts[0] == "-A" and not parts[1].startswith("KUBE-") and "-j" in parts \
                        and parts[parts.index("-j") + 1].startswith("KUBE-"):
                    run(binary, "-t", table, "-D", *parts[1:], check=False)
            for chain in chains:
                run(binary, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(binary, "-t", table, "-X", chain, check=False)


# --- cgroups -------------------------------------------------------------------------------------
def hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one, the unified v2 one)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(fields[4]))
    return found


def create_cgroups(s: Settings) -> None:
    for root in hierarchies():
        group = root / s.cgroup_root
        group.mkdir(exist_ok=True)
        if (root / "cpuset.cpus").exists():  # v1 cpuset: a new group starts with no CPUs or memory nodes
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (group / knob).write_text((root / knob).read_text())


def cgroup_pids(s: Settings) -> set[int]:
    pids: set[int] = set()
    for root in hierarchies():
        group = root / s.cgroup_root
        if not group.is_dir():
            continue
        for procs in group.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroups(s: Settings) -> list[str]:
    """rmdir every cgroup below ours, deepest first; returns what could not be removed."""
    left = []
    for root in hierarchies():
        group = root / s.cgroup_root
        if not group.is_dir():
            continue
        for folder in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()
        try:
            group.rmdir()
        except OSError as exc:
            left.append(f"{group} ({exc.strerror})")
    return left


# --- processes -----------------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def shim_pids(s: Settings) -> set[int]:
    """containerd shims of our containerd (they re-parent to init, so find them by their socket)."""
    socket = str(s.containerd_socket)
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _cmdline(int(entry.name))
            if argv and argv[0].endswith("containerd-shim-runc-v2") and socket in argv:
                found.add(int(entry.name))
    return found


def pod_netns_inodes(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return inodes


def kill_all(pids: set[int], wait: float = 10.0) -> set[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists() and _state(p) != "Z"}
        time.sleep(0.1)
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def node_processes(s: Settings) -> list[int]:
    """Any process still using the work folder or our containerd (what `down` must leave none of)."""
    work = str(s.work)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _cmdline(int(entry.name))
        if any(work in arg for arg in argv) and _state(int(entry.name)) not in ("Z", ""):
            found.append(int(entry.name))
    return found


# --- mounts and network namespaces ---------------------------------------------------------------
def mounts_under(folder: Path) -> list[str]:
    prefix = str(folder).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(folder):
            points.append(point)
    return points


def unmount_all(points: list[str]) -> list[str]:
    umount = system_program("umount")
    left = []
    for point in sorted(set(points), key=lambda p: -p.count("/")):
        if run(umount, point, check=False).returncode != 0 and \
                run(umount, "-l", point, check=False).returncode != 0:
            left.append(point)
    return left


def netns_files(inodes: set[int]) -> list[Path]:
    """Network namespace files under /var/run/netns that belong to our pods."""
    if not NETNS_DIR.is_dir():
        return []
    found = []
    for entry in NETNS_DIR.iterdir():
        with contextlib.suppress(OSError):
            if os.stat(entry).st_ino in inodes:
                found.append(entry)
    return found


def remove_netns(files: list[Path]) -> None:
    for entry in files:
        unmount_all([str(entry)])
        with contextlib.suppress(OSError):
            entry.unlink()


def record_netns(s: Settings, inodes: set[int]) -> None:
    """Remember our pods' namespaces in the work folder (so a later `down` still finds them)."""
    known = s.path("pod-netns.json")
    old = set(json.loads(known.read_text())) if known.is_file() else set()
    names = {str(p) for p in netns_files(inodes)} | old
    known.write_text(json.dumps(sorted(names)))
