"""The eks role's waits show their progress: every check prints the attempt (n of m) and the EKS
status, against a real moto server of this test's own (a free port, not the shared 4599)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from testkit import MOTO_REGION, ROOT, VENV_BIN, PlaybookRun, aws_client, moto_server, run_playbook

pytestmark = [pytest.mark.aws, pytest.mark.slow]
REGION = MOTO_REGION


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto-progress")) as url:
        aws_client(url, "eks").create_cluster(name="progress", roleArn="arn:aws:iam::123456789012:role/eks",
                                              resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]})
        yield url


def _wait(url: str, tmp_path: Path, **params: object) -> PlaybookRun:
    play = [{"name": "Wait like the eks role", "hosts": "localhost", "gather_facts": False, "connection": "local",
             "tasks": [{"name": "Poll", "ansible.builtin.include_tasks": str(ROOT / "roles/eks/tasks/wait.yml"),
                        "vars": {"eks_cluster_name": "progress", "eks_wait_nodegroup": "",
                                 "eks_wait_timeout": 0, "eks_wait_delay": 0, **params}}]}]
    (tmp_path / "wait.yml").write_text(yaml.safe_dump(play))
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "ANSIBLE_LIBRARY": str(ROOT / "plugins/modules"),
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    return run_playbook(str(tmp_path / "wait.yml"), {"ansible_python_interpreter": str(VENV_BIN / "python")},
                        inventory="localhost,", env=env, unset=["AWS_PROFILE"])


def _progress(output: str) -> list[tuple[str, int, int]]:
    return [(m[1], int(m[2]), int(m[3])) for m in
            re.finditer(r"EKS cluster progress: (\w+) \(attempt (\d+) of\s+(\d+)", output)]


def test_a_wait_that_is_met_prints_its_one_check(moto_url: str, tmp_path: Path) -> None:
    run = _wait(moto_url, tmp_path, eks_wait_label="EKS cluster progress", eks_wait_for=["ACTIVE"],
                eks_wait_attempts=5)
    assert run.returncode == 0, run.output[-3000:]
    assert _progress(run.output) == [("ACTIVE", 1, 5)]


def test_a_wait_that_is_not_met_prints_every_attempt_then_fails_clearly(moto_url: str, tmp_path: Path) -> None:
    run = _wait(moto_url, tmp_path, eks_wait_label="EKS cluster progress", eks_wait_for=["ABSENT"],
                eks_wait_attempts=3)
    assert run.returncode != 0
    assert _progress(run.output) == [("ACTIVE", 1, 3), ("ACTIVE", 2, 3), ("ACTIVE", 3, 3)]
    assert "is still ACTIVE after 3 checks" in run.output


def test_a_missing_cluster_reads_as_absent(moto_url: str, tmp_path: Path) -> None:
    run = _wait(moto_url, tmp_path, eks_cluster_name="never-made", eks_wait_label="EKS cluster progress",
                eks_wait_for=["ABSENT"], eks_wait_attempts=2)
    assert run.returncode == 0, run.output[-3000:]
    assert _progress(run.output) == [("ABSENT", 1, 2)]
