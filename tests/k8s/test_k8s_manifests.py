"""Rendered manifests of the local and production inventories: schema-valid, derived
from the catalog, and clean under the cross-object lint (which also must catch
deliberately broken objects)."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from k8s_helpers import ROOT, Rendered, run_playbook

sys.path.insert(0, str(ROOT / "scripts"))
import istio_crds
import k8s_lint

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

PROMETHEUS_OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}

# kubernetes-validate re-reads its (large) schema files on every call; they never
# change within a run, so read each once (350+ validations: minutes -> a second).
if not hasattr(kubernetes_validate.utils.schema_contents, "cache_info"):
    kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def builtin_objects(r: Rendered) -> list[dict]:
    return [o for o in r.objects() if not istio_crds.is_istio(o) and o["kind"] not in PROMETHEUS_OPERATOR_KINDS]


# --- schema validation ---------------------------------------------------------------

def test_builtin_kinds_validate_strictly_on_every_supported_kubernetes_version(rendered, k8s_settings):
    objects = builtin_objects(rendered)
    assert {"Namespace", "Deployment", "Service", "ServiceAccount", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "NetworkPolicy", "ConfigMap"} <= {o["kind"] for o in objects}
    errors = []
    for version in k8s_settings["boutique_k8s_supported_versions"]:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                errors.append(f"{version} {k8s_lint.ref(obj)}: {getattr(exc, 'message', exc)}")
    assert errors == []


def test_kubernetes_validate_cli_accepts_the_rendered_files(rendered, k8s_settings):
    files = [str(p) for p in sorted((rendered.path / "microservice").glob("*.yaml"))]
    version = k8s_settings["boutique_k8s_supported_versions"][-1]
    result = subprocess.run([str(ROOT / ".venv/bin/kubernetes-validate"), "--strict", "--quiet", "-k", version,
                             *files], capture_output=True, text=True)
    # Istio kinds have no schema in kubernetes-validate: WARN lines, validated below instead.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout


def test_strict_validation_rejects_an_unknown_field(rendered, k8s_settings):
    deployment = copy.deepcopy(rendered.get("Deployment", "cartservice"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 7070}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, k8s_settings["boutique_k8s_supported_versions"][0], strict=True)


def test_istio_kinds_validate_against_the_istio_crd_schemas(rendered, istio_crd_bundle):
    objects = [o for o in rendered.objects() if istio_crds_is(o)]
    kinds = {o["kind"] for o in objects}
    assert {"AuthorizationPolicy", "PeerAuthentication", "DestinationRule", "VirtualService", "Gateway",
            "Telemetry"} <= kinds
    errors = [e for o in objects for e in istio_crds.validate(o, istio_crd_bundle)]
    assert errors == []


def istio_crds_is(obj: dict) -> bool:
    return istio_crds.is_istio(obj)


def test_istio_schema_forbids_unknown_fields(rendered, istio_crd_bundle):
    vs = copy.deepcopy(rendered.get("VirtualService", "productcatalogservice"))
    vs["spec"]["http"][0]["retries"]["attemps"] = 3
    errors = istio_crds.validate(vs, istio_crd_bundle)
    assert any("attemps" in e for e in errors), errors


def test_prometheus_operator_objects_are_well_formed(rendered):
    monitors = [o for o in rendered.objects() if o["kind"] in PROMETHEUS_OPERATOR_KINDS]
    assert {o["kind"] for o in monitors} == PROMETHEUS_OPERATOR_KINDS
    for obj in monitors:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1", k8s_lint.ref(obj)
        assert obj["metadata"]["namespace"] and obj["metadata"]["name"]
        spec = obj["spec"]
        if obj["kind"] == "PodMonitor":
            assert spec["selector"] and spec["podMetricsEndpoints"]
            for endpoint in spec["podMetricsEndpoints"]:
                assert set(endpoint) <= {"port", "path", "interval", "relabelings", "scheme"}
                for rl in endpoint.get("relabelings", []):
                    assert rl["action"] in {"keep", "drop", "replace", "labelmap"}
                    assert "sourceLabels" in rl
        elif obj["kind"] == "ServiceMonitor":
            assert spec["selector"]["matchLabels"] and spec["endpoints"][0]["port"]
        else:
            for group in spec["groups"]:
                assert group["name"] and group["rules"]
                for rule in group["rules"]:
                    assert ("record" in rule) != ("alert" in rule) and rule["expr"]


# --- derived from the catalog --------------------------------------------------------

def test_every_deployed_catalog_service_has_its_objects(rendered, catalog):
    kinds = ["ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
             "DestinationRule", "VirtualService", "AuthorizationPolicy", "NetworkPolicy"]
    for svc in catalog.deployed:
        for kind in kinds:
            rendered.get(kind, svc["name"])
    for svc in catalog.services:
        if not svc.get("deploy", True):
            assert not [o for o in rendered.objects() if o["metadata"]["name"] == svc["name"]], svc["name"]
    redis = catalog.redis["name"]
    for kind in ("ServiceAccount", "Deployment", "Service", "AuthorizationPolicy"):
        rendered.get(kind, redis)
    assert rendered.get("Service", redis)["spec"]["ports"][0]["name"] == "tcp-redis"


def test_namespace_enforces_restricted_pod_security_and_injection(rendered, k8s_settings):
    ns = rendered.get("Namespace", k8s_settings["boutique_namespace"])
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployments_carry_the_catalog_ports_env_resources_and_probes(rendered, catalog, k8s_settings):
    for svc in catalog.deployed:
        d = rendered.get("Deployment", svc["name"])
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e["value"] for e in c["env"]}
        expected_env = {"PORT": str(svc["port"]), "METRICS_PORT": str(svc["metrics_port"])} | svc["env"]
        for callee in svc["callees"]:
            entry = catalog.by_name(callee)
            if entry:
                expected_env[entry["addr_env"]] = f"{callee}:{entry['service_port']}"
        assert expected_env.items() <= env.items(), svc["name"]
        grace = int(env["SHUTDOWN_GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] >= grace + 10
        for bound in ("requests", "limits"):  # the catalog's cpu/memory, plus ephemeral storage (kube-score)
            assert c["resources"][bound] == {**c["resources"][bound], **svc["resources"][bound]}, svc["name"]
            assert "ephemeral-storage" in c["resources"][bound], svc["name"]
        assert {p["containerPort"] for p in c["ports"]} == {svc["port"], svc["metrics_port"]}
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(svc["metrics_port"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if svc["protocol"] == "grpc":
                assert c[probe]["grpc"] == {"port": svc["port"]}, (svc["name"], probe)
            elif probe == "livenessProbe":  # /_healthz is 503 while draining: readiness, not liveness
                assert c[probe]["tcpSocket"] == {"port": svc["port"]}, svc["name"]
            else:
                http = c[probe]["httpGet"]
                assert (http["path"], http["port"]) == ("/_healthz", svc["port"])
                assert {"name": "Cookie", "value": "shop_session-id=x-readiness-probe"} in http["httpHeaders"]
        assert c["readinessProbe"]["periodSeconds"] == svc["probes"]["period_seconds"]
        hpa = rendered.get("HorizontalPodAutoscaler", svc["name"])
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (svc["replicas"]["min"],
                                                                            svc["replicas"]["max"])
        assert rendered.get("PodDisruptionBudget", svc["name"])["spec"]["minAvailable"] == svc["pdb_min_available"]
        port = rendered.get("Service", svc["name"])["spec"]["ports"][0]
        assert (port["port"], port["targetPort"]) == (svc["service_port"], svc["port"])
        assert port["appProtocol"] == svc["protocol"] and port["name"].startswith(f"{svc['protocol']}-")


def test_images_use_digests_when_the_images_stage_provides_them(rendered, catalog, k8s_settings):
    for svc in catalog.deployed:
        d = rendered.get("Deployment", svc["name"])
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        source = d["metadata"]["annotations"]["boutique.dev/image-source"]
        if svc["name"] in rendered.image_refs:
            assert (image, source) == (rendered.image_refs[svc["name"]], "digest")
        else:
            s = k8s_settings
            # The prefix is derived once (group_vars/all/derived.yml): the project name.
            expected = (f"{s['boutique_image_registry']}/{s['boutique_project']}/{svc['name']}"
                        f":{s['boutique_image_tag']}")
            assert (image, source) == (expected, "fallback")


def test_virtualservices_retry_only_idempotent_methods_within_the_timeout(rendered, catalog):
    for svc in [s for s in catalog.deployed if s["protocol"] == "grpc"]:
        vs = rendered.get("VirtualService", svc["name"])
        retried = {r["match"][0]["uri"]["exact"].rsplit("/", 1)[1]
                   for r in vs["spec"]["http"] if r["retries"]["attempts"] > 0}
        idempotent = {m["name"] for m in svc["methods"] if m["idempotent"]}
        assert retried == (idempotent if svc["retries"]["attempts"] > 1 else set()), svc["name"]
        assert not retried & {"PlaceOrder", "Charge", "AddItem", "ShipOrder", "SendOrderConfirmation"}
        default = vs["spec"]["http"][-1]
        assert "match" not in default and default["retries"] == {"attempts": 0}
        assert all(r["timeout"] == svc["timeout"] for r in vs["spec"]["http"])


def test_authorization_policies_allow_exactly_the_catalog_callers(rendered, catalog, k8s_settings):
    ns = k8s_settings["boutique_namespace"]
    for svc in catalog.deployed:
        callers = sorted(s["name"] for s in catalog.deployed if svc["name"] in s["callees"])
        principals = [p for rule in rendered.get("AuthorizationPolicy", svc["name"])["spec"]["rules"]
                      for f in rule["from"] for p in f["source"]["principals"]]
        expected = [f"cluster.local/ns/{ns}/sa/{c}" for c in callers]
        if svc["name"] == k8s_settings["boutique_ingress_service"]:
            expected.append(f"cluster.local/ns/{k8s_settings['boutique_istio_ingress_namespace']}"
                            f"/sa/{k8s_settings['boutique_istio_ingress_name']}")
        assert principals == expected, svc["name"]
    default_deny = rendered.get("AuthorizationPolicy", "default-deny")
    assert default_deny["metadata"]["namespace"] == ns and default_deny["spec"] == {}


def test_mesh_is_strict_mtls_and_the_gateway_serves_https_with_redirect(rendered, k8s_settings):
    pa = rendered.get("PeerAuthentication", "default")
    assert pa["metadata"]["namespace"] == k8s_settings["boutique_istio_namespace"]
    assert pa["spec"] == {"mtls": {"mode": "STRICT"}}
    gw = rendered.get("Gateway", "boutique-gateway")
    assert gw["metadata"]["namespace"] == k8s_settings["boutique_istio_ingress_namespace"]
    servers = {s["port"]["protocol"]: s for s in gw["spec"]["servers"]}
    assert servers["HTTP"]["tls"] == {"httpsRedirect": True}
    assert servers["HTTPS"]["tls"]["credentialName"] == k8s_settings["boutique_shop_tls_secret"]
    assert servers["HTTPS"]["hosts"] == [f"{k8s_settings['boutique_namespace']}/{k8s_settings['boutique_shop_domain']}"]
    vs = rendered.get("VirtualService", "frontend-ingress")
    assert vs["spec"]["gateways"] == [f"{k8s_settings['boutique_istio_ingress_namespace']}/boutique-gateway"]
    assert vs["spec"]["hosts"] == [k8s_settings["boutique_shop_domain"]]


def test_helm_releases_are_pinned_with_their_values(rendered, k8s_settings):
    s = k8s_settings
    charts = {r["spec"]["chart"]: r["spec"] for r in rendered.manifests.releases}
    assert set(charts) == {"base", "cni", "istiod", "gateway", "kube-prometheus-stack", "kiali-server"}
    for chart in ("base", "cni", "istiod", "gateway"):
        assert (charts[chart]["repo"], str(charts[chart]["version"])) == (s["boutique_istio_chart_repo"],
                                                                          s["boutique_istio_version"])
    assert str(charts["kube-prometheus-stack"]["version"]) == s["boutique_prometheus_stack_chart_version"]
    assert str(charts["kiali-server"]["version"]) == s["boutique_kiali_chart_version"]
    istiod = charts["istiod"]["values"]
    assert istiod["meshConfig"]["enablePrometheusMerge"] is True
    assert istiod["pilot"]["cni"]["enabled"] is True  # restricted PSS: no NET_ADMIN init container
    assert charts["gateway"]["values"]["labels"]["app"] == rendered.release(s["boutique_istio_ingress_name"])[
        "metadata"]["name"]
    kps = charts["kube-prometheus-stack"]["values"]
    assert kps["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"
    assert kps["prometheus"]["prometheusSpec"]["podMonitorSelectorNilUsesHelmValues"] is False
    release = s["boutique_prometheus_stack_release"]
    assert charts["kiali-server"]["values"]["external_services"]["prometheus"]["url"] == (
        f"http://{release}-prometheus.{s['boutique_monitoring_namespace']}.svc:9090")


# --- cross-object lint ---------------------------------------------------------------

def test_cross_object_lint_is_clean(rendered, catalog):
    assert k8s_lint.lint(rendered.manifests, catalog) == []


def test_lint_cli_reports_success_on_the_rendered_tree(rendered):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/k8s_lint.py"), str(rendered.path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "0 findings" in result.stderr


def test_lint_cli_names_a_missing_render_dir(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts/k8s_lint.py"), str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "does not exist" in result.stderr


def mutated(rendered: Rendered) -> k8s_lint.Manifests:
    return copy.deepcopy(rendered.manifests)


def find(manifests: k8s_lint.Manifests, kind: str, name: str) -> dict:
    return next(o for _, o in manifests.objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_an_extra_authorization_edge(rendered, catalog):
    m = mutated(rendered)
    ap = find(m, "AuthorizationPolicy", "paymentservice")
    ap["spec"]["rules"][0]["from"][0]["source"]["principals"].append("cluster.local/ns/boutique/sa/frontend")
    findings = k8s_lint.lint(m, catalog)
    assert any("allows cluster.local/ns/boutique/sa/frontend -> paymentservice" in f for f in findings), findings


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_a_missing_edge_and_an_unknown_principal(rendered, catalog):
    m = mutated(rendered)
    ap = find(m, "AuthorizationPolicy", "emailservice")
    ap["spec"]["rules"][0]["from"][0]["source"]["principals"] = ["cluster.local/ns/boutique/sa/ghost"]
    findings = k8s_lint.lint(m, catalog)
    assert any("checkoutservice -> emailservice is not allowed" in f for f in findings), findings
    assert any("ghost names no existing ServiceAccount" in f for f in findings), findings


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_a_missing_probe(rendered, catalog):
    m = mutated(rendered)
    del find(m, "Deployment", "currencyservice")["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    findings = k8s_lint.lint(m, catalog)
    assert findings == ["Deployment boutique/currencyservice: container server: livenessProbe is missing"]


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_a_retry_on_place_order(rendered, catalog):
    m = mutated(rendered)
    vs = find(m, "VirtualService", "checkoutservice")
    default = vs["spec"]["http"][-1]
    vs["spec"]["http"].insert(0, {**copy.deepcopy(default), "name": "placeorder",
                                  "match": [{"uri": {"exact": "/hipstershop.CheckoutService/PlaceOrder"}}],
                                  "retries": {"attempts": 2, "perTryTimeout": "3s"}})
    findings = k8s_lint.lint(m, catalog)
    assert any("route placeorder: retries on ['/hipstershop.CheckoutService/PlaceOrder']" in f
               for f in findings), findings


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_a_retry_budget_over_the_timeout_and_a_dangling_host(rendered, catalog):
    m = mutated(rendered)
    vs = find(m, "VirtualService", "productcatalogservice")
    vs["spec"]["http"][0]["retries"]["attempts"] = 5
    find(m, "DestinationRule", "adservice")["spec"]["host"] = "adsvc.boutique.svc.cluster.local"
    findings = k8s_lint.lint(m, catalog)
    assert any("6 tries x 500ms = 3s exceeds the timeout 2s" in f for f in findings), findings
    assert any("host adsvc.boutique.svc.cluster.local is not a rendered Service" in f for f in findings), findings


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_pod_security_and_service_account_violations(rendered, catalog):
    m = mutated(rendered)
    pod = find(m, "Deployment", "adservice")["spec"]["template"]["spec"]
    pod["serviceAccountName"] = "frontend"
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del pod["containers"][0]["resources"]["limits"]["memory"]
    findings = k8s_lint.lint(m, catalog)
    assert any("shares ServiceAccount frontend" in f for f in findings), findings
    assert any("allowPrivilegeEscalation must be false" in f for f in findings), findings
    assert any("resources.limits.memory is missing" in f for f in findings), findings


@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_lint_catches_a_network_policy_edge_outside_the_call_graph(rendered, catalog):
    m = mutated(rendered)
    np_ = find(m, "NetworkPolicy", "redis-cart")
    np_["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "frontend"}}})
    findings = k8s_lint.lint(m, catalog)
    assert findings == ["manifests: NetworkPolicy allows frontend -> redis-cart, which is not in the call graph"]


# --- the render run itself -----------------------------------------------------------

@pytest.mark.parametrize("rendered", ["local"], indirect=True)
def test_render_is_idempotent_and_check_mode_writes_nothing(rendered, tmp_path):
    assert run_playbook("local", rendered.path).assert_ok().changed == 0
    assert run_playbook("local", tmp_path / "dry", check=True).assert_ok().changed > 0
    assert not (tmp_path / "dry").exists()


def test_a_bad_mode_fails_with_a_clear_message(tmp_path):
    run_playbook("local", tmp_path, "-e", "boutique_k8s_mode=dryrun").assert_failed_with(
        "boutique_k8s_mode must be apply or render, not dryrun")


def test_a_bad_catalog_entry_fails_with_a_clear_message(tmp_path):
    catalog = yaml.safe_load((ROOT / "group_vars/all/catalog.yml").read_text())
    broken = copy.deepcopy(catalog["boutique_services"])
    svc = next(s for s in broken if s["name"] == "productcatalogservice")
    svc["retries"] = {"attempts": 5, "per_try_timeout": "1s"}
    vars_file = tmp_path / "broken.yml"
    # Only the broken entry and the frontend: the run fails fast at the broken one.
    broken = [s for s in broken if s["name"] in {"frontend", "productcatalogservice"}][::-1]
    vars_file.write_text(yaml.safe_dump({"boutique_services": broken}))
    # The services' own catalog validation (services/boutique/service_catalog.py) answers, through the
    # boutique_catalog_checked filter: one set of rules for the roles and the Python loader.
    run_playbook("local", tmp_path / "out", "-e", f"@{vars_file}", "--tags", "microservice").assert_failed_with(
        "the service catalog is invalid: boutique_services[0] (productcatalogservice): retries.attempts (5) x "
        "per_try_timeout (1s) must fit in timeout (2s)")


def test_render_dir_lands_in_the_repo_by_default():
    """The one default puts rendered files in <repo>/rendered/<env> whichever playbook ran
    (it is relative to the inventory, not to playbook_dir), and no inventory overrides it."""
    defaults = (ROOT / "group_vars/all/main.yml").read_text()
    assert 'boutique_render_dir: "{{ inventory_dir }}/../../rendered/{{ boutique_env }}"' in defaults
    for inv in ("local", "production"):
        text = (ROOT / "inventories" / inv / "group_vars/boutique.yml").read_text()
        assert "\nboutique_render_dir:" not in text, inv
    assert Path(ROOT / "playbooks/site/group_vars").resolve() == (ROOT / "group_vars").resolve()


def test_dns_record_is_managed_only_when_a_hosted_zone_is_configured(rendered, k8s_settings):
    records = sorted((rendered.path / "dns").glob("*.yaml")) if (rendered.path / "dns").exists() else []
    if rendered.inventory == "local":  # no hosted zone in the embedded default
        assert records == []
        return
    record = yaml.safe_load(records[0].read_text())
    assert (record["zone"], record["record"], record["type"]) == ("example.com", k8s_settings["boutique_shop_domain"],
                                                                  "CNAME")
    assert record["value_from"] == {"service": k8s_settings["boutique_istio_ingress_name"],
                                    "namespace": k8s_settings["boutique_istio_ingress_namespace"],
                                    "field": "status.loadBalancer.ingress[0].hostname"}
