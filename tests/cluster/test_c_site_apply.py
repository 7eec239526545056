"""site.yml in apply mode on the real test node (inventories/testnode): the AWS stage on moto, the
images pushed to the loopback registry, and the Kubernetes stage applied for real. Every Deployment
becomes available with its native gRPC probes passing through the kubelet, every object the roles
make is accepted by the API server (with Istio's and prometheus-operator's CRDs, strict field
validation), a second run changes nothing, and drift made by hand is reported by --check --diff and
put right by a normal run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TESTNODE_INVENTORY, exec_in
from testkit import ROOT, PlaybookRun, run_playbook, wait_until

pytestmark = [pytest.mark.timeout(2700), pytest.mark.slow, pytest.mark.cluster]

NAMESPACE = "boutique"
TIMINGS: dict[str, float] = {}


def _catalog() -> list[dict[str, Any]]:
    """The deployed catalog entries (the testnode inventory sets one replica for every service)."""
    data = yaml.safe_load((ROOT / "group_vars/all/catalog.yml").read_text())
    return [s for s in data["boutique_services"] if s.get("deploy", True)]


def _site(*extra: str, timeout: float = 2400) -> tuple[PlaybookRun, float]:
    start = time.monotonic()
    run = run_playbook("site.yml", inventory=TESTNODE_INVENTORY, timeout=timeout, extra_args=extra)
    return run, time.monotonic() - start


@pytest.fixture(scope="module")
def first_run(test_node: Any, image_refs: dict[str, str]) -> PlaybookRun:
    run, seconds = _site()
    TIMINGS["site_first_run_s"] = round(seconds, 1)
    return run.assert_ok()


@pytest.fixture(scope="module")
def second_run(first_run: PlaybookRun) -> PlaybookRun:
    run, seconds = _site()
    TIMINGS["site_second_run_s"] = round(seconds, 1)
    return run.assert_ok()


def test_site_yml_deploys_the_whole_shop_on_the_node(first_run: PlaybookRun, apps: Any, core: Any,
                                                      image_refs: dict[str, str]) -> None:
    assert "Helm charts are off here (boutique_helm_charts=false): skipping istio-base" in first_run.flat
    assert "Helm charts are off here (boutique_helm_charts=false): skipping kube-prometheus-stack" in first_run.flat
    refs = json.loads((ROOT / "rendered/testnode/images.json").read_text())
    names = [s["name"] for s in _catalog()] + ["redis-cart"]
    for name in names:
        dep = apps.read_namespaced_deployment(name, NAMESPACE)
        assert (dep.status.available_replicas or 0) >= 1, f"{name} is not available: {dep.status}"
        image = dep.spec.template.spec.containers[0].image
        assert image == refs[name] and image.startswith("127.0.0.1:5055/") and "@sha256:" in image, (name, image)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/part-of=boutique").items
    assert {p.metadata.labels["app.kubernetes.io/name"] for p in pods} == set(names)
    for pod in pods:
        status = pod.status.container_statuses[0]
        assert status.ready and status.restart_count == 0, (pod.metadata.name, status)
        assert status.image_id.endswith(refs[pod.metadata.labels["app.kubernetes.io/name"]].split("@", 1)[1])
    ready_at = max(c.last_transition_time for p in pods for c in p.status.conditions if c.type == "Ready")
    started_at = min(p.metadata.creation_timestamp for p in pods)
    TIMINGS["pods_ready_after_first_pod_s"] = round((ready_at - started_at).total_seconds(), 1)


def test_native_grpc_probes_pass_through_the_kubelet(first_run: PlaybookRun, apps: Any) -> None:
    for svc in _catalog():
        container = apps.read_namespaced_deployment(svc["name"], NAMESPACE).spec.template.spec.containers[0]
        for probe in (container.startup_probe, container.readiness_probe, container.liveness_probe):
            if svc["protocol"] == "grpc":
                # App mTLS: the kubelet has no client certificate, so it probes the health-only port.
                assert probe.grpc is not None and probe.grpc.port != svc["port"], (svc["name"], probe)
            else:
                assert probe.http_get is not None or probe.tcp_socket is not None, (svc["name"], probe)


def test_a_second_run_changes_nothing(second_run: PlaybookRun) -> None:
    assert second_run.recap["changed"] == 0, second_run.changed_tasks


def test_every_object_the_roles_make_is_in_the_cluster(first_run: PlaybookRun, kube: Any, tmp_path: Path) -> None:
    """Render the same inventory, then find each rendered object live: the API server took them all."""
    from kubernetes.dynamic import DynamicClient

    run_playbook("playbooks/site/kubernetes.yml", {"boutique_k8s_mode": "render",
                                                   "boutique_render_dir": str(tmp_path)},
                 inventory=TESTNODE_INVENTORY, timeout=900).assert_ok()
    objects = [o for f in sorted(tmp_path.rglob("*.yaml")) if "helm" not in f.parts
               for o in yaml.safe_load_all(f.read_text()) if o and o.get("kind") != "CustomResourceDefinition"]
    kinds = {o["kind"] for o in objects}
    assert {"PeerAuthentication", "AuthorizationPolicy", "DestinationRule", "VirtualService", "Gateway", "Telemetry",
            "PodMonitor", "ServiceMonitor", "PrometheusRule", "NetworkPolicy", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Deployment", "Service", "ServiceAccount", "Namespace"} <= kinds
    client = DynamicClient(kube)
    missing = []
    for obj in objects:
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        try:
            resource.get(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))
        except Exception as exc:  # NotFoundError and friends: report them all at once
            missing.append(f"{obj['kind']}/{obj['metadata']['name']}: {type(exc).__name__}")
    assert not missing, missing
    TIMINGS["objects_accepted"] = len(objects)


def test_unknown_fields_are_refused_not_pruned(first_run: PlaybookRun, tmp_path: Path) -> None:
    """Server-side apply validates strictly: a field the CRD's schema lacks fails the run."""
    # Beside the other playbooks, so that playbooks/group_vars applies as it does to theirs.
    playbook = ROOT / "playbooks" / f".pytest-strict-{tmp_path.name}.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Apply an object with a misspelt field", "hosts": "boutique", "gather_facts": False,
        "tasks": [{"name": "Apply it", "ansible.builtin.include_role": {"name": "k8s_objects"}, "vars": {
            "k8s_objects_list": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                                  "metadata": {"name": "strict-check", "namespace": NAMESPACE},
                                  "spec": {"mtls": {"mode": "STRICT", "mdoe": "PERMISSIVE"}}}]}}]}]))
    try:
        run = run_playbook(str(playbook), inventory=TESTNODE_INVENTORY, env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles")})
    finally:
        playbook.unlink()
    run.assert_failed_with(".spec.mtls.mdoe: field not declared in schema")


def test_the_shop_namespace_enforces_pod_security_restricted(first_run: PlaybookRun, core: Any) -> None:
    from kubernetes.client.rest import ApiException

    refs = json.loads((ROOT / "rendered/testnode/images.json").read_text())
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(NAMESPACE, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "escalate"},
                                               "spec": {"containers": [{"name": "x", "image": refs["frontend"],
                                                                        "securityContext": {"privileged": True}}]}})
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]  # the body is a JSON Status
    assert 'violates PodSecurity "restricted:latest"' in message and "privileged" in message, message


