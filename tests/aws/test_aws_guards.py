"""Regression tests of issue 15 (defects 3 and 7) for playbooks/site/aws.yml and the moto role:
the loopback guard runs for any --tags, a region that is not an AWS region fails first naming
boutique_aws_region, and a moto that cannot start says why. None of these runs reaches AWS:
each fails (or the launcher runs) on 127.0.0.1 before any AWS call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import ROOT

pytestmark = [pytest.mark.aws]

VENV_BIN = Path(sys.executable).parent
LAUNCHER = ROOT / "roles" / "moto" / "files" / "moto_server_patched.py"
DAEMONIZE = ROOT / "plugins" / "daemonize.py"


def _play(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventories/local", "playbooks/site/aws.yml",
                           "-e", f"moto_state_dir={tmp_path / 'moto'}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("tag", ["network", "eks", "ecr"])
def test_a_tagged_run_still_refuses_a_non_loopback_endpoint(tmp_path: Path, tag: str) -> None:
    """Defect 3: `--tags network` skipped the guard and the moto start (tags on include_role)."""
    # Not moto's address, yet still loopback (127/8): even a regressed guard sends nothing off the machine.
    run = _play(tmp_path, "--tags", tag, "-e", "boutique_aws_endpoint_url=http://127.0.0.2:9")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Refusing to run" in out, out[-3000:]
    assert "TASK [moto : Refuse anything but a loopback moto endpoint]" in out
    for touching_aws in ("Ensure the VPC", "Find the private subnets", "Create or update the ECR"):
        assert touching_aws not in out


def test_a_region_that_is_not_an_aws_region_fails_first_naming_the_variable(tmp_path: Path) -> None:
    """Defect 7: mars-north-1 passed every validation and failed inside moto with a 500."""
    run = _play(tmp_path, "-e", "boutique_aws_region=mars-north-1")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "boutique_aws_region=mars-north-1 is not an AWS region name" in out, out[-3000:]
    assert "Start the moto server" not in out and "Ensure the VPC" not in out


def test_moto_ignores_aws_profile_and_a_failed_start_says_why(tmp_path: Path) -> None:
    """Defect 7: with AWS_PROFILE set moto died (ProfileNotFound) and the play said only "see moto.log"."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: moto cannot bind it, nobody answers on it
    port = holder.getsockname()[1]
    try:
        env = {**os.environ, "AWS_PROFILE": "no-such-profile"}
        # As roles/moto/tasks/daemon.yml starts it: the one daemonizer, without the profile variables.
        run = subprocess.run([sys.executable, str(DAEMONIZE), "--pidfile", str(tmp_path / "pid"),
                              "--logfile", str(tmp_path / "moto.log"), "--wait", "60", "--host", "127.0.0.1",
                              "--port", str(port), "--unset-env=AWS_PROFILE", "--unset-env=AWS_DEFAULT_PROFILE",
                              "--", sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port)],
                             env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        holder.close()
    assert run.returncode == 1
    assert "Address already in use" in run.stderr, run.stderr
    assert "AWS_PROFILE was set and is not passed to it" in run.stderr
    assert "ProfileNotFound" not in (tmp_path / "moto.log").read_text()
