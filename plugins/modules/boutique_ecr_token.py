#!/usr/bin/python
"""Ansible module: an ECR registry login token (boto3 GetAuthorizationToken)."""

from __future__ import annotations

import base64

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: boutique_ecr_token
short_description: Get a Docker login for the account's ECR registry
description:
  - Calls ECR GetAuthorizationToken with the usual AWS credential chain and returns
    the registry host, user name and password for community.docker.docker_login,
    and the base64 token for the registry's HTTP API (Authorization Basic).
  - Read-only; never reports changed. The password and token are marked no_log.
options:
  region:
    description: AWS region of the registry.
    type: str
    required: true
  endpoint_url:
    description: ECR API endpoint override (the embedded moto server); empty = AWS.
    type: str
    default: ""
  profile:
    description: Named AWS profile; empty = the default credential chain.
    type: str
    default: ""
author: Boutique Mesh platform team
"""

RETURN = r"""
registry:
  description: Registry host, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com.
  type: str
  returned: success
username:
  description: Always AWS.
  type: str
  returned: success
password:
  description: Registry password (valid 12 hours).
  type: str
  returned: success
token:
  description: base64 of username:password, for an Authorization Basic header.
  type: str
  returned: success
expires_at:
  description: ISO 8601 expiry time.
  type: str
  returned: success
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str", "default": ""},
            "profile": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        module.fail_json(msg="boto3 is required on the controller (pip install boto3)")
    p = module.params
    try:
        session = boto3.session.Session(profile_name=p["profile"] or None, region_name=p["region"])
        client = session.client("ecr", endpoint_url=p["endpoint_url"] or None)
        data = client.get_authorization_token()["authorizationData"][0]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        module.fail_json(msg=f"ECR GetAuthorizationToken failed in {p['region']}: {exc}")
    token = data["authorizationToken"]
    try:
        username, password = base64.b64decode(token).decode().split(":", 1)
    except ValueError:
        module.fail_json(msg="ECR returned a malformed authorization token")
    module.no_log_values.update({password, token})
    registry = data["proxyEndpoint"].split("://", 1)[-1].rstrip("/")
    module.exit_json(changed=False, registry=registry, username=username, password=password, token=token,
                     expires_at=data["expiresAt"].isoformat() if hasattr(data["expiresAt"], "isoformat")
                     else str(data["expiresAt"]))


if __name__ == "__main__":
    main()
