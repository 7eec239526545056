"""`boutique loadgen` options: bad input is a clear exit 2 before Locust starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from boutique import loadgen


@pytest.mark.parametrize(("text", "seconds"), [("20s", 20), ("5m", 300), ("1h30m", 5400), ("1m5s", 65)])
def test_durations_use_locust_syntax(text: str, seconds: int) -> None:
    assert loadgen.duration_seconds(text) == seconds


@pytest.mark.parametrize(("args", "named"), [
    (["--duration", "5x"], "--duration"), (["--duration", "0s"], "--duration"),
    (["--host", "127.0.0.1:8080"], "--host"), (["--wait", "3,1"], "--wait"), (["--users", "0"], "--users"),
])
def test_bad_options_exit_2_naming_the_option(args: list[str], named: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "boutique.cli", "loadgen", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert named in proc.stderr and "Traceback" not in proc.stderr


def test_locust_command_uses_our_locustfile_and_user_class() -> None:
    cmd = loadgen.locust_command("http://x:1", 7, 2.0, "30s", "home", "/tmp/p")
    assert str(loadgen.LOCUSTFILE) in cmd and cmd[-1] == "HomeUser"
    assert cmd[cmd.index("-u") + 1] == "7" and cmd[cmd.index("-t") + 1] == "30s"
    assert "--headless" in cmd and cmd[cmd.index("--csv") + 1] == "/tmp/p"
