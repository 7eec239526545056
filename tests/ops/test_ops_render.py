"""The Kubernetes runbooks in render mode (local inventory): what canary, fault
injection, scale, rollout-restart, rotate-tls and status would change, asserted on
the objects they write to <render dir>/ops, validated like the rendered manifests
(kubernetes-validate --strict, Istio CRD schemas, the cross-object lint)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from ops_playbook_lib import ROOT, run_playbook

from boutique import service_catalog as catalog_mod

sys.path.insert(0, str(ROOT / "scripts"))
import istio_crds
import k8s_lint

pytestmark = [pytest.mark.slow, pytest.mark.k8s]

K8S_VERSION = "1.33.0"


@pytest.fixture(scope="module")
def rendered_once(tmp_path_factory) -> Path:
    """site.yml's Kubernetes stage in render mode (istio + microservice), once per module."""
    out = tmp_path_factory.mktemp("ops-render") / "rendered"
    run_playbook("playbooks/site/kubernetes.yml", {"boutique_render_dir": str(out)},
                 extra_args=["--tags", "microservice,istio"], timeout=600).assert_ok()
    assert (out / "microservice" / "currencyservice.yaml").is_file()
    return out


@pytest.fixture
def render_dir(rendered_once, tmp_path) -> Path:
    """A private copy of the rendered tree for one test (the ops playbooks write into it)."""
    target = tmp_path / "rendered"
    shutil.copytree(rendered_once, target)
    return target


def ops(render_dir: Path, playbook: str, check: bool = False, **extra):
    return run_playbook(f"playbooks/{playbook}", {"boutique_render_dir": str(render_dir), **extra}, check=check)


def objects(path: Path) -> list[dict]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def get(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def istio_bundle() -> Path:
    env = os.environ.get("BOUTIQUE_ISTIO_CRDS")
    path = Path(env) if env else ROOT.parent / "shared/istio/crds-1.30.3.yaml"
    if not path.is_file():
        path = istio_crds.bundle_path()
    return path


def assert_valid(objs: list[dict]) -> None:
    """Strict schema validation: built-in kinds and Istio kinds."""
    bundle = istio_bundle()
    for obj in objs:
        if istio_crds.is_istio(obj):
            assert istio_crds.validate(obj, bundle) == [], obj["metadata"]["name"]
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def assert_lint_clean(render_dir: Path, tmp_path: Path) -> None:
    """The cross-object lint on the tree as it would be: ops state replacing the rendered files."""
    effective = tmp_path / "effective"
    shutil.copytree(render_dir, effective, ignore=shutil.ignore_patterns("ops"))
    for state in (render_dir / "ops").glob("*.yaml"):
        if (effective / "microservice" / state.name).exists():
            shutil.copy(state, effective / "microservice" / state.name)
    findings = k8s_lint.lint(k8s_lint.Manifests.load(effective), k8s_lint.Catalog.load())
    # A canary runs as its service (same ServiceAccount = same mesh identity, so the
    # AuthorizationPolicies that admit the service admit its canary): expected, not a defect.
    findings = [f for f in findings if not re.search(r"Deployment \S+-canary: shares ServiceAccount", f)]
    assert findings == []


# ------------------------------------------------------------------- canary
def test_canary_steps_promote_and_stay_valid(render_dir, tmp_path):
    state = render_dir / "ops" / "currencyservice.yaml"
    image = "registry.local:5000/boutique/currencyservice:2.0.0"
    ops(render_dir, "canary.yml", canary_service="currencyservice", canary_image=image, canary_weight=25).assert_ok()
    objs = objects(state)
    canary = get(objs, "Deployment", "currencyservice-canary")
    stable = get(objs, "Deployment", "currencyservice")
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert canary["spec"]["template"]["metadata"]["labels"]["version"] == "canary"
    assert canary["spec"]["selector"]["matchLabels"]["version"] == "canary"
    assert canary["spec"]["template"]["spec"]["serviceAccountName"] == "currencyservice"
    assert stable["spec"]["template"]["metadata"]["labels"]["version"] == "stable"
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] != image
    subsets = {s["name"]: s["labels"] for s in get(objs, "DestinationRule", "currencyservice")["spec"]["subsets"]}
    assert subsets == {"stable": {"version": "stable"}, "canary": {"version": "canary"}}
    routes = get(objs, "VirtualService", "currencyservice")["spec"]["http"]
    assert routes, "the VirtualService has routes"
    for http in routes:
        assert [(r["destination"]["subset"], r["weight"]) for r in http["route"]] == [("stable", 75), ("canary", 25)]
    assert_valid(objs)
    assert_lint_clean(render_dir, tmp_path)

    same = ops(render_dir, "canary.yml", canary_service="currencyservice", canary_image=image, canary_weight=25)
    assert same.assert_ok().changed == 0, "the same canary step twice must change nothing"

    ops(render_dir, "canary.yml", canary_service="currencyservice", canary_weight=60,
        canary_stable_weight=40).assert_ok()
    objs = objects(state)
    canary = get(objs, "Deployment", "currencyservice-canary")
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == image
    for http in get(objs, "VirtualService", "currencyservice")["spec"]["http"]:
        assert [r["weight"] for r in http["route"]] == [40, 60]

    ops(render_dir, "canary.yml", canary_service="currencyservice", canary_action="promote").assert_ok()
    objs = objects(state)
    assert not [o for o in objs if o["metadata"]["name"] == "currencyservice-canary"]
    assert get(objs, "Deployment", "currencyservice")["spec"]["template"]["spec"]["containers"][0]["image"] == image
    for http in get(objs, "VirtualService", "currencyservice")["spec"]["http"]:
        assert [(r["destination"]["subset"], r["weight"]) for r in http["route"]] == [("stable", 100), ("canary", 0)]
    assert_valid(objs)

    status = ops(render_dir, "status.yml").assert_ok()
    assert status.changed == 0
    assert f"currencyservice -/2 {image}" in status.flat
    assert "Changed by ops playbooks: currencyservice" in status.flat


