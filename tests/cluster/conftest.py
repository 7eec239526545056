"""Fixtures for the tests on the real test node (`boutique cluster`): the node itself, API clients,
and the service images in the loopback registry (the images stage of the test-node inventory)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import IN_CI, ROOT, require_tool, run_playbook, wait_until

TESTNODE_INVENTORY = "inventories/testnode"


def _settings():
    from boutique.dev.cluster.settings import Settings

    return Settings.from_env()


def require_node_host() -> None:
    """The node needs root and the Debian programs of scripts/system-deps.sh."""
    if os.geteuid() != 0:
        message = "the test node needs root (network namespaces, cgroups, iptables)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    for tool, why in (("containerd", "the node's container runtime"), ("etcd", "the node's store"),
                      ("iptables", "kube-proxy"), ("catatonit", "the pod sandbox")):
        require_tool(tool, why)


@pytest.fixture(scope="session")
def node_binaries() -> None:
    """The Go binaries: built once into the cache (minutes the first time), reused afterwards."""
    require_node_host()
    from boutique.dev import gotools

    for tool in ("kube", "coredns"):
        try:
            gotools.ensure(tool)
        except gotools.GoToolError as exc:
            pytest.fail(f"cannot build the test node's {tool} binaries: {exc}")


@pytest.fixture(scope="session")
def test_node(node_binaries: None) -> Iterator[Any]:
    """A Ready node for the whole session, taken down (and checked clean) at the end.
    A node someone already brought up is used as it is and left running."""
    from boutique.dev import supervisor
    from boutique.dev.cluster import node

    settings = _settings()
    ours = supervisor.supervisor_pid(settings.work) is None
    if ours:
        node.down(settings, log=lambda _m: None)  # whatever an interrupted run left
        node.up(settings)
    yield settings
    if ours:
        left = node.down(settings)
        assert not left, f"`boutique cluster down` left things behind: {left}"


@pytest.fixture(scope="session")
def kube(test_node: Any) -> Any:
    """kubernetes.client ApiClient on the node's admin kubeconfig."""
    from kubernetes import config

    return config.new_client_from_config(str(test_node.admin_kubeconfig))


@pytest.fixture(scope="session")
def core(kube: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(kube)


@pytest.fixture(scope="session")
def apps(kube: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(kube)


@pytest.fixture(scope="session")
def image_refs(test_node: Any, docker_engine: None) -> dict[str, str]:
    """Every deployable service's image in the loopback registry, by digest (the images stage of the
    test-node inventory: builds what changed, pushes what is missing, writes images.json)."""
    run = run_playbook("playbooks/site/images.yml", inventory=TESTNODE_INVENTORY, timeout=1800).assert_ok()
    refs_file = ROOT / "rendered" / "testnode" / "images.json"
    assert refs_file.is_file(), f"the images stage wrote no {refs_file}:\n{run.output[-2000:]}"
    refs = json.loads(refs_file.read_text())
    assert refs, "the images stage recorded no image"
    return refs


def pod_logs_when_done(core: Any, namespace: str, name: str, timeout: float = 120) -> str:
    """Wait for a pod to finish; return its log (the failure shows the phase and the log)."""
    def done() -> Any:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    pod = wait_until(f"pod {namespace}/{name} finished", done, timeout=timeout)
    log = core.read_namespaced_pod_log(name, namespace)
    assert pod.status.phase == "Succeeded", f"pod {name} ended {pod.status.phase}:\n{log}"
    return log


def exec_in(kube: Any, namespace: str, pod: str, command: list[str]) -> tuple[int, str]:
    """Run a command in a pod through the API server and the kubelet (exec); (status, output)."""
    from kubernetes import client
    from kubernetes.stream import stream

    resp = stream(client.CoreV1Api(kube).connect_get_namespaced_pod_exec, pod, namespace, command=command,
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=60)
    status = resp.returncode  # reads the error channel: before the output is drained
    output = (resp.read_stdout() or "") + (resp.read_stderr() or "")
    resp.close()
    return int(status if status is not None else -1), output


def repo_path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)
