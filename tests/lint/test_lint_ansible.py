"""ansible-lint (production profile) and yamllint over the whole repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from testkit import ROOT, ansible_env

pytestmark = [pytest.mark.lint]

VENV_BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, env=ansible_env({"NO_COLOR": "1"}), capture_output=True, text=True,
                          timeout=600, check=False)


def test_ansible_lint_production_profile_is_clean() -> None:
    proc = _run(str(VENV_BIN / "ansible-lint"), "--profile", "production", "-f", "pep8")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]


def test_yamllint_is_clean() -> None:
    proc = _run(str(VENV_BIN / "yamllint"), "--strict", ".")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
