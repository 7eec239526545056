"""The registry and moto roles run their test doubles through the one daemonizer
(plugins/daemonize.py): started once, left alone when nothing changed, restarted by the
handler when their config (registry) or launch settings (moto) change while they run,
untouched in check mode, and stopped by state=absent. Real processes on free ports."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
import yaml
from testkit import VENV_BIN, free_port, require_tool, run_playbook

pytestmark = [pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _play(tmp_path: Path, role: str) -> str:
    path = tmp_path / f"{role}.yml"
    path.write_text(yaml.safe_dump([{"name": f"The {role} role", "hosts": "boutique", "gather_facts": False,
                                     "roles": [{"role": role}]}]))
    return str(path)


def test_the_registry_restarts_when_its_config_changes(tmp_path: Path) -> None:
    require_tool("docker-registry", "the embedded image registry")
    play, port, state = _play(tmp_path, "registry"), free_port(), tmp_path / "registry"
    pidfile, config = state / "registry.pid", state / "config.yml"

    def run(storage: str, **kw: object):
        return run_playbook(play, {"registry_port": port, "registry_state_dir": str(state),
                                   "registry_storage_dir": str(tmp_path / storage), **kw})

    try:
        assert run("a").assert_ok().changed > 0
        first = int(pidfile.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5) as resp:
            assert resp.status == 200
        assert run("a").assert_ok().changed == 0
        assert int(pidfile.read_text()) == first

        checked = run_playbook(play, {"registry_port": port, "registry_state_dir": str(state),
                                      "registry_storage_dir": str(tmp_path / "c")}, check=True).assert_ok()
        assert checked.changed > 0 and int(pidfile.read_text()) == first and _alive(first)
        assert f"rootdirectory: {tmp_path / 'a'}" in config.read_text()

        run("b").assert_ok()
        second = int(pidfile.read_text())
        assert second != first and not _alive(first) and _alive(second)
        assert f"rootdirectory: {tmp_path / 'b'}" in config.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5) as resp:
            assert resp.status == 200
    finally:
        run("b", registry_state="absent")
    assert not pidfile.exists() and not _alive(second)


def test_moto_restarts_when_its_launch_settings_change(tmp_path: Path) -> None:
    play, port, state = _play(tmp_path, "moto"), free_port(), tmp_path / "moto"
    pidfile = state / "moto.pid"
    base = {"moto_port": port, "moto_state_dir": str(state), "boutique_aws_endpoint_url": f"http://127.0.0.1:{port}"}

    def pid() -> int:
        return int(pidfile.read_text())

    try:
        run_playbook(play, {**base, "moto_python": str(VENV_BIN / "python")}).assert_ok()
        first = pid()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=10) as resp:
            assert json.load(resp) is not None
        assert run_playbook(play, {**base, "moto_python": str(VENV_BIN / "python")}).assert_ok().changed == 0
        assert pid() == first

        run_playbook(play, {**base, "moto_python": str(VENV_BIN / "python3")}, check=True).assert_ok()
        assert pid() == first and _alive(first)

        run_playbook(play, {**base, "moto_python": str(VENV_BIN / "python3")}).assert_ok()
        second = pid()
        assert second != first and not _alive(first) and _alive(second)
        assert str(VENV_BIN / "python3") in (state / "moto.conf").read_text()
    finally:
        run_playbook(play, {**base, "moto_state": "absent"})
    assert not pidfile.exists() and not _alive(second)
