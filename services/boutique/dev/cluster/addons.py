"""The node's own cluster add-on: CoreDNS (a Deployment of our one-layer image of the CoreDNS
binary) behind the kube-dns Service. It answers only the cluster's names: no upstream forwarding,
so no DNS query ever leaves the machine. kube-system enforces Pod Security "restricted"."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boutique.dev.cluster.oci import Image
from boutique.dev.cluster.settings import ClusterError, Settings

COREDNS_IMAGE = "docker.io/boutique/coredns:{version}"
COREDNS_PORT = 1053  # unprivileged: the container runs without any capability
FIELD_MANAGER = "boutique-cluster"


def coredns_image(coredns_bin: Path, version: str) -> Image:
    return Image(name=COREDNS_IMAGE.format(version=version), files={"/coredns": coredns_bin / "coredns"},
                 entrypoint=["/coredns"], labels={"org.opencontainers.image.title": "coredns (boutique test node)"})


def corefile(s: Settings) -> str:
    return f""".:{COREDNS_PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {s.cluster_domain} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
"""


def coredns_objects(s: Settings, version: str) -> list[dict[str, Any]]:
    ns = "kube-system"
    labels = {"k8s-app": "kube-dns", "app.kubernetes.io/name": "coredns",
              "app.kubernetes.io/part-of": "boutique-test-node"}
    restricted = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                  "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns,
                                                                     "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "boutique:coredns", "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "boutique:coredns", "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "boutique:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
         "data": {"Corefile": corefile(s)}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": "coredns", "priorityClassName": "system-cluster-critical",
                      "dnsPolicy": "Default", "enableServiceLinks": False,
                      "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [{
                          "name": "coredns", "image": COREDNS_IMAGE.format(version=version),
                          "imagePullPolicy": "Never", "args": ["-conf", "/etc/coredns/Corefile"],
                          "ports": [{"name": "dns", "containerPort": COREDNS_PORT, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": COREDNS_PORT, "protocol": "TCP"}],
                          "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                          "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                          "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                          "securityContext": restricted,
                          "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}]}],
                      "volumes": [{"name": "config", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
         "spec": {"clusterIP": s.dns_service_ip, "selector": {"k8s-app": "kube-dns"}, "ports": [
             {"name": "dns", "port": 53, "targetPort": COREDNS_PORT, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": COREDNS_PORT, "protocol": "TCP"}]}},
    ]


def api(s: Settings) -> Any:
    """A dynamic client on the admin kubeconfig."""
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(config.new_client_from_config(str(s.admin_kubeconfig)))


def apply(client: Any, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.server_side_apply(body=obj, name=obj["metadata"]["name"],
                                   namespace=obj["metadata"].get("namespace"),
                                   field_manager=FIELD_MANAGER, force_conflicts=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Callable[[str], None]) -> float:
    """Poll `check` every second for at most `timeout` seconds; returns the seconds it took."""
    start = time.monotonic()
    last_error = ""
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception as exc:
            last_error = f" (last error: {str(exc).splitlines()[0][:200]})"
        time.sleep(1)
    raise ClusterError(f"{what} did not happen within {timeout:.0f}s{last_error}")


def node_ready(client: Any, s: Settings) -> bool:
    node = client.resources.get(api_version="v1", kind="Node").get(name=s.node_name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def deployment_available(client: Any, namespace: str, name: str) -> bool:
    dep = client.resources.get(api_version="apps/v1", kind="Deployment").get(name=name, namespace=namespace)
    return any(c.type == "Available" and c.status == "True" for c in (dep.status.conditions or []))


def restrict_kube_system(client: Any) -> None:
    apply(client, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system", "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}])


def install(s: Settings, version: str, log: Callable[[str], None]) -> dict[str, float]:
    client = api(s)
    timings = {"node_ready": wait_for(f"node {s.node_name} Ready", lambda: node_ready(client, s), 120, log)}
    restrict_kube_system(client)
    apply(client, coredns_objects(s, version))
    timings["coredns_available"] = wait_for(
        "CoreDNS Available", lambda: deployment_available(client, "kube-system", "coredns"), 180, log)
    return timings
