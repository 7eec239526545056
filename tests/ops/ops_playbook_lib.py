"""Helpers for the ops playbook tests: run ansible-playbook, real redis-server, real moto.

Imported by the tests as `ops_playbook_lib` (a unique module name across the repo).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _shared_conftest():
    """tests/conftest.py (require_tool, free_port) loaded under a private name."""
    spec = importlib.util.spec_from_file_location("boutique_shared_conftest", ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SHARED = _shared_conftest()
free_port = _SHARED.free_port
require_tool = _SHARED.require_tool

VENV_BIN = ROOT / ".venv" / "bin"
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    args: list[str]
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, int]:
        matches = RECAP.findall(self.output)
        assert matches, f"no PLAY RECAP in the output of {' '.join(self.args)}:\n{self.output[-3000:]}"
        ok, changed, unreachable, failed = (int(x) for x in matches[-1])
        return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}

    @property
    def flat(self) -> str:
        """The output with every run of whitespace as one space (YAML output wraps long messages)."""
        return re.sub(r"\s+", " ", self.output)

    @property
    def changed(self) -> int:
        return self.recap["changed"]

    def assert_ok(self) -> PlaybookRun:
        assert self.returncode == 0, f"{' '.join(self.args)} failed ({self.returncode}):\n{self.output[-6000:]}"
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


@pytest.fixture
def playbook():
    return run_playbook


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


def start_redis(tmp_path: Path) -> RedisServer:
    binary = require_tool("redis-server", "cart backup/restore round trip against a real Redis")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return RedisServer(port, proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two independent redis-servers: the source of a backup and the restore target."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_redis(tmp_path / "a")
    b = None
    try:
        b = start_redis(tmp_path / "b")
        yield a, b
    finally:
        _stop(a.proc)
        if b:
            _stop(b.proc)


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real moto server (the project's patched start-up script) on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    script = ROOT / "roles" / "moto" / "files" / "moto_server_patched.py"
    env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(script), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def aws_vars(endpoint: str) -> dict[str, Any]:
    """Extra vars pointing the local inventory's plays at a test moto server."""
    port = int(endpoint.rsplit(":", 1)[1])
    return {"boutique_aws_endpoint_url": endpoint, "moto_port": port}


# Runner port offsets for the ops tests: away from the other areas' usual offsets
# and not 5/50/70 apart from each other (the catalog's local ports are that close).
OPS_PORT_OFFSETS = (311, 337, 363, 389, 413, 439)


def start_shop(**kwargs):
    """Start a local Shop on the first free ops port offset (real processes)."""
    from boutique.runner import PortInUseError, Shop

    last: Exception | None = None
    for offset in OPS_PORT_OFFSETS:
        shop = Shop(port_offset=offset, **kwargs)
        try:
            return shop.start()
        except PortInUseError as exc:
            last = exc
    raise AssertionError(f"no free port offset for the shop among {OPS_PORT_OFFSETS}: {last}")
