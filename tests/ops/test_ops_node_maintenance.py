"""node-maintenance.yml against a real moto EKS API: PDB-aware resize of the node group."""

from __future__ import annotations

import boto3
import pytest
from ops_playbook_lib import aws_vars, run_playbook

pytestmark = [pytest.mark.slow, pytest.mark.aws]

CLUSTER = "boutique-mesh-opstest"
NODEGROUP = "boutique-mesh-opstest-default"


@pytest.fixture(scope="module")
def nodegroup(moto_endpoint):
    eks = boto3.client("eks", endpoint_url=moto_endpoint, region_name="eu-west-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    role = "arn:aws:iam::123456789012:role/opstest"
    eks.create_cluster(name=CLUSTER, roleArn=role,
                       resourcesVpcConfig={"subnetIds": ["subnet-0aaa", "subnet-0bbb"]})
    eks.create_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP, nodeRole=role,
                         subnets=["subnet-0aaa", "subnet-0bbb"], instanceTypes=["m6i.large"],
                         scalingConfig={"minSize": 2, "desiredSize": 3, "maxSize": 6},
                         updateConfig={"maxUnavailable": 1}, labels={"pool": "default"}, tags={"Project": "boutique"})
    return eks


def _run(moto_endpoint, check=False, **extra):
    return run_playbook("playbooks/node-maintenance.yml",
                        {"node_cluster_name": CLUSTER, **aws_vars(moto_endpoint), **extra}, check=check)


def _scaling(eks):
    return eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]["scalingConfig"]


def test_resize_updates_the_node_group_and_waits_for_active(nodegroup, moto_endpoint):
    run = _run(moto_endpoint, node_desired_size=4, node_max_size=8).assert_ok()
    assert _scaling(nodegroup) == {"minSize": 2, "desiredSize": 4, "maxSize": 8}
    assert "2/3/6 -> 2/4/8 (min/desired/max)" in run.flat
    assert "status ACTIVE" in run.flat
    again = _run(moto_endpoint, node_desired_size=4, node_max_size=8).assert_ok()
    assert again.changed == 0


def test_check_mode_changes_nothing(nodegroup, moto_endpoint):
    before = _scaling(nodegroup)
    _run(moto_endpoint, check=True, node_desired_size=5).assert_ok()
    assert _scaling(nodegroup) == before


def test_refuses_a_size_below_what_the_pdbs_need(nodegroup, moto_endpoint):
    before = _scaling(nodegroup)
    run = _run(moto_endpoint, node_desired_size=1, node_min_size=1)
    # catalog: every service has minAvailable 1 -> 1 node for the PDB pods + maxUnavailable 1 = 2
    run.assert_failed_with("refusing node group size 1", "the PodDisruptionBudgets need 2 node(s)",
                           "maxUnavailable 1")
    assert _scaling(nodegroup) == before


def test_bad_inputs_are_named(nodegroup, moto_endpoint):
    _run(moto_endpoint).assert_failed_with("give what to change")
    _run(moto_endpoint, node_desired_size="three").assert_failed_with("got desired 'three'")
    _run(moto_endpoint, node_desired_size=5, node_max_size=4).assert_failed_with("desired (5) <= max (4)")
    _run(moto_endpoint, node_nodegroup="nope", node_desired_size=3).assert_failed_with("does not exist")
