"""Tracing in the rendered manifests: the local inventory turns it on (a Jaeger collector, the
Istio Telemetry API provider, ENABLE_TRACING in every service), production leaves it off; the
collector's own config is checked by the real Jaeger binary."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from k8s_helpers import Rendered

from boutique.dev import gotools

pytestmark = pytest.mark.k8s


def _istiod_mesh_config(rendered: Rendered) -> dict:
    return rendered.release("istiod")["spec"]["values"].get("meshConfig", {})


def _collector(rendered: Rendered, k8s_settings: dict) -> tuple[dict, dict]:
    name, ns = k8s_settings["boutique_tracing_collector_service"], "monitoring"
    found = [(o["kind"], o) for o in rendered.objects() if o["metadata"]["name"] == name
             and o["metadata"].get("namespace") == ns and o["kind"] in {"Deployment", "Service"}]
    kinds = dict(found)
    assert set(kinds) == {"Deployment", "Service"}, f"no Jaeger Deployment + Service {ns}/{name}: {found}"
    return kinds["Deployment"], kinds["Service"]


def test_local_sends_every_services_and_envoys_spans_to_the_jaeger_service(rendered_all, k8s_settings):
    rendered = rendered_all["local"]
    deployment, service = _collector(rendered, k8s_settings)
    otlp = next(p for p in service["spec"]["ports"] if p["name"] == "grpc-otlp")
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    # the services: every shop Deployment but Redis exports to that Service's OTLP port
    for d in rendered.objects("Deployment"):
        if d["metadata"]["namespace"] != "boutique" or d["metadata"]["name"] == "redis-cart":
            continue
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env.get("ENABLE_TRACING"), env.get("COLLECTOR_SERVICE_ADDR")) == ("1", f"{fqdn}:{otlp['port']}"), \
            d["metadata"]["name"]
    # the mesh: the Telemetry API names a provider that istiod's meshConfig defines, pointing at the same port
    telemetry = rendered.get("Telemetry", "mesh-default")
    (tracing,) = telemetry["spec"]["tracing"]
    providers = {p["name"]: p for p in _istiod_mesh_config(rendered)["extensionProviders"]}
    (ref,) = tracing["providers"]
    assert providers[ref["name"]]["opentelemetry"] == {"service": fqdn, "port": otlp["port"]}
    assert tracing["randomSamplingPercentage"] == 100.0  # the local inventory samples everything
    # the shop's pods may reach the collector (default-deny NetworkPolicies), and the collector lets them
    export = rendered.get("NetworkPolicy", "allow-trace-export")["spec"]["egress"]
    assert export[0]["ports"] == [{"port": otlp["port"], "protocol": "TCP"}]
    jaeger_policy = next(p for p in rendered.objects("NetworkPolicy") if p["metadata"]["namespace"] == "monitoring"
                         and p["metadata"]["name"] == deployment["metadata"]["name"])
    senders = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for peer in jaeger_policy["spec"]["ingress"][0]["from"]}
    assert "boutique" in senders and not jaeger_policy["spec"].get("egress")
    assert "Egress" in jaeger_policy["spec"]["policyTypes"]  # listed with no rule: nothing out
    ports = {p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert otlp["targetPort"] in ports


def test_the_collector_is_restricted_and_its_image_comes_from_the_images_names(rendered_all, k8s_settings):
    deployment, _ = _collector(rendered_all["local"], k8s_settings)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert (sc["allowPrivilegeEscalation"], sc["readOnlyRootFilesystem"], sc["capabilities"]) == \
        (False, True, {"drop": ["ALL"]})
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == deployment["metadata"]["name"]
    assert {"requests", "limits"} <= set(container["resources"])
    image_name, version = k8s_settings["boutique_jaeger_image_name"], k8s_settings["boutique_jaeger_version"]
    assert container["image"].endswith(f"/{image_name}:{version}")  # no digest recorded in this render
    assert deployment["metadata"]["annotations"]["boutique.dev/image-source"] == "fallback"


def test_the_collector_config_is_accepted_by_jaeger_itself(rendered_all, k8s_settings, tmp_path):
    rendered = rendered_all["local"]
    name = k8s_settings["boutique_tracing_collector_service"]
    config = rendered.get("ConfigMap", f"{name}-config")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(config)
    jaeger = gotools.binary("jaeger")
    ok = subprocess.run([str(jaeger), "validate", "--config", f"file:{path}"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr[-2000:]
    broken = yaml.safe_load(config)
    broken["extensions"]["jaeger_storage"]["backends"]["memstore"]["memory"]["max_tracez"] = 5
    path.write_text(yaml.safe_dump(broken))
    bad = subprocess.run([str(jaeger), "validate", "--config", f"file:{path}"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "max_tracez" in bad.stderr + bad.stdout


def test_production_leaves_tracing_off(rendered_all):
    rendered = rendered_all["production"]
    assert "tracing" not in rendered.get("Telemetry", "mesh-default")["spec"]
    assert "extensionProviders" not in _istiod_mesh_config(rendered)
    assert not [d["metadata"]["name"] for d in rendered.objects("Deployment")
                if any(e["name"] == "ENABLE_TRACING" for c in d["spec"]["template"]["spec"]["containers"]
                       for e in c.get("env", []))]
    assert not [o for o in rendered.objects() if o["metadata"].get("labels", {}).get(
        "app.kubernetes.io/component") == "tracing"]
