"""Helpers shared by the tests, importable from any test module or conftest as `testkit`
(pytest puts tests/ on sys.path when it loads tests/conftest.py, which re-exports these).

Skips must be rare, loud and explained: `require_tool` skips with a reason when
a system tool is missing on a developer machine, but FAILS under CI (CI=true),
where .ci/run has installed every tool and a missing one is a broken setup.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, why: str) -> str:
    """Return the path of executable `name`; skip loudly (fail under CI) if absent."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path:
        return path
    message = f"{name} is not installed ({why}); `make system-deps` installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


# Below Linux's ephemeral range (32768-60999), so no outgoing connection on this machine can take
# the port between our check and the server's bind; above every shop port at offsets up to 5400.
FREE_PORTS = range(25000, 32768)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    rng = random.Random()
    for _ in range(100):
        port = rng.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # that range is crowded: any port the kernel offers
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The shop's checkout form, filled in correctly (a VISA card payment accepts), and the prices on a page.
CHECKOUT_FORM = {
    "email": "someone@example.com", "street_address": "1600 Amphitheatre Parkway", "zip_code": "94043",
    "city": "Mountain View", "state": "CA", "country": "United States",
    "credit_card_number": "4432801561520454", "credit_card_expiration_month": "1",
    "credit_card_expiration_year": "2040", "credit_card_cvv": "672",
}


def prices(html: str) -> list[str]:
    """The prices a shop page shows, in page order."""
    return re.findall(r'class="price[^"]*">([^<]+)<', html)


# --- ansible-playbook -----------------------------------------------------------------------------
VENV_BIN = ROOT / ".venv" / "bin"
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    """One ansible-playbook run: its arguments, exit status and output, with the recap parsed."""

    args: list[str]
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, int]:
        """Totals over every host of the last PLAY RECAP."""
        matches = RECAP.findall(self.output)
        assert matches, f"no PLAY RECAP in the output of {' '.join(self.args)}:\n{self.output[-3000:]}"
        last_recap = self.output.rsplit("PLAY RECAP", 1)[-1]
        rows = RECAP.findall(last_recap) or matches[-1:]
        totals = {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0}
        for row in rows:
            for key, value in zip(totals, row, strict=True):
                totals[key] += int(value)
        return totals

    @property
    def changed(self) -> int:
        return self.recap["changed"]

    @property
    def flat(self) -> str:
        """The output with every run of whitespace as one space (YAML output wraps long messages)."""
        return re.sub(r"\s+", " ", self.output)

    def assert_ok(self) -> PlaybookRun:
        assert self.returncode == 0, f"{' '.join(self.args)} failed ({self.returncode}):\n{self.output[-6000:]}"
        assert self.recap["failed"] == 0 and self.recap["unreachable"] == 0, self.output[-6000:]
        return self

    def assert_failed_with(self, *fragments: str) -> None:
        assert self.returncode != 0, f"expected {' '.join(self.args)} to fail:\n{self.output[-3000:]}"
        for fragment in fragments:
            assert fragment in self.flat, f"{fragment!r} not in the output:\n{self.output[-4000:]}"


def ansible_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PYTHONUNBUFFERED": "1",
                "ANSIBLE_DEPRECATION_WARNINGS": "0"})
    env.update(extra or {})
    return env


def run_playbook(playbook: str, extra_vars: Mapping[str, Any] | None = None, *, check: bool = False,
                 diff: bool = False, inventory: str = "inventories/local", env: Mapping[str, str] | None = None,
                 timeout: float = 300, extra_args: Sequence[str] = ()) -> PlaybookRun:
    """ansible-playbook from the repository root with the venv's tools first on PATH."""
    args = [str(VENV_BIN / "ansible-playbook"), "-i", inventory, playbook, *extra_args]
    if extra_vars:
        args += ["-e", json.dumps(dict(extra_vars))]
    if check:
        args.append("--check")
    if diff:
        args.append("--diff")
    proc = subprocess.run(args, cwd=ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout,
                          check=False)
    return PlaybookRun(args, proc.returncode, proc.stdout + proc.stderr)
