"""Molecule scenarios of the Kubernetes roles.

The render scenarios (microservice, istio, observability) converge each role in
render mode, check idempotence and verify the rendered objects (the node-* scenarios, which
apply the roles to the test node, run in tests/cluster). Scenarios run concurrently
(independent ephemeral directories).
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from testkit import ROOT, ansible_env

pytestmark = [pytest.mark.molecule, pytest.mark.k8s, pytest.mark.slow]

RENDER_SCENARIOS = ("microservice", "istio", "observability")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def molecule_test(scenario: str) -> subprocess.CompletedProcess:
    env = ansible_env({"NO_COLOR": "1"}, unset=["ANSIBLE_CONFIG"])  # .config/molecule/config.yml carries them
    return subprocess.run([str(ROOT / ".venv/bin/molecule"), "test", "-s", scenario], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(RENDER_SCENARIOS, pool.map(molecule_test, RENDER_SCENARIOS), strict=True))


def output(result: subprocess.CompletedProcess) -> str:
    return ANSI.sub("", result.stdout + result.stderr)


@pytest.mark.parametrize("scenario", RENDER_SCENARIOS)
def test_render_scenario_converges_idempotently_and_verifies(results, scenario):
    result = results[scenario]
    text = output(result)
    assert result.returncode == 0, text[-6000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{scenario}\s*(?:➜|>)\s*{step}\]?:?\s*Executed: Successful", text), f"{step} failed"
