"""Molecule: the Kubernetes roles' node scenarios (molecule/node-*) on the test node, one after the
other (they share the cluster): destroy, create, converge, idempotence, verify, destroy."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import pytest
from testkit import ROOT, ansible_env

pytestmark = [pytest.mark.timeout(1000), pytest.mark.slow, pytest.mark.cluster, pytest.mark.molecule]

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("scenario", ["node-istio", "node-observability", "node-microservice"])
def test_node_scenario_converges_idempotently_and_verifies(test_node: Any, image_refs: dict[str, str],
                                                           scenario: str) -> None:
    env = ansible_env({"NO_COLOR": "1"})
    env.pop("ANSIBLE_CONFIG", None)  # molecule.yml carries the scenario's ansible settings
    started = time.monotonic()
    result = subprocess.run([str(ROOT / ".venv/bin/molecule"), "test", "-s", scenario], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    print(f"\nmolecule test -s {scenario}: {time.monotonic() - started:.0f}s")
    text = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, text[-6000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{scenario}\s*(?:➜|>)\s*{step}\]?:?\s*Executed: Successful", text), f"{step} failed"
