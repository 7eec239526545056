"""The runbooks, live, in apply mode against the shop site.yml deployed on the test node. Each one
does what its README row says, and running it again the same way changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTNODE_INVENTORY, exec_in
from testkit import ROOT, PlaybookRun, run_playbook, wait_until

pytestmark = [pytest.mark.timeout(2700), pytest.mark.slow, pytest.mark.cluster]

NAMESPACE = "boutique"
# What the API server manages itself: left out when comparing objects before and after.
VOLATILE = {"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "status",
            "deployment.kubernetes.io/revision"}


SERVICE_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
                 ("policy/v1", "PodDisruptionBudget"), ("networking.istio.io/v1", "DestinationRule"),
                 ("networking.istio.io/v1", "VirtualService"))


def runbook(name: str, extra: dict[str, Any] | None = None, *, check: bool = False,
            timeout: float = 900) -> PlaybookRun:
    return run_playbook(f"playbooks/{name}.yml", extra, inventory=TESTNODE_INVENTORY, check=check, timeout=timeout)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def snapshot(kube: Any, service: str) -> dict[str, Any]:
    """Every object of one service, as the API returns it, minus what the server manages."""
    from kubernetes.dynamic import DynamicClient

    client = DynamicClient(kube)
    found = {}
    for api_version, kind in SERVICE_KINDS:
        items = client.resources.get(api_version=api_version, kind=kind).get(
            namespace=NAMESPACE, label_selector=f"app.kubernetes.io/name={service}").items
        for item in items:
            found[f"{kind}/{item.metadata.name}"] = _clean(item.to_dict())
    return found


@pytest.fixture(scope="module")
def shop(test_node: Any, image_refs: dict[str, str], apps: Any) -> dict[str, str]:
    """The shop's image by Deployment name, as site.yml leaves it: test_c_site_apply deployed it;
    run alone, this deploys it. (images.json also holds Jaeger's image and the SBOMs.)"""
    from boutique import service_catalog as catalog_mod

    cat = catalog_mod.default()
    names = {s.name for s in cat.services.values() if s.deploy} | {cat.redis.name}  # the shop's Deployments
    refs = json.loads((ROOT / "rendered/testnode/images.json").read_text())
    deployed = {d.metadata.name for d in apps.list_namespaced_deployment(NAMESPACE).items
                if (d.status.available_replicas or 0) >= 1} if NAMESPACE in _namespaces(apps) else set()
    if not names <= deployed:
        run_playbook("playbooks/site/kubernetes.yml", inventory=TESTNODE_INVENTORY, timeout=1800).assert_ok()
    return {name: refs[name] for name in sorted(names)}


def _namespaces(apps: Any) -> set[str]:
    from kubernetes import client

    return {n.metadata.name for n in client.CoreV1Api(apps.api_client).list_namespace().items}


def test_status_reports_the_live_state(shop: dict[str, str]) -> None:
    run = runbook("status").assert_ok()
    assert run.changed == 0
    assert "live cluster, namespace boutique" in run.output
    for name in shop:
        assert name in run.output
    assert "Pods not ready or restarting: none" in run.output


def test_smoke_test_places_an_order_through_the_frontend_service(shop: dict[str, str]) -> None:
    start = time.monotonic()
    run = runbook("smoke-test").assert_ok()
    seconds = time.monotonic() - start
    assert "smoke test PASSED against http://10." in run.flat, run.output[-2000:]
    assert "its confirmation is in the email log" in run.flat
    print(f"\nsmoke-test runbook on the node: {seconds:.1f}s in all; {run.flat.split('the order took ')[1][:10]}")


def test_the_smoke_order_is_one_trace_in_the_in_cluster_collector(shop: dict[str, str], core: Any) -> None:
    """Tracing is on for the test node: every service exports to the Jaeger Deployment, and the
    order the smoke test placed is one trace across the services of the checkout."""
    import urllib.request

    runbook("smoke-test").assert_ok()
    jaeger = core.read_namespaced_service("jaeger-collector", "monitoring")
    query = next(p.port for p in jaeger.spec.ports if p.name == "http-query")
    url = f"http://{jaeger.spec.cluster_ip}:{query}/api/traces?service=checkoutservice&lookback=15m&limit=50"
    wanted = {"frontend", "checkoutservice", "cartservice", "productcatalogservice", "currencyservice",
              "shippingservice", "paymentservice", "emailservice"}

    def one_trace_with_all() -> Any:
        with urllib.request.urlopen(url, timeout=10) as resp:
            traces = json.load(resp)["data"] or []
        return next((t for t in traces if wanted <= {p["serviceName"] for p in t["processes"].values()}), None)

    trace = wait_until("a trace holding every service of the order", one_trace_with_all, timeout=60, interval=2)
    assert len(trace["spans"]) >= len(wanted)


def test_rollout_restart_replaces_pods_one_at_a_time_within_the_pdb(shop: dict[str, str], apps: Any,
                                                                    core: Any) -> None:
    before = {p.metadata.name for p in core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name=currencyservice").items}
    lowest: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest.append(apps.read_namespaced_deployment("currencyservice", NAMESPACE).status.available_replicas or 0)
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        run = runbook("rollout-restart", {"restart_service": "currencyservice", "restart_stamp": stamp}).assert_ok()
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert run.changed >= 1
    after = {p.metadata.name for p in core.list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name=currencyservice").items
        if p.metadata.deletion_timestamp is None}
    assert after and not (after & before), (before, after)
    assert lowest and min(lowest) >= 1, f"availability dropped below the PDB's minAvailable: {lowest}"
    again = runbook("rollout-restart", {"restart_service": "currencyservice", "restart_stamp": stamp}).assert_ok()
    assert again.changed == 0, "the same restart stamp again must change nothing"


def test_scale_moves_the_autoscaler_floor_and_refuses_below_the_pdb(shop: dict[str, str], apps: Any,
                                                                     kube: Any) -> None:
    from kubernetes import client

    hpa = client.AutoscalingV2Api(kube)
    run = runbook("scale", {"scale_service": "frontend", "scale_replicas": 2}).assert_ok()
    assert run.changed >= 1
    assert hpa.read_namespaced_horizontal_pod_autoscaler("frontend", NAMESPACE).spec.min_replicas == 2
    wait_until("two frontend pods available", lambda: (apps.read_namespaced_deployment(
        "frontend", NAMESPACE).status.available_replicas or 0) == 2, timeout=240)
    assert runbook("scale", {"scale_service": "frontend", "scale_replicas": 2}).assert_ok().changed == 0
    runbook("scale", {"scale_service": "frontend", "scale_replicas": 0}).assert_failed_with(
        "refusing to scale to 0: below the PodDisruptionBudget minAvailable of frontend (minAvailable 1)")
    assert runbook("scale", {"scale_service": "frontend", "scale_replicas": 1}).assert_ok().changed >= 1


def test_canary_start_step_promote(shop: dict[str, str], apps: Any, kube: Any) -> None:
    image = shop["currencyservice"]
    start = runbook("canary", {"canary_service": "currencyservice", "canary_image": image,
                               "canary_weight": 10}).assert_ok()
    assert "traffic stable 90% / canary 10%" in start.flat
    assert (apps.read_namespaced_deployment("currencyservice-canary", NAMESPACE).status.available_replicas or 0) >= 1
    assert runbook("canary", {"canary_service": "currencyservice", "canary_image": image,
                              "canary_weight": 10}).assert_ok().changed == 0
    step = runbook("canary", {"canary_service": "currencyservice", "canary_weight": 50}).assert_ok()
    assert "traffic stable 50% / canary 50%" in step.flat
    promote = runbook("canary", {"canary_service": "currencyservice", "canary_action": "promote"}).assert_ok()
    assert "promoted" in promote.flat
    assert "currencyservice-canary" not in [d.metadata.name for d in apps.list_namespaced_deployment(NAMESPACE).items]
    assert apps.read_namespaced_deployment("currencyservice", NAMESPACE).spec.template.spec.containers[0].image == image


def test_canary_start_then_abort_leaves_every_object_as_before(shop: dict[str, str], kube: Any) -> None:
    before = snapshot(kube, "currencyservice")
    runbook("canary", {"canary_service": "currencyservice", "canary_image": shop["currencyservice"],
                       "canary_weight": 20}).assert_ok()
    assert snapshot(kube, "currencyservice") != before
    runbook("canary", {"canary_service": "currencyservice", "canary_action": "abort"}).assert_ok()
    assert snapshot(kube, "currencyservice") == before


def test_fault_injection_on_and_off_restores_the_virtualservice(shop: dict[str, str], kube: Any) -> None:
    before = snapshot(kube, "currencyservice")
    on = {"fault_service": "currencyservice", "fault_type": "delay", "fault_delay": "2s", "fault_percentage": 50}
    assert runbook("fault-injection", on).assert_ok().changed >= 1
    vs = snapshot(kube, "currencyservice")["VirtualService/currencyservice"]
    assert all(route["fault"]["delay"]["fixedDelay"] == "2s" for route in vs["spec"]["http"])
    assert runbook("fault-injection", on).assert_ok().changed == 0
    runbook("fault-injection", {"fault_service": "currencyservice", "fault_state": "absent"}).assert_ok()
    assert snapshot(kube, "currencyservice") == before


def test_rotate_tls_replaces_the_gateway_secret_and_is_idempotent(shop: dict[str, str], core: Any,
                                                                  tmp_path: Path) -> None:
    from boutique.certs import CertificateAuthority

    # Longer than the runbook's tls_min_valid_days (7), which refuses a certificate about to expire.
    ca = CertificateAuthority("rotate-tls test CA", validity=dt.timedelta(days=90))
    issued = ca.issue("shop.testnode.local", dns=("shop.testnode.local",))
    (tmp_path / "fullchain.pem").write_bytes(issued.cert_pem)
    (tmp_path / "privkey.pem").write_bytes(issued.key_pem)
    files = {"tls_cert_file": str(tmp_path / "fullchain.pem"), "tls_key_file": str(tmp_path / "privkey.pem")}
    assert runbook("rotate-tls", files).assert_ok().changed >= 1
    import base64

    secret = core.read_namespaced_secret("boutique-shop-tls", "istio-ingress")
    # Byte for byte, the PEM's final newline included (a file lookup strips it unless told not to).
    assert base64.b64decode(secret.data["tls.crt"]) == issued.cert_pem
    assert base64.b64decode(secret.data["tls.key"]) == issued.key_pem
    assert runbook("rotate-tls", files).assert_ok().changed == 0


def test_backup_and_restore_the_in_cluster_redis_round_trip(shop: dict[str, str], core: Any, kube: Any,
                                                           tmp_path: Path) -> None:
    redis_pod = core.list_namespaced_pod(NAMESPACE,
                                         label_selector="app.kubernetes.io/name=redis-cart").items[0].metadata.name
    exec_in(kube, NAMESPACE, redis_pod, ["redis-cli", "HSET", "backup-test-user", "data", "\x0a\x03abc", "absexp",
                                         "-1", "sldexp", "-1"])
    first = tmp_path / "cart.json"
    assert runbook("backup-cart", {"cart_backup_file": str(first)}).assert_ok().changed >= 1
    doc = json.loads(first.read_text())
    assert "backup-test-user" in {c.get("key") for c in doc["carts"]}
    assert runbook("backup-cart", {"cart_backup_file": str(first)}).assert_ok().changed == 0
    exec_in(kube, NAMESPACE, redis_pod, ["redis-cli", "FLUSHDB"])
    restored = runbook("restore-cart", {"cart_restore_file": str(first)}).assert_ok()
    assert restored.changed >= 1
    second = tmp_path / "again.json"
    runbook("backup-cart", {"cart_backup_file": str(second)}).assert_ok()
    assert json.loads(second.read_text())["carts"] == doc["carts"]
    assert runbook("restore-cart", {"cart_restore_file": str(first)}).assert_ok().changed == 0


def test_verify_mtls_against_the_app_mtls_shop(shop: dict[str, str]) -> None:
    run = runbook("verify-mtls").assert_ok()
    assert run.changed == 0
    assert "mTLS OK on 9 gRPC services (plaintext, tls, foreign, mtls)" in run.flat, run.output[-3000:]
