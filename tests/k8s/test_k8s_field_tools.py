"""The field's tools on the rendered manifests of both inventories, beside our own lint:
kubeconform (strict, Kubernetes + Istio + prometheus-operator schemas), istioctl analyze
(file-only), kube-score and checkov. Every finding is fixed or in scripts/field-tools-allow.yaml
with its reason; each tool is also shown to catch a broken object, so a pass means something."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_helpers import ROOT, Rendered, field_tools

from boutique.dev import gotools, pytools

pytestmark = [pytest.mark.k8s, pytest.mark.slow]
ALLOW = field_tools.load_allow_list()


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    """Each tool, built (Go module proxy) or installed (hash-checked venv) on first use."""
    found = {tool: gotools.binary(tool) for tool in ("kubeconform", "istioctl", "kube-score")}
    found["checkov"] = pytools.binary("checkov")
    return found


@pytest.fixture(scope="session")
def findings(rendered_all: dict[str, Rendered], binaries: dict[str, Path]) -> dict[tuple[str, str], list]:
    """(inventory, tool) -> every finding of the tool on that inventory's render."""
    return {(inv, tool): field_tools.run(tool, binaries[tool], r.path)
            for inv, r in rendered_all.items() for tool in field_tools.TOOLS}


@pytest.mark.parametrize("tool", field_tools.TOOLS)
def test_no_finding_is_left_unexplained(rendered: Rendered, findings: dict, tool: str) -> None:
    objs = field_tools.objects(field_tools.manifest_files(rendered.path))
    open_findings, _ = field_tools.split(findings[rendered.inventory, tool], ALLOW, objs)
    assert not open_findings, f"{tool} on {rendered.inventory}: fix these or explain them in " \
        f"scripts/field-tools-allow.yaml:\n" + "\n".join(map(str, open_findings))


def test_every_allow_list_entry_is_still_needed(rendered_all: dict[str, Rendered], findings: dict) -> None:
    used: set = set()
    for inv, r in rendered_all.items():
        objs = field_tools.objects(field_tools.manifest_files(r.path))
        for tool in field_tools.TOOLS:
            _, covered = field_tools.split(findings[inv, tool], ALLOW, objs)
            used |= {entry for entry, hits in covered.items() if hits}
    stale = [f"{a.tool} {a.check} {a.objects}" for a in ALLOW if a not in used]
    assert not stale, f"allow-list entries that cover nothing any more (delete them): {stale}"


def test_digest_references_are_never_excused(rendered_all: dict[str, Rendered], findings: dict) -> None:
    """The image-tag entries cover fallback references only: a digest-deployed service is clean."""
    prod = rendered_all["production"]
    digest_deployed = {f"Deployment/{d['metadata']['namespace']}/{d['metadata']['name']}"
                       for d in prod.objects("Deployment")
                       if d["metadata"]["annotations"].get("boutique.dev/image-source") == "digest"}
    assert digest_deployed  # the production render has digest references (k8s_helpers.DIGEST_REFS)
    tag_checks = {"CKV_K8S_43", "CKV_K8S_14", "container-image-tag"}
    flagged = [f for tool in ("checkov", "kube-score") for f in findings["production", tool]
               if f.check in tag_checks and f.object in digest_deployed]
    assert not flagged, flagged


# --------------------------------------------------------------------------- each tool catches a broken object
def _with_extra(rendered: Rendered, tmp_path: Path, *extra: dict) -> Path:
    """A copy of the render plus `extra` objects in observability/zz-broken.yaml."""
    copy = tmp_path / "render"
    shutil.copytree(rendered.path, copy, ignore=shutil.ignore_patterns("*.json"))
    (copy / "observability" / "zz-broken.yaml").write_text(yaml.safe_dump_all(list(extra)))
    return copy


def _broken_deployment(rendered: Rendered, **container_changes: object) -> dict:
    deployment = yaml.safe_load(yaml.safe_dump(rendered.get("Deployment", "currencyservice")))
    deployment["metadata"]["name"] = "broken"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for key, value in container_changes.items():
        if value is None:
            container.pop(key, None)
        else:
            container[key] = value
    return deployment


def test_kubeconform_rejects_unknown_fields_in_builtin_istio_and_operator_kinds(
        rendered_all: dict[str, Rendered], binaries: dict[str, Path], tmp_path: Path) -> None:
    rendered = rendered_all["local"]
    deployment = _broken_deployment(rendered, imagePulPolicy="Always")
    policy = yaml.safe_load(yaml.safe_dump(rendered.get("AuthorizationPolicy", "currencyservice")))
    policy["metadata"]["name"], policy["spec"]["actoin"] = "broken", "DENY"
    monitor = yaml.safe_load(yaml.safe_dump(rendered.objects("PodMonitor")[0]))
    monitor["metadata"]["name"], monitor["spec"]["jobLable"] = "broken", "app"
    found = field_tools.run("kubeconform", binaries["kubeconform"],
                            _with_extra(rendered, tmp_path, deployment, policy, monitor))
    assert sorted(f.object for f in found) == sorted(
        ["Deployment/boutique/broken", "AuthorizationPolicy/boutique/broken",
         f"PodMonitor/{monitor['metadata']['namespace']}/broken"]), found
    assert all(f.check == "statusInvalid" for f in found)


def test_istioctl_analyze_finds_a_route_to_a_missing_gateway(rendered_all, binaries, tmp_path) -> None:
    rendered = rendered_all["local"]
    vs = yaml.safe_load(yaml.safe_dump(rendered.get("VirtualService", "frontend-ingress")))
    vs["metadata"]["name"], vs["spec"]["gateways"] = "broken", ["istio-ingress/no-such-gateway"]
    found = field_tools.run("istioctl", binaries["istioctl"], _with_extra(rendered, tmp_path, vs))
    assert ("IST0101", "VirtualService/boutique/broken") in {(f.check, f.object) for f in found}, found


def test_kube_score_finds_a_container_without_resources(rendered_all, binaries, tmp_path) -> None:
    rendered = rendered_all["local"]
    found = field_tools.run("kube-score", binaries["kube-score"],
                            _with_extra(rendered, tmp_path, _broken_deployment(rendered, resources=None)))
    assert "container-resources" in {f.check for f in found if f.object == "Deployment/boutique/broken"}, found


def test_checkov_finds_a_privileged_container(rendered_all, binaries, tmp_path) -> None:
    rendered = rendered_all["local"]
    broken = _broken_deployment(rendered, securityContext={"privileged": True, "allowPrivilegeEscalation": True})
    found = field_tools.run("checkov", binaries["checkov"], _with_extra(rendered, tmp_path, broken))
    assert "CKV_K8S_16" in {f.check for f in found if f.object == "Deployment/boutique/broken"}, found


def test_an_allow_list_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "allow.yaml"
    path.write_text(yaml.safe_dump([{"tool": "checkov", "check": "CKV_K8S_40", "objects": ["*"]}]))
    with pytest.raises(field_tools.ToolError, match=r"needs tool .* check, objects and reason"):
        field_tools.load_allow_list(path)


def test_field_tools_cli_reports_per_tool(rendered_all: dict[str, Rendered], binaries: dict[str, Path]) -> None:
    run = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "scripts/field_tools.py"),
                          str(rendered_all["local"].path), "--tool", "kubeconform", "--tool", "istioctl"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "kubeconform: 0 finding(s)" in run.stdout and "istioctl: 0 finding(s)" in run.stdout
