#!/usr/bin/python
"""Ansible module: describe one EKS managed node group (community.aws has no info module)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ops_eks_nodegroup_info
short_description: Describe an EKS managed node group
description:
  - Returns the node group as EKS DescribeNodegroup does (snake_case keys), or C(exists=false).
  - Read-only; supports check mode.
options:
  cluster_name:
    description: EKS cluster name.
    type: str
    required: true
  name:
    description: Node group name; empty lists the cluster's node groups instead.
    type: str
    default: ""
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: Boutique Mesh SRE
"""

EXAMPLES = r"""
- name: Describe the node group
  ops_eks_nodegroup_info:
    cluster_name: boutique-mesh-prod
    name: boutique-mesh-prod-default
  register: ng
"""

RETURN = r"""
exists:
  description: Whether the node group exists.
  type: bool
  returned: always
nodegroup:
  description: DescribeNodegroup's nodegroup, keys in snake_case (tags and labels kept as is).
  type: dict
  returned: when exists
nodegroups:
  description: Names of the cluster's node groups (when name is empty).
  type: list
  elements: str
  returned: when name is empty
"""

import contextlib  # noqa: E402  (imports follow the module documentation, as Ansible modules do)

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict  # noqa: E402
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule  # noqa: E402

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={"cluster_name": {"type": "str", "required": True}, "name": {"type": "str", "default": ""}},
        supports_check_mode=True,
    )
    client = module.client("eks")
    cluster, name = module.params["cluster_name"], module.params["name"]
    try:
        if not name:
            pages = client.get_paginator("list_nodegroups").paginate(clusterName=cluster)
            names = [n for page in pages for n in page.get("nodegroups", [])]
            module.exit_json(changed=False, exists=bool(names), nodegroups=names)
        nodegroup = client.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            module.exit_json(changed=False, exists=False)
        module.fail_json_aws(exc, msg=f"cannot describe node group {name} of cluster {cluster}")
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json_aws(exc, msg=f"cannot describe node group {name} of cluster {cluster}")
    module.exit_json(changed=False, exists=True,
                     nodegroup=camel_dict_to_snake_dict(nodegroup, ignore_list=["tags", "labels"]))


if __name__ == "__main__":
    main()
