"""Pods on the real node: our image pulled from the loopback registry by digest runs as uid 1000 on a
read-only root filesystem with its native gRPC probes passing; Pod Security "restricted" refuses a
privileged pod; a pod finds a Service by name through CoreDNS and reaches it through kube-proxy."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import exec_in, pod_logs_when_done
from testkit import wait_until

pytestmark = [pytest.mark.timeout(2700), pytest.mark.slow, pytest.mark.cluster]

NAMESPACE = "node-checks"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
SECURE = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.fixture(scope="module")
def namespace(core: Any) -> Any:
    from kubernetes import client

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE, labels=RESTRICTED)))
    yield NAMESPACE
    core.delete_namespace(NAMESPACE)
    wait_until(f"namespace {NAMESPACE} deleted", lambda: NAMESPACE not in
               [n.metadata.name for n in core.list_namespace().items], timeout=120)


@pytest.fixture(scope="module")
def currency(kube: Any, core: Any, apps: Any, namespace: str, image_refs: dict[str, str]) -> str:
    """currencyservice from its pushed digest, behind a Service with a ready endpoint, Ready through
    its gRPC probe."""
    image = image_refs["currencyservice"]
    assert "@sha256:" in image and image.startswith("127.0.0.1:")
    labels = {"app": "currency"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "currency"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"automountServiceAccountToken": False, "containers": [{
                "name": "server", "image": image, "env": [{"name": "PORT", "value": "7000"}],
                "ports": [{"containerPort": 7000, "name": "grpc"}],
                "readinessProbe": {"grpc": {"port": 7000}, "periodSeconds": 2},
                "securityContext": SECURE,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                "volumes": [{"name": "tmp", "emptyDir": {}}]}}}}
    apps.create_namespaced_deployment(namespace, deployment)
    core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "currencyservice"},
        "spec": {"selector": labels, "ports": [{"name": "grpc", "port": 7000, "targetPort": 7000}]}})

    def available() -> bool:
        dep = apps.read_namespaced_deployment("currency", namespace)
        return (dep.status.available_replicas or 0) >= 1

    wait_until("currency Deployment Available (image pulled from the loopback registry, gRPC probe passing)",
               available, timeout=240)

    def ready_endpoint() -> bool:  # the EndpointSlice controller lists the pod after it is Ready
        from kubernetes import client

        slices = client.DiscoveryV1Api(kube).list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=currencyservice").items
        return any(e.conditions and e.conditions.ready for s in slices for e in (s.endpoints or []))

    wait_until("the currencyservice Service lists the pod as a ready endpoint", ready_endpoint, timeout=60)
    return image


def _pod(core: Any, namespace: str, selector: str) -> Any:
    return core.list_namespaced_pod(namespace, label_selector=selector).items[0]


def test_our_image_runs_as_uid_1000_on_a_read_only_root(kube: Any, core: Any, namespace: str, currency: str) -> None:
    pod = _pod(core, namespace, "app=currency")
    status = pod.status.container_statuses[0]
    assert status.ready and status.image_id.endswith(currency.split("@", 1)[1]), (status.image_id, currency)
    code, out = exec_in(kube, namespace, pod.metadata.name, ["id", "-u"])
    assert (code, out.strip()) == (0, "1000")
    code, out = exec_in(kube, namespace, pod.metadata.name, ["sh", "-c", "touch /probe 2>&1; echo rc=$?"])
    assert "Read-only file system" in out and "rc=1" in out, out
    code, out = exec_in(kube, namespace, pod.metadata.name, ["sh", "-c", "touch /tmp/probe && echo writable"])
    assert "writable" in out, "the emptyDir /tmp must stay writable"


def test_pod_security_restricted_refuses_a_privileged_pod(core: Any, namespace: str, currency: str) -> None:
    from kubernetes.client.rest import ApiException

    privileged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"}, "spec": {
        "containers": [{"name": "x", "image": currency, "securityContext": {"privileged": True}}]}}
    for ns in (namespace, "kube-system"):
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(ns, privileged)
        assert refused.value.status == 403
        body = json.loads(refused.value.body)
        assert 'violates PodSecurity "restricted:latest"' in body["message"], body["message"]
        assert "privileged" in body["message"]


def python_pod_log(core: Any, namespace: str, name: str, image: str, script: str) -> str:
    """Run a Python script in a restricted one-off pod of our image; its log once it succeeded."""
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [{
            "name": "client", "image": image, "command": ["python3", "-c", script], "securityContext": SECURE}]}})
    return pod_logs_when_done(core, namespace, name)


def test_a_pod_finds_a_service_by_name_and_reaches_it_through_kube_proxy(
        core: Any, namespace: str, currency: str) -> None:
    fqdn = f"currencyservice.{namespace}.svc.cluster.local"
    script = (
        "import json, socket, subprocess, sys\n"
        f"print('resolved', socket.gethostbyname('{fqdn}'))\n"
        "print('short', socket.gethostbyname('currencyservice'))\n"
        # kube-proxy writes the Service's rules a moment after the endpoint appears: up to 15 tries
        "import time\n"
        "for attempt in range(15):\n"
        "    out = subprocess.run([sys.executable, '-m', 'boutique.tools.grpcprobe', '--target',"
        f" 'currencyservice={fqdn}:7000', '--modes', 'plaintext'], capture_output=True, text=True).stdout\n"
        "    result = json.loads(out)['results'][0]\n"
        "    if result['ok']:\n"
        "        break\n"
        "    time.sleep(1)\n"
        "print('probe', json.dumps(result))\n")
    log = python_pod_log(core, namespace, "dns-client", currency, script)
    service_ip = core.read_namespaced_service("currencyservice", namespace).spec.cluster_ip
    assert f"resolved {service_ip}" in log and f"short {service_ip}" in log, log
    probe = json.loads(log.split("probe ", 1)[1].splitlines()[0])
    assert probe["ok"] and probe["status"] == "SERVING", probe


def test_a_pod_has_no_way_out_of_the_machine(core: Any, namespace: str, currency: str) -> None:
    """The pod's routes cover only the pod network and the Service network (no default route: the
    node's firewall also drops anything forwarded elsewhere), and names outside the cluster do not
    resolve (CoreDNS forwards nothing). Checked without sending a packet anywhere else."""
    script = (
        "import socket\n"
        "for line in open('/proc/net/route').read().splitlines()[1:]:\n"
        "    f = line.split()\n"
        "    print('route', socket.inet_ntoa(bytes.fromhex(f[1])[::-1]), socket.inet_ntoa(bytes.fromhex(f[7])[::-1]))\n"
        "try:\n"
        "    socket.gethostbyname('example.com')\n"
        "    print('resolved')\n"
        "except OSError:\n"
        "    print('unresolved')\n")
    log = python_pod_log(core, namespace, "egress-client", currency, script)
    routes = sorted(line.split()[1:] for line in log.splitlines() if line.startswith("route "))
    from boutique.dev.cluster.settings import Settings

    settings = Settings.from_env()
    assert routes == sorted([[str(settings.pod_cidr.network_address), str(settings.pod_cidr.netmask)],
                             [str(settings.service_cidr.network_address), str(settings.service_cidr.netmask)]]), log
    assert "unresolved" in log, log
