"""site.yml and playbooks/teardown.yml against a real moto server (the embedded AWS).

One moto server on a free port for the module; the tests run in file order and
share its state: create -> idempotent re-run -> check-mode drift -> fix ->
teardown. Each ansible-playbook run is a real subprocess with the local
inventory, only the port (and the kubeconfig path) overridden.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from testkit import MOTO_REGION, ROOT, VENV_BIN, PlaybookRun, aws_client, moto_server, run_playbook

pytestmark = [pytest.mark.aws, pytest.mark.slow]

REGION = MOTO_REGION
PROJECT = "boutique-mesh"
CLUSTER = "boutique-mesh-local"
NODEGROUP = f"{CLUSTER}-default"
Runs = dict[str, PlaybookRun]


@dataclass
class Moto:
    url: str
    workdir: Path
    runs: int = 0

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, service: str):  # type: ignore[no-untyped-def]
        return aws_client(self.url, service)

    def playbook(self, playbook: str, *args: str) -> PlaybookRun:
        # As on a machine without a Docker engine, whatever engine the other test lane runs: the images
        # stage says so and builds nothing (tests/image and tests/cluster test that stage).
        env = {"ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"), "DOCKER_HOST": f"unix://{self.workdir}/no.sock"}
        run = run_playbook(playbook, timeout=900, env=env,
                           unset=("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                           extra_args=["-e", f"moto_port={self.port}",
                                       "-e", f"eks_kubeconfig_path={self.workdir / 'kubeconfig.yaml'}", *args])
        self.runs += 1
        (self.workdir / f"run-{self.runs:02d}.log").write_text(" ".join(run.args) + "\n\n" + run.output)
        return run


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("moto")
    with moto_server(workdir) as url:
        yield Moto(url=url, workdir=workdir)


@pytest.fixture(scope="module")
def site(moto: Moto) -> Runs:
    """The first and the second site.yml run (timed)."""
    first = moto.playbook("site.yml")
    assert first.returncode == 0, first.output[-6000:]
    second = moto.playbook("site.yml")
    print(f"\nsite.yml against moto: first run {first.seconds:.1f}s, second run {second.seconds:.1f}s")
    (moto.workdir / "timings.json").write_text(json.dumps({"first": first.seconds, "second": second.seconds}))
    return {"first": first, "second": second}


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _vpc(moto: Moto) -> dict:
    vpcs = moto.client("ec2").describe_vpcs(Filters=[{"Name": "tag:Project", "Values": [PROJECT]}])["Vpcs"]
    assert len(vpcs) == 1, vpcs
    return vpcs[0]


def test_check_mode_on_an_empty_account_creates_nothing(moto: Moto) -> None:
    # Runs before the `site` fixture creates anything (file order).
    run = moto.playbook("site.yml", "--check", "--diff")
    assert run.returncode == 0, run.output[-6000:]
    assert "VPC boutique-mesh-local does not exist yet" in " ".join(run.output.split())
    assert moto.client("ec2").describe_vpcs(Filters=[{"Name": "tag:Project", "Values": [PROJECT]}])["Vpcs"] == []
    assert moto.client("eks").list_clusters()["clusters"] == []
    assert moto.client("ecr").describe_repositories()["repositories"] == []


def test_first_run_creates_everything_and_second_run_changes_nothing(site: Runs) -> None:
    first, second = site["first"].recap, site["second"].recap
    assert first["failed"] == 0 and first["changed"] > 10, first
    assert second["failed"] == 0, site["second"].output[-4000:]
    assert second["changed"] == 0, site["second"].output[-8000:]


def test_vpc_has_dns_and_project_tags(moto: Moto, site: Runs) -> None:
    vpc = _vpc(moto)
    ec2 = moto.client("ec2")
    assert vpc["CidrBlock"] == "10.40.0.0/16"
    assert _tags(vpc) == {"Name": CLUSTER, "Project": PROJECT, "Environment": "local", "ManagedBy": "ansible"}
    for attribute, key in (("enableDnsSupport", "EnableDnsSupport"), ("enableDnsHostnames", "EnableDnsHostnames")):
        assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute=attribute)[key]["Value"] is True


def test_public_and_private_subnets_in_two_azs_with_eks_tags(moto: Moto, site: Runs) -> None:
    vpc_id = _vpc(moto)["VpcId"]
    subnets = moto.client("ec2").describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert len(subnets) == 4
    public = [s for s in subnets if _tags(s).get("kubernetes.io/role/elb") == "1"]
    private = [s for s in subnets if _tags(s).get("kubernetes.io/role/internal-elb") == "1"]
    assert sorted(s["CidrBlock"] for s in public) == ["10.40.0.0/20", "10.40.16.0/20"]
    assert sorted(s["CidrBlock"] for s in private) == ["10.40.128.0/18", "10.40.64.0/18"]
    for group in (public, private):
        assert {s["AvailabilityZone"] for s in group} == {"eu-west-1a", "eu-west-1b"}
    for subnet in subnets:
        tags = _tags(subnet)
        assert tags[f"kubernetes.io/cluster/{CLUSTER}"] == "shared"
        assert tags["Project"] == PROJECT and tags["Name"].startswith(CLUSTER)


def test_igw_single_nat_and_route_tables(moto: Moto, site: Runs) -> None:
    ec2 = moto.client("ec2")
    vpc_id = _vpc(moto)["VpcId"]
    igws = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    igw_id = igws["InternetGateways"][0]["InternetGatewayId"]
    nats = ec2.describe_nat_gateways(Filter=[{"Name": "vpc-id", "Values": [vpc_id]}])["NatGateways"]
    nats = [n for n in nats if n["State"] in ("pending", "available")]
    assert len(nats) == 1, "network_nat_mode single: exactly one NAT gateway"
    assert _tags(nats[0])["Name"] == f"{CLUSTER}-nat-eu-west-1a"
    eips = ec2.describe_addresses(Filters=[{"Name": "tag:Project", "Values": [PROJECT]}])["Addresses"]
    assert len(eips) == 1, "two runs must not leak Elastic IPs"
    assert eips[0]["AllocationId"] == nats[0]["NatGatewayAddresses"][0]["AllocationId"]

    subnets = {
        s["SubnetId"]: _tags(s)
        for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    }
    tables = ec2.describe_route_tables(Filters=[{"Name": "tag:Project", "Values": [PROJECT]}])["RouteTables"]
    assert len(tables) == 3
    for table in tables:
        default = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        associated = [subnets[a["SubnetId"]] for a in table["Associations"] if a.get("SubnetId")]
        if _tags(table)["Name"] == f"{CLUSTER}-public":
            assert default[0]["GatewayId"] == igw_id
            assert len(associated) == 2 and all("kubernetes.io/role/elb" in t for t in associated)
        else:
            assert default[0]["NatGatewayId"] == nats[0]["NatGatewayId"]
            assert len(associated) == 1 and "kubernetes.io/role/internal-elb" in associated[0]


def test_security_groups_allow_api_from_nodes_and_kubelet_from_control_plane(moto: Moto, site: Runs) -> None:
    groups = moto.client("ec2").describe_security_groups(Filters=[{"Name": "tag:Project", "Values": [PROJECT]}])[
        "SecurityGroups"
    ]
    by_name = {g["GroupName"]: g for g in groups}
    cp, nodes = by_name[f"{CLUSTER}-eks-control-plane"], by_name[f"{CLUSTER}-eks-nodes"]

    def sources(group: dict, port: int) -> set[str]:
        found: set[str] = set()
        for perm in group["IpPermissions"]:
            if perm["IpProtocol"] == "-1" or perm.get("FromPort", 0) <= port <= perm.get("ToPort", 65535):
                found |= {p["GroupId"] for p in perm.get("UserIdGroupPairs", [])}
                found |= {r["CidrIp"] for r in perm.get("IpRanges", [])}
        return found

    assert sources(cp, 443) == {nodes["GroupId"], "10.40.0.0/16"}
    assert sources(cp, 22) == set(), "nothing but HTTPS reaches the control plane"
    assert sources(nodes, 10250) == {nodes["GroupId"], cp["GroupId"]}
    assert sources(nodes, 443) == {nodes["GroupId"], cp["GroupId"]}
    assert "0.0.0.0/0" not in sources(nodes, 22)


def test_iam_roles_have_the_eks_managed_policies(moto: Moto, site: Runs) -> None:
    iam = moto.client("iam")
    expected = {
        f"{CLUSTER}-cluster": {"AmazonEKSClusterPolicy"},
        f"{CLUSTER}-node": {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"},
    }
    for role, policies in expected.items():
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        assert {p["PolicyName"] for p in attached} == policies
        tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role)["Tags"]}
        assert tags["Project"] == PROJECT


def test_cluster_is_active_private_only_in_the_private_subnets(moto: Moto, site: Runs) -> None:
    cluster = moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]
    private_ids = {
        s["SubnetId"]
        for s in moto.client("ec2").describe_subnets(
            Filters=[{"Name": "tag:kubernetes.io/role/internal-elb", "Values": ["1"]}]
        )["Subnets"]
    }
    vpc = cluster["resourcesVpcConfig"]
    assert cluster["status"] == "ACTIVE"
    assert cluster["version"] == "1.33"
    assert set(vpc["subnetIds"]) == private_ids
    assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is False
    enabled = {t for e in cluster["logging"]["clusterLogging"] if e["enabled"] for t in e["types"]}
    assert enabled == {"api", "audit", "authenticator"}
    assert cluster["tags"]["Project"] == PROJECT


def test_nodegroup_is_sized_as_configured_in_the_private_subnets(moto: Moto, site: Runs) -> None:
    ng = moto.client("eks").describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
    cluster = moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]
    assert ng["status"] == "ACTIVE"
    assert ng["scalingConfig"] == {"minSize": 2, "desiredSize": 3, "maxSize": 6}
    assert set(ng["subnets"]) == set(cluster["resourcesVpcConfig"]["subnetIds"])
    assert ng["instanceTypes"] == ["m6i.large"]
    assert ng["nodeRole"].endswith(f":role/{CLUSTER}-node")


def test_kubeconfig_uses_aws_eks_get_token(moto: Moto, site: Runs) -> None:
    path = moto.workdir / "kubeconfig.yaml"
    assert path.stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load(path.read_text())
    cluster = moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]
    assert config["clusters"][0]["cluster"]["server"] == cluster["endpoint"]
    exec_ = config["users"][0]["user"]["exec"]
    assert exec_["command"] == "aws"
    assert exec_["args"][2:6] == ["eks", "get-token", "--cluster-name", CLUSTER]
    assert config["current-context"] == CLUSTER


def test_ecr_repository_per_catalog_service_with_scanning_and_lifecycle(moto: Moto, site: Runs) -> None:
    catalog = yaml.safe_load((ROOT / "group_vars" / "all" / "catalog.yml").read_text())
    wanted = {f"{PROJECT}/{s['name']}" for s in catalog["boutique_services"]}
    ecr = moto.client("ecr")
    repos = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
    assert wanted <= set(repos)
    for name in wanted:
        assert repos[name]["imageScanningConfiguration"]["scanOnPush"] is True
        assert repos[name]["imageTagMutability"] == "IMMUTABLE"
        policy = json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])
        assert [r["selection"]["tagStatus"] for r in policy["rules"]] == ["untagged", "any"]
    registry = repos[next(iter(wanted))]["repositoryUri"].split("/")[0]
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.eu-west-1\.amazonaws\.com", registry)


def test_check_mode_reports_nodegroup_drift_without_fixing_it(moto: Moto, site: Runs) -> None:
    eks = moto.client("eks")
    eks.update_nodegroup_config(
        clusterName=CLUSTER, nodegroupName=NODEGROUP, scalingConfig={"minSize": 2, "desiredSize": 5, "maxSize": 6}
    )
    check = moto.playbook("site.yml", "--check", "--diff")
    assert check.returncode == 0, check.output[-4000:]
    assert check.recap["changed"] >= 1
    assert re.search(r"changed: \[localhost\]", check.output.split("Ensure the managed node group")[1].split("TASK")[0])
    flat = " ".join(check.output.split())
    assert f"Node group {NODEGROUP} scaling is min=2 desired=5 max=6" in flat, check.output[-6000:]
    assert "the inventory wants min=2 desired=3 max=6 (check mode: not changed)" in flat
    ng = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
    assert ng["scalingConfig"]["desiredSize"] == 5, "check mode must not change anything"

    # The eks stage alone (no network facts: subnets and SG found by tag) fixes it.
    fix = moto.playbook("site.yml", "--tags", "eks")
    assert fix.returncode == 0, fix.output[-4000:]
    ng = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=NODEGROUP)["nodegroup"]
    assert ng["scalingConfig"]["desiredSize"] == 3


def test_cluster_endpoint_drift_fails_naming_the_field(moto: Moto, site: Runs) -> None:
    run = moto.playbook("site.yml", "--tags", "eks", "-e", "eks_endpoint_public_access=true")
    assert run.returncode != 0
    assert "endpointPublicAccess: cluster has False, inventory wants True" in run.output
    vpc = moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]["resourcesVpcConfig"]
    assert vpc["endpointPublicAccess"] is False


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ("network_vpc_cidr=10.40.0.0/33", "network_vpc_cidr"),
        ('{"network_azs": ["eu-west-1a"]}', "network_azs"),
        ('{"network_public_subnet_cidrs": ["10.99.0.0/20", "10.40.16.0/20"]}', "network_public_subnet_cidrs"),
        ("eks_cluster_name=", "eks_cluster_name"),
        ('{"eks_node_instance_types": ["large"]}', "eks_node_instance_types"),
    ],
)
def test_bad_inventory_value_fails_before_touching_aws(moto: Moto, extra: str, variable: str) -> None:
    run = moto.playbook("site.yml", "-e", extra)
    assert run.returncode != 0
    assert variable in run.output
    assert "Traceback" not in run.output
    assert "TASK [network : Ensure the VPC]" not in run.output, "validation must run before any AWS call"


def test_local_inventory_refuses_a_non_loopback_endpoint(moto: Moto) -> None:
    run = moto.playbook("site.yml", "-e", "boutique_aws_endpoint_url=https://ec2.eu-west-1.amazonaws.com")
    assert run.returncode != 0
    assert "Refusing to run" in run.output
    assert "TASK [network : Ensure the VPC]" not in run.output


def test_teardown_check_mode_changes_nothing(moto: Moto, site: Runs) -> None:
    run = moto.playbook("playbooks/teardown.yml", "--check", "--diff")
    assert run.returncode == 0, run.output[-4000:]
    assert run.recap["changed"] > 0
    assert moto.client("eks").describe_cluster(name=CLUSTER)["cluster"]["status"] == "ACTIVE"
    _vpc(moto)


def test_teardown_removes_everything_and_is_rerunnable(moto: Moto, site: Runs) -> None:
    first = moto.playbook("playbooks/teardown.yml")
    assert first.returncode == 0, first.output[-6000:]
    ec2 = moto.client("ec2")
    project = [{"Name": "tag:Project", "Values": [PROJECT]}]
    # Every EC2 resource type the network role makes, looked up by the project tag.
    # (moto keeps deleted resources' rows in DescribeTags, so each type is listed.)
    assert ec2.describe_vpcs(Filters=project)["Vpcs"] == []
    assert ec2.describe_subnets(Filters=project)["Subnets"] == []
    assert ec2.describe_internet_gateways(Filters=project)["InternetGateways"] == []
    assert ec2.describe_route_tables(Filters=project)["RouteTables"] == []
    assert ec2.describe_security_groups(Filters=project)["SecurityGroups"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    live_nats = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] not in ("deleted", "deleting")]
    assert live_nats == []
    assert moto.client("eks").list_clusters()["clusters"] == []
    assert [r["RoleName"] for r in moto.client("iam").list_roles()["Roles"] if r["RoleName"].startswith(CLUSTER)] == []
    repos = moto.client("ecr").describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos if r["repositoryName"].startswith(PROJECT)] == []
    tagged = moto.client("resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": "Project", "Values": [PROJECT]}]
    )["ResourceTagMappingList"]
    deleted_nats = {n["NatGatewayId"] for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] == "deleted"}
    assert [t["ResourceARN"] for t in tagged if t["ResourceARN"].rsplit("/", 1)[-1] not in deleted_nats] == []
    assert not (moto.workdir / "kubeconfig.yaml").exists()

    again = moto.playbook("playbooks/teardown.yml")
    assert again.returncode == 0, again.output[-4000:]
    assert again.recap["changed"] == 0, again.output[-6000:]


def test_production_inventory_never_starts_moto() -> None:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [
            str(VENV_BIN / "ansible-inventory"),
            "-i",
            "inventories/production",
            "--playbook-dir",
            "playbooks/site",
            "--host",
            "localhost",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    hostvars = json.loads(proc.stdout)
    assert hostvars["boutique_aws_embedded"] is False
    assert hostvars["boutique_aws_endpoint_url"] == ""
    assert "moto_port" not in hostvars
