"""teardown.yml on the test node removes every object and namespace the Kubernetes stage made (and
whatever the runbooks left in the shop namespace), leaves nothing with our labels behind, and can be
run again."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTNODE_INVENTORY
from testkit import run_playbook

pytestmark = [pytest.mark.timeout(2700), pytest.mark.slow, pytest.mark.cluster]

OUR_NAMESPACES = {"boutique", "istio-system", "istio-ingress", "monitoring"}
OUR_LABEL = "app.kubernetes.io/part-of=boutique"


def labelled_leftovers(kube: Any) -> list[str]:
    """Every object, of every kind the API server lists, that carries our part-of label."""
    from kubernetes.dynamic import DynamicClient

    client = DynamicClient(kube)
    found = []
    for resource in client.resources.search():
        if "list" not in (resource.verbs or []) or "/" in resource.name:
            continue  # subresources and kinds that cannot be listed
        try:
            items = resource.get(label_selector=OUR_LABEL).items
        except Exception:
            continue
        found += [f"{resource.kind}/{getattr(i.metadata, 'namespace', '') or '-'}/{i.metadata.name}" for i in items]
    return sorted(set(found))


def test_teardown_leaves_nothing_of_ours_and_runs_again(test_node: Any, kube: Any, core: Any) -> None:
    from kubernetes import client

    before = labelled_leftovers(kube)
    assert any(name.startswith("Deployment/boutique/") for name in before), "nothing deployed to tear down"
    run = run_playbook("playbooks/teardown.yml", inventory=TESTNODE_INVENTORY, timeout=1800).assert_ok()
    assert run.changed > 0
    assert labelled_leftovers(kube) == []
    assert not OUR_NAMESPACES & {n.metadata.name for n in core.list_namespace().items}
    crds = [c.metadata.name for c in client.ApiextensionsV1Api(kube).list_custom_resource_definition().items]
    assert not [c for c in crds if c.endswith(".istio.io") or c.endswith(".monitoring.coreos.com")], crds
    again = run_playbook("playbooks/teardown.yml", inventory=TESTNODE_INVENTORY, timeout=1800).assert_ok()
    assert again.changed == 0


def test_rotate_tls_on_a_torn_down_cluster_names_the_missing_namespace(test_node: Any, tmp_path: Path) -> None:
    """After teardown the gateway's namespace is gone: rotate-tls says so and changes nothing."""
    from boutique.certs import CertificateAuthority

    issued = CertificateAuthority("rotate-tls test CA", validity=dt.timedelta(days=90)).issue(
        "shop.testnode.local", dns=("shop.testnode.local",))
    (tmp_path / "cert.pem").write_bytes(issued.cert_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    run = run_playbook("playbooks/rotate-tls.yml", {"tls_cert_file": str(tmp_path / "cert.pem"),
                                                    "tls_key_file": str(tmp_path / "key.pem")},
                       inventory=TESTNODE_INVENTORY)
    run.assert_failed_with("namespace istio-ingress does not exist on the cluster: run site.yml first")
