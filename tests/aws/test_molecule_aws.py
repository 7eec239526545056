"""The molecule scenarios of the AWS roles, run offline against moto.

`molecule test -s network|eks` runs destroy, create (starts moto), converge,
idempotence (second converge must report changed=0), verify, destroy (stops moto).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port

pytestmark = [pytest.mark.molecule, pytest.mark.aws, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("scenario", ["network", "eks"])
def test_molecule_scenario_passes(scenario: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "BOUTIQUE_MOTO_PORT": str(free_port()),
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "TMPDIR": str(tmp_path),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [str(VENV_BIN / "molecule"), "test", "-s", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    print(f"\nmolecule test -s {scenario}: {time.monotonic() - started:.1f}s")
    assert proc.returncode == 0, output[-8000:]
    assert "idempotence" in output and "Executed: Successful" in output
    assert "failed=1" not in output
