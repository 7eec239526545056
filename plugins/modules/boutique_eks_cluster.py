#!/usr/bin/python
# Copyright: Boutique Mesh contributors
# Apache-2.0 (see the project's licence)
"""Create or check an EKS cluster, including what community.aws.eks_cluster cannot set."""

from __future__ import annotations

import contextlib

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

DOCUMENTATION = r"""
---
module: boutique_eks_cluster
short_description: Create an EKS cluster with endpoint access and logging, and detect drift
description:
  - Creates an Amazon EKS cluster with C(resourcesVpcConfig) endpoint access
    (private/public, public CIDRs), control plane logging and tags, which
    C(community.aws.eks_cluster) cannot set.
  - On an existing cluster it compares version, IAM role, subnets, security groups,
    endpoint access, public CIDRs and logging with the wanted values. Missing or
    different tags are fixed in place. Every other difference is drift the module
    does NOT silently paper over; with O(on_drift=fail) (default) the task fails
    and names each field, with O(on_drift=warn) it warns and returns the list.
  - Endpoint access is set when the cluster is created; the module never calls
    UpdateClusterConfig (changing API reachability of a running cluster is a
    deliberate operator action, and moto does not implement it).
  - Deleting is done with C(community.aws.eks_cluster state=absent).
version_added: "0.1.0"
author: Boutique Mesh platform team
options:
  name:
    description: Cluster name.
    type: str
    required: true
  version:
    description: Kubernetes minor version, for example C(1.33).
    type: str
  role_arn:
    description: ARN of the cluster IAM role. Required to create.
    type: str
  subnets:
    description: Subnet ids for the cluster ENIs (the private subnets).
    type: list
    elements: str
    default: []
  security_groups:
    description: Extra security group ids for the control plane ENIs.
    type: list
    elements: str
    default: []
  endpoint_private_access:
    description: Whether the API endpoint is reachable from inside the VPC.
    type: bool
    default: true
  endpoint_public_access:
    description: Whether the API endpoint is reachable from the internet.
    type: bool
    default: false
  public_access_cidrs:
    description: CIDRs allowed to the public endpoint (only used when it is on).
    type: list
    elements: str
    default: ["0.0.0.0/0"]
  log_types:
    description: Control plane log types to enable; the others are disabled.
    type: list
    elements: str
    choices: [api, audit, authenticator, controllerManager, scheduler]
    default: []
  tags:
    description: Tags for the cluster (added/updated, never purged).
    type: dict
    default: {}
  on_drift:
    description: What to do when the existing cluster differs from the wanted settings.
    type: str
    choices: [fail, warn]
    default: fail
  wait:
    description: Wait until the cluster is ACTIVE.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for ACTIVE.
    type: int
    default: 1800
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Private EKS cluster
  boutique_eks_cluster:
    name: shop
    version: "1.33"
    role_arn: arn:aws:iam::123456789012:role/shop-cluster
    subnets: [subnet-1, subnet-2]
    endpoint_private_access: true
    endpoint_public_access: false
    log_types: [api, audit, authenticator]
    wait: "{{ not ansible_check_mode }}"
"""

RETURN = r"""
cluster:
  description: The cluster as DescribeCluster returns it (keys in snake_case, tags unchanged).
  returned: when the cluster exists
  type: dict
endpoint:
  description: API server URL.
  returned: when the cluster exists
  type: str
certificate_authority_data:
  description: Base64 CA bundle of the API server.
  returned: when the cluster exists
  type: str
drift:
  description: Human readable differences between the cluster and the wanted settings.
  returned: always
  type: list
  elements: str
"""


ALL_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]


def describe(client, module, name):
    try:
        return client.describe_cluster(name=name)["cluster"]
    except is_boto3_error_code("ResourceNotFoundException"):
        return None
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg=f"Could not describe EKS cluster {name}")


def wanted_settings(params):
    wanted = {
        "endpointPrivateAccess": params["endpoint_private_access"],
        "endpointPublicAccess": params["endpoint_public_access"],
        "subnetIds": sorted(params["subnets"]),
        "securityGroupIds": sorted(params["security_groups"]),
        "logTypes": sorted(params["log_types"]),
    }
    if params["endpoint_public_access"]:
        wanted["publicAccessCidrs"] = sorted(params["public_access_cidrs"])
    if params["version"]:
        wanted["version"] = params["version"]
    if params["role_arn"]:
        wanted["roleArn"] = params["role_arn"]
    return wanted


def current_settings(cluster, wanted):
    vpc = cluster.get("resourcesVpcConfig", {})
    enabled = set()
    for entry in cluster.get("logging", {}).get("clusterLogging", []):
        if entry.get("enabled"):
            enabled.update(entry.get("types", []))
    have = {
        "endpointPrivateAccess": bool(vpc.get("endpointPrivateAccess", False)),
        "endpointPublicAccess": bool(vpc.get("endpointPublicAccess", True)),
        "subnetIds": sorted(vpc.get("subnetIds", [])),
        "securityGroupIds": sorted(vpc.get("securityGroupIds", [])),
        "logTypes": sorted(enabled),
    }
    if "publicAccessCidrs" in wanted:
        have["publicAccessCidrs"] = sorted(vpc.get("publicAccessCidrs", ["0.0.0.0/0"]))
    if "version" in wanted:
        have["version"] = cluster.get("version")
    if "roleArn" in wanted:
        have["roleArn"] = cluster.get("roleArn")
    return have