def test_canary_abort_restores_100_0_and_removes_the_canary(render_dir):
    state = render_dir / "ops" / "cartservice.yaml"
    ops(render_dir, "canary.yml", canary_service="cartservice", canary_image="example.org/cart:rc1",
        canary_weight=10).assert_ok()
    before_image = get(objects(render_dir / "microservice" / "cartservice.yaml"), "Deployment",
                       "cartservice")["spec"]["template"]["spec"]["containers"][0]["image"]
    aborted = ops(render_dir, "canary.yml", canary_service="cartservice", canary_action="abort").assert_ok()
    objs = objects(state)
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"] == ["cartservice"]
    assert get(objs, "Deployment", "cartservice")["spec"]["template"]["spec"]["containers"][0]["image"] == before_image
    for http in get(objs, "VirtualService", "cartservice")["spec"]["http"]:
        assert [(r["destination"]["subset"], r["weight"]) for r in http["route"]] == [("stable", 100), ("canary", 0)]
    assert "traffic stable 100% / canary 0%" in aborted.flat
    again = ops(render_dir, "canary.yml", canary_service="cartservice", canary_action="abort").assert_ok()
    assert again.changed == 0


def test_canary_validates_its_inputs(render_dir):
    ops(render_dir, "canary.yml", canary_service="currencysvc", canary_image="x/y:1",
        canary_weight=10).assert_failed_with("unknown service(s): currencysvc", "currencyservice, cartservice")
    ops(render_dir, "canary.yml", canary_service="currencyservice", canary_image="x/y:1", canary_weight=30,
        canary_stable_weight=60).assert_failed_with("weights must sum to 100: stable 60 + canary 30 = 90")
    ops(render_dir, "canary.yml", canary_service="currencyservice", canary_image="x/y:1",
        canary_weight=120).assert_failed_with("canary_weight must be an integer percentage 0..100 (got 120)")
    ops(render_dir, "canary.yml", canary_service="currencyservice",
        canary_action="promote").assert_failed_with("has no canary (currencyservice-canary): nothing to promote")
    ops(render_dir, "canary.yml", canary_service="frontend", canary_image="x/y:1",
        canary_weight=10).assert_failed_with("frontend is the ingress service")
    assert not (render_dir / "ops").exists(), "a refused run writes nothing"


