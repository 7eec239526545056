"""`boutique cluster up` takes the machine from nothing to a Ready node, and `down` takes every
process, interface, firewall chain, mount, cgroup and folder away again. Runs first in this folder:
the node the other tests share is brought up afterwards, on the clean machine this test leaves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import require_node_host
from testkit import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _netns() -> set[str]:
    folder = Path("/var/run/netns")
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _boutique(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "boutique"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_up_to_ready_then_down_leaves_nothing(node_binaries: None) -> None:
    from boutique.dev import supervisor
    from boutique.dev.cluster import host, node
    from boutique.dev.cluster.settings import Settings

    settings = Settings.from_env()
    if supervisor.supervisor_pid(settings.work) is not None:
        pytest.skip("a test node is already up on this machine (yours?); this test needs to start its own")
    node.down(settings, log=lambda _m: None)
    before_netns = _netns()
    assert node.leftovers(settings) == []

    up = _boutique("cluster", "up")
    assert up.returncode == 0, f"`boutique cluster up` failed:\n{up.stdout}\n{up.stderr}"
    assert "node Ready and CoreDNS Available" in up.stdout
    try:
        status = _boutique("cluster", "status", timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"node {settings.node_name}: Ready" in status.stdout
        for program in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
                        "kubelet", "kube-proxy"):
            assert f"{program}" in status.stdout and "running" in status.stdout
        assert "kube-system/coredns-" in status.stdout and "Running" in status.stdout
        kubeconfig = _boutique("cluster", "kubeconfig", timeout=30)
        assert kubeconfig.stdout.strip() == str(settings.admin_kubeconfig)
        # What `up` made is really there, so the checks after `down` can tell.
        assert host.link_exists(settings.bridge)
        assert host.kube_chains(), "kube-proxy made no KUBE-* chains"
        assert host.mounts_under(settings.work), "no pod volume is mounted under the work folder"
        assert host.cgroup_pids(settings), "no pod process runs in the node's cgroup"
        assert len(supervisor.running_pids(settings.work)) == 7
        again = _boutique("cluster", "up", timeout=60)
        assert again.returncode == 1 and "already up" in again.stderr, "a second `up` must refuse, not start twice"
    finally:
        down = _boutique("cluster", "down", timeout=300)
    assert down.returncode == 0, f"`boutique cluster down` failed:\n{down.stdout}\n{down.stderr}"
    assert node.leftovers(settings) == []
    assert host.node_processes(settings) == [] and host.shim_pids(settings) == set()
    assert not host.link_exists(settings.bridge)
    assert host.kube_chains() == {}
    assert host.mounts_under(settings.work) == []
    assert not settings.work.exists()
    assert _netns() <= before_netns, f"pod network namespaces left: {_netns() - before_netns}"
    status = _boutique("cluster", "status", timeout=60)
    assert status.returncode == 1 and "no test node is up" in status.stdout


def test_missing_binaries_say_how_to_build_or_provide_them(tmp_path: Path) -> None:
    require_node_host()
    result = _boutique("cluster", "up", env={"KUBE_BIN_DIR": str(tmp_path),
                                             "BOUTIQUE_CLUSTER_DIR": str(tmp_path / "w")})
    assert result.returncode == 1
    assert f"KUBE_BIN_DIR={tmp_path} lacks kube-apiserver" in result.stderr
    assert "unset it to build them" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_named(tmp_path: Path, node_binaries: None) -> None:
    import socket

    from boutique.dev import supervisor
    from boutique.dev.cluster.settings import Settings

    if supervisor.supervisor_pid(Settings.from_env().work) is not None:
        pytest.skip("a test node is already up on this machine")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _boutique("cluster", "up", env={"BOUTIQUE_CLUSTER_PORT_ETCD_CLIENT": str(port),
                                                 "BOUTIQUE_CLUSTER_DIR": str(tmp_path / "w")}, timeout=120)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} for etcd (client) is in use" in result.stderr
    assert "Traceback" not in result.stderr
    from boutique.dev.cluster import node

    assert node.leftovers(Settings.from_env()) == [], "a failed `up` must take down what it started"


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    result = _boutique("cluster", "status", env={"BOUTIQUE_CLUSTER_POD_CIDR": "8.8.0.0/16"}, timeout=30)
    assert result.returncode == 1
    assert "BOUTIQUE_CLUSTER_POD_CIDR=8.8.0.0/16 must be a private IPv4 network" in result.stderr
    result = _boutique("cluster", "status", env={"BOUTIQUE_CLUSTER_PORT_APISERVER": "http"}, timeout=30)
    assert result.returncode == 1 and "BOUTIQUE_CLUSTER_PORT_APISERVER='http' is not a port number" in result.stderr
