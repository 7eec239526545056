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
    moto_server_patched.py [--daemon --pidfile F --logfile F [--wait S]] -H 127.0.0.1 -p PORT
With --daemon the server is started in its own session, its pid written to the
pidfile, and this process exits 0 once the port accepts connections (1 if not).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time


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


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# The test double needs no AWS profile; botocore inside moto fails at start-up with
# ProfileNotFound when one is set that the machine's AWS config does not define.
PROFILE_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")


def _cause(logfile: str, since: int) -> str:
    """The last error line moto wrote to the log since offset `since` ("" when none)."""
    try:
        with open(logfile, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln.strip() for ln in lines if re.match(r"^\s*[\w.]+(Error|Exception|NotFound)\b.*:", ln)
              or "Address already in use" in ln]
    return errors[-1] if errors else (lines[-1].strip() if lines else "")


def _daemonize(argv: list[str], pidfile: str, logfile: str, host: str, port: int, wait: float) -> int:
    child_argv = [sys.executable, os.path.abspath(__file__), *argv]
    dropped = [name for name in PROFILE_VARIABLES if os.environ.get(name)]
    child_env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    since = os.path.getsize(logfile) if os.path.exists(logfile) else 0
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(
            child_argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=child_env,
        )
    with open(pidfile, "w", encoding="ascii") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _listening(host, port):
            print(f"moto listening on {host}:{port} (pid {proc.pid})")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    cause = _cause(logfile, since) or f"it did not listen within {wait:g}s"
    hint = f" ({', '.join(dropped)} was set and is not passed to moto)" if dropped else ""
    print(f"moto did not start on {host}:{port}: {cause}{hint}; full log: {logfile}", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--pidfile")
    parser.add_argument("--logfile")
    parser.add_argument("--wait", type=float, default=30.0)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    server_argv = ["-H", args.host, "-p", str(args.port)]
    if args.daemon:
        if not (args.pidfile and args.logfile):
            parser.error("--daemon needs --pidfile and --logfile")
        return _daemonize(server_argv, args.pidfile, args.logfile, args.host, args.port, args.wait)
    _patch_moto()
    from moto.server import main as moto_main

    moto_main(server_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