# ----------------------------------------------------------- fault injection
def test_fault_injection_adds_and_removes_without_a_trace(render_dir, tmp_path):
    rendered_vs = get(objects(render_dir / "microservice" / "paymentservice.yaml"), "VirtualService", "paymentservice")
    ops(render_dir, "fault-injection.yml", fault_service="paymentservice", fault_type="abort",
        fault_abort_status="UNAVAILABLE", fault_percentage=10).assert_ok()
    objs = objects(render_dir / "ops" / "paymentservice.yaml")
    for http in get(objs, "VirtualService", "paymentservice")["spec"]["http"]:
        assert http["fault"] == {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 10.0}}}
    assert_valid(objs)

    ops(render_dir, "fault-injection.yml", fault_service="paymentservice", fault_type="delay",
        fault_delay="1500ms", fault_percentage=50).assert_ok()
    objs = objects(render_dir / "ops" / "paymentservice.yaml")
    for http in get(objs, "VirtualService", "paymentservice")["spec"]["http"]:
        assert http["fault"] == {"delay": {"fixedDelay": "1500ms", "percentage": {"value": 50.0}}}
    assert_valid(objs)

    ops(render_dir, "fault-injection.yml", fault_service="paymentservice", fault_state="absent").assert_ok()
    assert not (render_dir / "ops" / "paymentservice.yaml").exists(), "removal must leave no trace"
    status = ops(render_dir, "status.yml").assert_ok()
    assert "Changed by ops playbooks" not in status.flat
    assert get(objects(render_dir / "microservice" / "paymentservice.yaml"), "VirtualService",
               "paymentservice") == rendered_vs


def test_fault_injection_validates_its_inputs(render_dir):
    ops(render_dir, "fault-injection.yml", fault_service="frontend", fault_type="abort",
        fault_abort_status="UNAVAILABLE").assert_failed_with("frontend is an HTTP service",
                                                            "an HTTP status 400..599, not UNAVAILABLE")
    ops(render_dir, "fault-injection.yml", fault_service="paymentservice",
        fault_percentage=0).assert_failed_with("fault_percentage must be a number in (0, 100] (got 0)")
    # The catalog's duration grammar (ms|s|m|h), through the boutique_seconds filter.
    for bad in ("soon", "2 s", "0ms", "5d"):
        ops(render_dir, "fault-injection.yml", fault_service="paymentservice", fault_type="delay",
            fault_delay=bad).assert_failed_with(f"fault_delay must be a positive duration like 500ms, 2s or 1m "
                                                f"(got {bad})")
    ops(render_dir, "fault-injection.yml", fault_service="paymentservice", fault_type="delay", fault_delay="1m",
        check=True).assert_ok()


