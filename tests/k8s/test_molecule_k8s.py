"""Molecule scenarios of the Kubernetes roles.

The render scenarios (microservice, istio, observability) converge each role in
render mode, check idempotence and verify the rendered objects. The kind scenarios
need Docker and kind: without kind on PATH they must succeed while saying loudly
that they skipped. Scenarios run concurrently (independent ephemeral directories).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from testkit import ROOT, ansible_env

pytestmark = [pytest.mark.molecule, pytest.mark.k8s, pytest.mark.slow]

RENDER_SCENARIOS = ("microservice", "istio", "observability")
KIND_SCENARIOS = ("kind-microservice", "kind-istio", "kind-observability")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def molecule_test(scenario: str) -> subprocess.CompletedProcess:
    env = ansible_env({"NO_COLOR": "1"}, unset=["ANSIBLE_CONFIG"])  # molecule.yml carries the ansible settings
    return subprocess.run([str(ROOT / ".venv/bin/molecule"), "test", "-s", scenario], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess]:
    scenarios = RENDER_SCENARIOS + (KIND_SCENARIOS if not shutil.which("kind") else ())
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(scenarios, pool.map(molecule_test, scenarios), strict=True))


def output(result: subprocess.CompletedProcess) -> str:
    return ANSI.sub("", result.stdout + result.stderr)


@pytest.mark.parametrize("scenario", RENDER_SCENARIOS)
def test_render_scenario_converges_idempotently_and_verifies(results, scenario):
    result = results[scenario]
    text = output(result)
    assert result.returncode == 0, text[-6000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{scenario}\s*(?:➜|>)\s*{step}\]?:?\s*Executed: Successful", text), f"{step} failed"


@pytest.mark.parametrize("scenario", KIND_SCENARIOS)
def test_kind_scenario_skips_loudly_without_kind(results, scenario):
    if shutil.which("kind"):
        pytest.skip("kind is installed: run `molecule test -s kind-...` by hand against a real cluster")
    result = results[scenario]
    text = output(result)
    assert result.returncode == 0, text[-6000:]
    sequence = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())["scenario"]["test_sequence"]
    steps = set(re.findall(rf"{scenario}\s*(?:➜|>)\s*(\w+)\]?:?\s*Executed: Successful", text))
    assert steps == set(sequence) == {"create", "converge", "idempotence", "verify", "destroy"}
    # Every playbook said why, and every play after the gate matched no host: nothing
    # touched a cluster, nothing changed.
    assert text.count("SKIPPED: kind is not on PATH") == len(sequence)
    assert text.count("skipping: no hosts matched") >= len(sequence)
    assert not re.search(r"changed=[1-9]", text)
