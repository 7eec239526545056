"""The Istio CRD bundle helper and the lint's building blocks (fast, no rendering)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import yaml
from k8s_helpers import ROOT, istio_crds, k8s_lint

pytestmark = pytest.mark.k8s


def test_the_bundle_used_by_the_tests_matches_the_pinned_checksum(istio_crd_bundle, k8s_settings):
    assert hashlib.sha256(istio_crd_bundle.read_bytes()).hexdigest() == k8s_settings["boutique_istio_crds_sha256"]
    assert f"/{k8s_settings['boutique_istio_crds_version']}/" in k8s_settings["boutique_istio_crds_url"]


def test_istio_is_the_newest_1_30_patch_and_validated_with_its_minors_crds(k8s_settings):
    # 1.30.4 fixed Envoy RBAC bypasses (CVE-2026-73553: path-parameter matching); 1.30.7 is the newest 1.30
    version = tuple(int(p) for p in k8s_settings["boutique_istio_version"].split("."))
    assert version >= (1, 30, 7) and version[:2] == (1, 30)
    crds = k8s_settings["boutique_istio_crds_version"].split(".")
    assert crds[:2] == k8s_settings["boutique_istio_version"].split(".")[:2]  # the CRD API is the same within a minor


def test_crd_script_names_a_missing_bundle(tmp_path):
    env = dict(os.environ, BOUTIQUE_ISTIO_CRDS=str(tmp_path / "missing.yaml"))
    result = subprocess.run([sys.executable, str(ROOT / "scripts/istio_crds.py")], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"BOUTIQUE_ISTIO_CRDS={tmp_path / 'missing.yaml'} does not name a file" in result.stderr


def test_crd_script_validates_files_and_reports_bad_objects(tmp_path, istio_crd_bundle):
    good = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    bad = {**good, "spec": {"mtls": {"mode": "STRICT", "strictness": "very"}}}
    unknown = {**good, "apiVersion": "security.istio.io/v9"}
    path = tmp_path / "objects.yaml"
    env = dict(os.environ, BOUTIQUE_ISTIO_CRDS=str(istio_crd_bundle))
    path.write_text(yaml.safe_dump(good))
    ok = subprocess.run([sys.executable, str(ROOT / "scripts/istio_crds.py"), str(path)], env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "all Istio objects are valid" in ok.stdout
    path.write_text(yaml.safe_dump_all([bad, unknown]))
    failed = subprocess.run([sys.executable, str(ROOT / "scripts/istio_crds.py"), str(path)], env=env,
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert "'strictness' was unexpected" in failed.stdout
    assert "security.istio.io/v9 PeerAuthentication is not served" in failed.stdout


def test_crd_bundle_that_is_not_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "crds.yaml"
    path.write_text("kind: [unclosed\n")
    with pytest.raises(istio_crds.CrdBundleError, match="cannot read the Istio CRD bundle"):
        istio_crds.load_schemas(path)


def test_durations_parse_and_reject_garbage():
    assert k8s_lint.parse_duration("500ms") == 0.5
    assert k8s_lint.parse_duration("2s") == 2
    assert k8s_lint.parse_duration("1m") == 60
    with pytest.raises(ValueError):
        k8s_lint.parse_duration("2 seconds")


def test_catalog_call_graph_skips_undeployed_services():
    catalog = k8s_lint.Catalog(
        services=[{"name": "a", "callees": ["b", "cache"]}, {"name": "b", "callees": []},
                  {"name": "gen", "callees": ["a"], "deploy": False}],
        redis={"name": "cache"})
    assert catalog.edges() == {("a", "b"), ("a", "cache")}