def test_drift_by_hand_is_reported_in_check_mode_and_put_right(second_run: PlaybookRun, apps: Any, kube: Any) -> None:
    from kubernetes import client

    autoscaling = client.AutoscalingV2Api(kube)
    # By hand: an edited environment value and a scaled autoscaler (another field manager).
    dep = apps.read_namespaced_deployment("currencyservice", NAMESPACE)
    env = [{"name": e.name, "value": "99" if e.name == "SHUTDOWN_GRACE_SECONDS" else e.value}
           for e in dep.spec.template.spec.containers[0].env]
    apps.patch_namespaced_deployment("currencyservice", NAMESPACE, {"spec": {"template": {"spec": {
        "containers": [{"name": "server", "env": env}]}}}}, field_manager="kubectl-edit")
    autoscaling.patch_namespaced_horizontal_pod_autoscaler("frontend", NAMESPACE, {"spec": {"minReplicas": 2}},
                                                           field_manager="kubectl-edit")
    checked, _ = _site("--check", "--diff", "--tags", "kubernetes")
    checked.assert_ok()
    # Two services drifted: the apply of each reports the change its dry run found (server-side apply
    # in check mode returns no diff text, so the count is what shows it).
    assert checked.recap["changed"] == 2, checked.changed_tasks
    env_checked = {e.name: e.value for e in
                   apps.read_namespaced_deployment("currencyservice", NAMESPACE).spec.template.spec.containers[0].env}
    assert env_checked["SHUTDOWN_GRACE_SECONDS"] == "99", "check mode must not change anything"
    fixed, _ = _site("--tags", "kubernetes")
    assert fixed.assert_ok().recap["changed"] == 2
    env_now = {e.name: e.value for e in
               apps.read_namespaced_deployment("currencyservice", NAMESPACE).spec.template.spec.containers[0].env}
    assert env_now["SHUTDOWN_GRACE_SECONDS"] == "10"
    assert autoscaling.read_namespaced_horizontal_pod_autoscaler("frontend", NAMESPACE).spec.min_replicas == 1
    wait_until("currencyservice rolled back out", lambda: (apps.read_namespaced_deployment(
        "currencyservice", NAMESPACE).status.unavailable_replicas or 0) == 0, timeout=180)


def test_the_cart_lives_in_the_in_cluster_redis(second_run: PlaybookRun, core: Any, kube: Any) -> None:
    import http.cookiejar
    import urllib.request

    frontend = core.read_namespaced_service("frontend", NAMESPACE)
    url = f"http://{frontend.spec.cluster_ip}:{frontend.spec.ports[0].port}"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(url + "/", timeout=15).read()
    opener.open(urllib.request.Request(url + "/cart", data=b"product_id=OLJCESPC7Z&quantity=3", method="POST"),
                timeout=15).read()
    session = next(c.value for c in jar if c.name == "shop_session-id")
    redis_pod = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=redis-cart").items[0]
    # The original's layout: one hash per user id, the serialized Cart in its `data` field.
    code, out = exec_in(kube, NAMESPACE, redis_pod.metadata.name, ["redis-cli", "--raw", "HGETALL", session])
    assert code == 0 and "data" in out and "OLJCESPC7Z" in out, out


@pytest.fixture(scope="module", autouse=True)
def report_timings() -> Any:
    """After the module: what it measured (site.yml first and second run, pods Ready), printed and
    written to artifacts/testnode-site.json for the closing notes."""
    yield
    print(f"\nsite.yml on the test node: {json.dumps(TIMINGS)}")
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "testnode-site.json").write_text(json.dumps(TIMINGS, indent=1))
