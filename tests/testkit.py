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
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
    seconds: float = 0.0

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
    def recaps(self) -> list[dict[str, int]]:
        """Every PLAY RECAP of the output (one per ansible-playbook run that molecule makes, say),
        each as its totals over the hosts."""
        totals = []
        for section in self.output.split("PLAY RECAP")[1:]:
            rows = RECAP.findall(section.split("\n\n", 1)[0] if "\n\n" in section else section)
            if rows:
                totals.append({key: sum(int(row[i]) for row in rows)
                               for i, key in enumerate(("ok", "changed", "unreachable", "failed"))})
        return totals

    @property
    def changed(self) -> int:
        return self.recap["changed"]

    @property
    def changed_tasks(self) -> list[str]:
        """The TASK headers under which a host reported `changed` (for idempotence failures)."""
        found, task = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line.split("]", 1)[0] + "]"
            elif line.startswith("changed:") and task not in found:
                found.append(task)
        return found

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


def ansible_env(extra: Mapping[str, str] | None = None, unset: Sequence[str] = ()) -> dict[str, str]:
    """os.environ with the venv's tools first on PATH, plain output, `extra` added, `unset` removed."""
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PYTHONUNBUFFERED": "1",
                "ANSIBLE_DEPRECATION_WARNINGS": "0"})
    env.update(extra or {})
    return env


def run_playbook(playbook: str, extra_vars: Mapping[str, Any] | None = None, *, check: bool = False,
                 diff: bool = False, inventory: str = "inventories/local", env: Mapping[str, str] | None = None,
                 timeout: float = 300, extra_args: Sequence[str] = (), unset: Sequence[str] = ()) -> PlaybookRun:
    """ansible-playbook from the repository root with the venv's tools first on PATH
    (`unset`: environment variables the run must not see, e.g. AWS_PROFILE)."""
    args = [str(VENV_BIN / "ansible-playbook"), "-i", inventory, playbook, *extra_args]
    if extra_vars:
        args += ["-e", json.dumps(dict(extra_vars))]
    if check:
        args.append("--check")
    if diff:
        args.append("--diff")
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, env=ansible_env(env, unset), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return PlaybookRun(args, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 1) -> Any:
    """Poll until check() is truthy (bounded); the last exception or value goes into the failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:  # not yet: an API answering 404/409, a refused connection, a wrong answer
            last = exc
        time.sleep(interval)
    pytest.fail(f"{what} within {timeout:.0f}s (last: {last!r})")


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Until something accepts connections on 127.0.0.1:port; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- moto (the embedded AWS API) -------------------------------------------------------------------
MOTO_LAUNCHER = ROOT / "roles" / "moto" / "files" / "moto_server_patched.py"
DAEMONIZE = ROOT / "plugins" / "daemonize.py"  # the one daemonizer the moto and registry roles use
MOTO_REGION = "eu-west-1"


@contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """A real moto server of the caller's own (the project's patched launcher, daemonized as the
    moto role does it) on a free loopback port; yields its URL and stops it afterwards."""
    port, pidfile = free_port(), workdir / "moto.pid"
    subprocess.run([sys.executable, str(DAEMONIZE), "--pidfile", str(pidfile), "--logfile", str(workdir / "moto.log"),
                    "--port", str(port), "--wait", "60", "--", sys.executable, str(MOTO_LAUNCHER),
                    "-H", "127.0.0.1", "-p", str(port)], check=True, timeout=90)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([sys.executable, str(DAEMONIZE), "--stop", "--pidfile", str(pidfile)], check=False,
                       capture_output=True, timeout=30)


def aws_client(url: str, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name=MOTO_REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


# --- redis-server ----------------------------------------------------------------------------------
class RedisServer:
    """A redis-server process on 127.0.0.1:<port> without persistence."""

    def __init__(self, binary: str | None = None, port: int | None = None, workdir: Path | None = None) -> None:
        self.binary = binary or require_tool("redis-server", "the cart keeps carts in Redis")
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start it and wait until it answers. A free port can be taken by someone else before
        redis binds it: then, unless the port was asked for, try again on another one."""
        for attempt in range(1 if self.fixed_port else 3):
            if attempt:
                self.port = free_port()
            if self._start_once():
                return self
        raise RuntimeError(f"redis-server could not get a port of its own (last tried {self.port})")

    def _start_once(self) -> bool:
        import redis

        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if self.workdir:
            args += ["--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                with self.client() as c:
                    pid = int(c.info("server")["process_id"])
                if pid == self.proc.pid:
                    return True
                self.stop()  # another redis-server answers on this port: not ours to use
                return False
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    if "address already in use" in err.lower() and not self.fixed_port:
                        return False
                    raise RuntimeError(f"redis-server on port {self.port} exited: {err}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING in 30s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            if self.proc.stderr:
                self.proc.stderr.close()
        self.proc = None