# --------------------------------------------------------- scale and restart
def test_scale_sets_the_hpa_floor_and_refuses_going_below_the_pdb(render_dir):
    ops(render_dir, "scale.yml", scale_service="adservice,emailservice", scale_replicas=5).assert_ok()
    for name in ("adservice", "emailservice"):
        hpa = get(objects(render_dir / "ops" / f"{name}.yaml"), "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["minReplicas"] == 5
        assert hpa["spec"]["maxReplicas"] == 5  # catalog max 4: raised to the floor
        assert_valid([hpa])
    assert ops(render_dir, "scale.yml", scale_service="adservice,emailservice", scale_replicas=5).changed == 0

    ops(render_dir, "scale.yml", scale_service="all", scale_replicas=0).assert_failed_with(
        "refusing to scale to 0: below the PodDisruptionBudget minAvailable of frontend (minAvailable 1)")
    ops(render_dir, "scale.yml", scale_service="adservice", scale_replicas="two").assert_failed_with(
        "scale_replicas must be an integer 0..30 (got 'two')")
    ops(render_dir, "scale.yml", scale_service="loadgenerator", scale_replicas=2).assert_failed_with(
        "loadgenerator: in the catalog but not deployed")


def test_rollout_restart_stamps_the_pod_template(render_dir):
    stamp = "2026-11-25T22:00:00Z"
    run = ops(render_dir, "rollout-restart.yml", restart_service="checkoutservice", restart_stamp=stamp).assert_ok()
    deploy = get(objects(render_dir / "ops" / "checkoutservice.yaml"), "Deployment", "checkoutservice")
    assert deploy["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == stamp
    assert_valid([deploy])
    assert "create/update Deployment/checkoutservice" in run.flat
    dry = ops(render_dir, "rollout-restart.yml", check=True, restart_service="checkoutservice",
              restart_stamp="2026-11-26T08:00:00Z").assert_ok()
    assert dry.changed >= 1
    deploy = get(objects(render_dir / "ops" / "checkoutservice.yaml"), "Deployment", "checkoutservice")
    assert deploy["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == stamp


# ---------------------------------------------------------------- rotate TLS
def _cert(tmp_path: Path, name: str, domain: str, days: int, key=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_rotate_tls_from_files_writes_the_gateway_secret_and_checks_the_certificate(render_dir, tmp_path):
    import base64

    settings = yaml.safe_load((ROOT / "group_vars/all/kubernetes.yml").read_text())
    domain = yaml.safe_load((ROOT / "group_vars/all/main.yml").read_text())["boutique_shop_domain"]
    good_cert, good_key = _cert(tmp_path, "good", domain, 60)
    ops(render_dir, "rotate-tls.yml", tls_cert_file=str(good_cert), tls_key_file=str(good_key)).assert_ok()
    secret_file = (render_dir / "ops" /
                   f"{settings['boutique_istio_ingress_namespace']}.secret.{settings['boutique_shop_tls_secret']}.yaml")
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    secret = objects(secret_file)[0]
    assert secret["type"] == "kubernetes.io/tls"
    # Byte for byte, the PEM's final newline included.
    assert base64.b64decode(secret["data"]["tls.crt"]) == good_cert.read_bytes()
    assert base64.b64decode(secret["data"]["tls.key"]) == good_key.read_bytes()
    assert_valid([secret])
    istio_objects = [o for p in sorted((render_dir / "istio").glob("*.yaml")) for o in objects(p)]
    gateway = get(istio_objects, "Gateway", "boutique-gateway")
    credential = {s["tls"]["credentialName"] for s in gateway["spec"]["servers"] if "tls" in s and
                  "credentialName" in s["tls"]}
    assert credential == {secret["metadata"]["name"]}
    assert gateway["metadata"]["namespace"] == secret["metadata"]["namespace"]
    same = ops(render_dir, "rotate-tls.yml", tls_cert_file=str(good_cert), tls_key_file=str(good_key)).assert_ok()
    assert same.changed == 0

    wrong_cert, wrong_key = _cert(tmp_path, "wrong", "other.example.org", 60)
    ops(render_dir, "rotate-tls.yml", tls_cert_file=str(wrong_cert), tls_key_file=str(wrong_key)).assert_failed_with(
        "SAN (DNS:other.example.org) does not cover " + domain)
    ops(render_dir, "rotate-tls.yml", tls_cert_file=str(good_cert), tls_key_file=str(wrong_key)).assert_failed_with(
        "the private key does not match the certificate")
    short_cert, short_key = _cert(tmp_path, "short", domain, 3)
    ops(render_dir, "rotate-tls.yml", tls_cert_file=str(short_cert), tls_key_file=str(short_key)).assert_failed_with(
        "within tls_min_valid_days (7)")
    assert base64.b64decode(objects(secret_file)[0]["data"]["tls.crt"]) == good_cert.read_bytes()


def test_rotate_tls_reissues_a_self_signed_certificate(render_dir, tmp_path):
    run = ops(render_dir, "rotate-tls.yml", tls_source="selfsigned", tls_work_dir=str(tmp_path / "tls")).assert_ok()
    domain = yaml.safe_load((ROOT / "group_vars/all/main.yml").read_text())["boutique_shop_domain"]
    assert f"(SAN DNS:{domain})" in run.flat
    assert (tmp_path / "tls" / f"{domain}.pem").is_file()


# -------------------------------------------------------------------- status
def test_status_reports_the_rendered_desired_state(render_dir):
    run = ops(render_dir, "status.yml").assert_ok()
    assert run.changed == 0
    flat = run.flat
    assert "live state (ready replicas, pods, restarts, the load balancer address) needs a cluster" in flat
    assert "mTLS (PeerAuthentication): istio-system/default=STRICT" in flat
    domain = yaml.safe_load((ROOT / "group_vars/all/main.yml").read_text())["boutique_shop_domain"]
    assert f"Shop URL: https://{domain}/" in flat
    for svc in catalog_mod.default().services.values():
        if svc.deploy:
            assert f" {svc.name} -/2 " in flat, svc.name


def test_status_names_a_missing_render(tmp_path):
    run_playbook("playbooks/status.yml", {"boutique_render_dir": str(tmp_path / "nothing")}).assert_failed_with(
        "render mode: nothing rendered under")
