#!/usr/bin/python
# Copyright: Boutique Mesh contributors
# Apache-2.0 (see the project's licence)
"""Read the status of an EKS cluster or managed node group (one call, no waiting)."""

from __future__ import annotations

import contextlib

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

DOCUMENTATION = r"""
---
module: boutique_eks_status
short_description: Status of an EKS cluster or managed node group
description:
  - One DescribeCluster or DescribeNodegroup call; returns its C(status) (for example
    CREATING, ACTIVE, DELETING, CREATE_FAILED) or C(ABSENT) when it does not exist.
  - The eks role polls it in a loop that prints every attempt and state
    (roles/eks/tasks/wait.yml) instead of one silent wait of up to eks_wait_timeout.
  - Read-only; supports check mode.
version_added: "0.1.0"
author: Boutique Mesh platform team
options:
  cluster_name:
    description: EKS cluster name.
    type: str
    required: true
  nodegroup_name:
    description: Node group name; empty describes the cluster itself.
    type: str
    default: ""
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read the cluster's status
  boutique_eks_status:
    cluster_name: boutique-mesh-prod
  register: status
"""

RETURN = r"""
status:
  description: The EKS status, or ABSENT.
  type: str
  returned: always
health:
  description: Health issues EKS reports (node groups; cluster health on newer APIs), as code and message.
  type: list
  elements: str
  returned: always
"""


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"cluster_name": {"type": "str", "required": True},
                       "nodegroup_name": {"type": "str", "default": ""}},
        supports_check_mode=True,
    )
    client = module.client("eks")
    cluster, nodegroup = module.params["cluster_name"], module.params["nodegroup_name"]
    try:
        if nodegroup:
            found = client.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)["nodegroup"]
        else:
            found = client.describe_cluster(name=cluster)["cluster"]
    except is_boto3_error_code("ResourceNotFoundException"):
        module.exit_json(changed=False, status="ABSENT", health=[])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:  # pylint: disable=duplicate-except
        what = f"node group {nodegroup} of cluster {cluster}" if nodegroup else f"cluster {cluster}"
        module.fail_json_aws(exc, msg=f"cannot describe EKS {what}")
    issues = (found.get("health") or {}).get("issues") or []
    health = [f"{i.get('code')}: {i.get('message')}" for i in issues]
    module.exit_json(changed=False, status=str(found.get("status", "UNKNOWN")), health=health)


if __name__ == "__main__":
    main()
