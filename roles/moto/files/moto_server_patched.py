#!/usr/bin/env python3
"""Start moto's AWS API server with two small test-only fixes (the embedded test double).

This file is used ONLY by the local (embedded) inventory, molecule and tests/aws:
production inventories never start moto and no production role imports it.

Fixes applied to moto 5.2.5 before its server starts (each is a moto bug, not a
behaviour our roles depend on in real AWS):

1. EC2 tag resource type of NAT gateways. moto files NAT gateway tags under the
   resource type "nat-gateway", real EC2 (and amazon.aws's describe_ec2_tags)
   use "natgateway". amazon.aws.ec2_vpc_nat_gateway therefore sees no tags and
   re-tags (changed=true) on every run.
2. EC2 UpdateSecurityGroupRuleDescriptions{Ingress,Egress} answer without the
   `Return` element real EC2 sends; amazon.aws.ec2_security_group fails with
   KeyError 'Return' whenever it only has to change a rule description.
3. EKS CreateNodegroup drops `updateConfig`. community.aws.eks_nodegroup reads
   nodegroup["updateConfig"] on every later run and fails with KeyError. We keep
   the value sent at create time (or EKS's documented default maxUnavailable=1).
4. EKS TagResource / UntagResource / ListTagsForResource only know clusters;
   real EKS tags node groups too, and community.aws.eks_nodegroup lists a node
   group's tags on every run (NotFoundException in moto). Node group ARNs are
   served from the node group's own tags.

MOTO_IAM_LOAD_MANAGED_POLICIES=true is set here too, so iam_role can attach the
AWS managed policies (AmazonEKSClusterPolicy, ...).

Usage:
    moto_server_patched.py -H 127.0.0.1 -p PORT
In the background through plugins/daemonize.py (the one daemonizer, as the registry uses it):
    daemonize.py --pidfile F --logfile L --port PORT -- python moto_server_patched.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import argparse
import os
import sys


def _patch_moto() -> None:
    from moto.ec2 import utils as ec2_utils
    from moto.eks.responses import EKSResponse

    # 1. NAT gateway tag resource type (the dict is shared with moto.ec2.models.tags).
    ec2_utils.EC2_PREFIX_TO_RESOURCE[ec2_utils.EC2_RESOURCE_TO_PREFIX["nat-gateway"]] = "natgateway"

    # 2. UpdateSecurityGroupRuleDescriptions* answer Return=true like EC2.
    from moto.core.responses import ActionResult
    from moto.ec2.responses.security_groups import SecurityGroups

    for action in ("update_security_group_rule_descriptions_ingress", "update_security_group_rule_descriptions_egress"):
        original = getattr(SecurityGroups, action)

        def with_return(self, _original=original):  # type: ignore[no-untyped-def]
            _original(self)
            return ActionResult({"Return": True})

        setattr(SecurityGroups, action, with_return)

    # 3. Keep updateConfig on CreateNodegroup.
    original_create_nodegroup = EKSResponse.create_nodegroup

    def create_nodegroup(self):  # type: ignore[no-untyped-def]
        result = original_create_nodegroup(self)
        cluster = self.eks_backend.clusters[self._get_param("name")]
        nodegroup = cluster.nodegroups[self._get_param("nodegroupName")]
        if nodegroup.update_config is None:
            nodegroup.update_config = self._get_param("updateConfig") or {"maxUnavailable": 1}
        return result

    EKSResponse.create_nodegroup = create_nodegroup

    # 4. Tag APIs for node groups.
    from moto.eks.models import EKSBackend

    def find_nodegroup(backend, arn):  # type: ignore[no-untyped-def]
        for cluster in backend.clusters.values():
            for nodegroup in cluster.nodegroups.values():
                if nodegroup.arn == arn:
                    return nodegroup
        return None

    original_tag, original_untag, original_list = (
        EKSBackend.tag_resource,
        EKSBackend.untag_resource,
        EKSBackend.list_tags_for_resource,
    )

    def tag_resource(self, resource_arn, tags):  # type: ignore[no-untyped-def]
        nodegroup = find_nodegroup(self, resource_arn)
        if nodegroup is None:
            return original_tag(self, resource_arn, tags)
        nodegroup.tags.update(tags)
        return None

    def untag_resource(self, resource_arn, tag_keys):  # type: ignore[no-untyped-def]
        nodegroup = find_nodegroup(self, resource_arn)
        if nodegroup is None:
            return original_untag(self, resource_arn, tag_keys)
        for key in tag_keys if isinstance(tag_keys, list) else [tag_keys]:
            nodegroup.tags.pop(key, None)
        return None

    def list_tags_for_resource(self, resource_arn):  # type: ignore[no-untyped-def]
        nodegroup = find_nodegroup(self, resource_arn)
        if nodegroup is None:
            return original_list(self, resource_arn)
        return nodegroup.tags

    EKSBackend.tag_resource = tag_resource
    EKSBackend.untag_resource = untag_resource
    EKSBackend.list_tags_for_resource = list_tags_for_resource


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    server_argv = ["-H", args.host, "-p", str(args.port)]
    _patch_moto()
    from moto.server import main as moto_main

    moto_main(server_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
