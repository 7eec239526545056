"""Session fixtures shared by every test folder; the helpers live in tests/testkit.py
(`from testkit import ...`), which pytest finds because this file's folder is on sys.path."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import ROOT, require_tool

# `make test` runs two lanes at once (pytest-xdist: -n 2 --dist loadscope, with the scopes below).
# The tests that share the test node, the Docker engine and the loopback registry (tests/cluster,
# tests/image) run in file order in one worker; every other test runs in file order in the other.
# Each lane is serial inside, as a plain `pytest tests` is, and the lanes share no port, folder or
# daemon. Without xdist this hook is never called.
SHARED_HOST_LANE = frozenset({"cluster", "image"})


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class TwoLanes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("/", 2)
            return "node" if len(parts) > 2 and parts[0] == "tests" and parts[1] in SHARED_HOST_LANE else "rest"

    return TwoLanes(config, log)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A running Docker engine for the image tests and the test node's images stage:
    scripts/dockerd.sh starts one when none answers, and the engine this fixture started is
    stopped again at the end of the session."""
    require_tool("dockerd", "the service images are built and run with the local Docker engine")
    require_tool("docker", "the service images are built and run with the local Docker engine")
    already_up = subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    script = str(ROOT / "scripts" / "dockerd.sh")
    proc = subprocess.run(["bash", script], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"scripts/dockerd.sh failed:\n{proc.stdout}\n{proc.stderr}")
    yield
    if not already_up:
        subprocess.run(["bash", script, "--stop"], capture_output=True, timeout=60, check=False)
