"""The molecule scenarios of the AWS roles, run offline against moto.

`molecule test -s network|eks` runs destroy, create (starts moto), converge,
idempotence (second converge must report changed=0), verify, destroy (stops moto).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from testkit import ROOT, VENV_BIN, PlaybookRun, ansible_env, free_port

pytestmark = [pytest.mark.molecule, pytest.mark.aws, pytest.mark.slow]


@pytest.mark.parametrize("scenario", ["network", "eks"])
def test_molecule_scenario_passes(scenario: str, tmp_path: Path) -> None:
    env = ansible_env({"BOUTIQUE_MOTO_PORT": str(free_port()), "NO_COLOR": "1",
                       "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "TMPDIR": str(tmp_path)})
    args = [str(VENV_BIN / "molecule"), "test", "-s", scenario]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    run = PlaybookRun(args, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)
    print(f"\nmolecule test -s {scenario}: {run.seconds:.1f}s")
    assert run.returncode == 0, run.output[-8000:]
    assert "idempotence" in run.output and "Executed: Successful" in run.output
    # Every ansible-playbook run molecule made (create, converge, idempotence, verify, destroy)
    # ends without a failed or unreachable host: counted in each PLAY RECAP, not searched for.
    recaps = run.recaps
    assert len(recaps) >= 3, run.output[-8000:]  # at least create, converge and verify
    assert [(r["failed"], r["unreachable"]) for r in recaps] == [(0, 0)] * len(recaps), run.output[-8000:]