def result_of(cluster, drift):
    if cluster is None:
        return {"drift": drift}
    return {
        "cluster": camel_dict_to_snake_dict(cluster, ignore_list=["tags"]),
        "endpoint": cluster.get("endpoint", ""),
        "certificate_authority_data": cluster.get("certificateAuthority", {}).get("data", ""),
        "drift": drift,
    }


def wait_active(client, module, name):
    delay = 20
    attempts = 1 + module.params["wait_timeout"] // delay
    try:
        client.get_waiter("cluster_active").wait(name=name, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
    except botocore.exceptions.WaiterError as e:
        module.fail_json_aws(e, msg=f"EKS cluster {name} did not become ACTIVE")


def create(client, module, wanted):
    params = module.params
    if not params["role_arn"]:
        module.fail_json(msg=f"EKS cluster {params['name']} does not exist and role_arn is empty: cannot create it")
    if len(params["subnets"]) < 2:
        module.fail_json(msg=f"EKS cluster {params['name']} needs subnets in at least two AZs, got {params['subnets']}")
    vpc_config = {
        "subnetIds": params["subnets"],
        "securityGroupIds": params["security_groups"],
        "endpointPrivateAccess": params["endpoint_private_access"],
        "endpointPublicAccess": params["endpoint_public_access"],
    }
    if params["endpoint_public_access"]:
        vpc_config["publicAccessCidrs"] = params["public_access_cidrs"]
    disabled = [t for t in ALL_LOG_TYPES if t not in params["log_types"]]
    logging = {"clusterLogging": []}
    if params["log_types"]:
        logging["clusterLogging"].append({"types": params["log_types"], "enabled": True})
    if disabled:
        logging["clusterLogging"].append({"types": disabled, "enabled": False})
    request = {
        "name": params["name"],
        "roleArn": params["role_arn"],
        "resourcesVpcConfig": vpc_config,
        "logging": logging,
        "tags": params["tags"],
    }
    if params["version"]:
        request["version"] = params["version"]
    try:
        client.create_cluster(**request)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Could not create EKS cluster {params['name']}")
    if params["wait"]:
        wait_active(client, module, params["name"])
    return describe(client, module, params["name"])


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        version=dict(type="str"),
        role_arn=dict(type="str"),
        subnets=dict(type="list", elements="str", default=[]),
        security_groups=dict(type="list", elements="str", default=[]),
        endpoint_private_access=dict(type="bool", default=True),
        endpoint_public_access=dict(type="bool", default=False),
        public_access_cidrs=dict(type="list", elements="str", default=["0.0.0.0/0"]),
        log_types=dict(type="list", elements="str", choices=ALL_LOG_TYPES, default=[]),
        tags=dict(type="dict", default={}),
        on_drift=dict(type="str", choices=["fail", "warn"], default="fail"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    name = params["name"]
    if not name:
        module.fail_json(msg="name (the EKS cluster name) must not be empty")
    if not params["endpoint_private_access"] and not params["endpoint_public_access"]:
        module.fail_json(msg="endpoint_private_access and endpoint_public_access cannot both be false")
    client = module.client("eks")
    wanted = wanted_settings(params)
    cluster = describe(client, module, name)

    if cluster is None:
        diff = {"before": {}, "after": wanted}
        if module.check_mode:
            module.exit_json(changed=True, diff=diff, drift=[], msg=f"EKS cluster {name} would be created")
        cluster = create(client, module, wanted)
        module.exit_json(changed=True, diff=diff, **result_of(cluster, []))

    if cluster.get("status") == "CREATING" and params["wait"]:
        wait_active(client, module, name)
        cluster = describe(client, module, name)
    if cluster.get("status") not in ("ACTIVE", "CREATING", "UPDATING"):
        module.fail_json(msg=f"EKS cluster {name} is {cluster.get('status')}, not ACTIVE", **result_of(cluster, []))

    have = current_settings(cluster, wanted)
    drift = [
        f"{key}: cluster has {have[key]!r}, inventory wants {wanted[key]!r}"
        for key in wanted
        if have[key] != wanted[key]
    ]

    changed = False
    missing_tags = {k: v for k, v in params["tags"].items() if cluster.get("tags", {}).get(k) != v}
    if missing_tags:
        changed = True
        if not module.check_mode:
            try:
                client.tag_resource(resourceArn=cluster["arn"], tags=missing_tags)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                module.fail_json_aws(e, msg=f"Could not tag EKS cluster {name}")
            cluster = describe(client, module, name)

    result = result_of(cluster, drift)
    if drift:
        message = (
            f"EKS cluster {name} differs from the inventory and this role does not change a running "
            f"cluster's {', '.join(d.split(':')[0] for d in drift)}: " + "; ".join(drift) + ". "
            "Change it deliberately (aws eks update-cluster-config / update-cluster-version, or recreate), "
            "or align the inventory."
        )
        if params["on_drift"] == "fail":
            module.fail_json(msg=message, **result)
        module.warn(message)
    module.exit_json(changed=changed, diff={"before": have, "after": wanted}, **result)


if __name__ == "__main__":
    main()
