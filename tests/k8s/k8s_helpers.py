"""Helpers for the Kubernetes tests: render an inventory with the real playbook.

Rendering runs the real playbook (playbooks/site/kubernetes.yml) in render mode, the
same way `ansible-playbook -i inventories/<env> site.yml` would, into a temp dir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import field_tools  # noqa: E402  (re-exported for the tests)
import istio_crds  # noqa: E402
import k8s_lint  # noqa: E402

__all__ = ["field_tools", "istio_crds", "k8s_lint"]


def _root_conftest():
    """tests/conftest.py under a unique module name (`conftest` is ambiguous in sys.modules)."""
    spec = importlib.util.spec_from_file_location("boutique_tests_root_conftest", ROOT / "tests/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


require_tool = _root_conftest().require_tool
free_port = _root_conftest().free_port

PLAYBOOK = ROOT / "playbooks/site/kubernetes.yml"
INVENTORIES = ("local", "production")
# Production renders with digest references for some services, to cover both image sources.
DIGEST_REFS = {
    "frontend": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/boutique/frontend@sha256:" + "a" * 64,
    "cartservice": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/boutique/cartservice@sha256:" + "b" * 64,
}


def ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv/bin'}:{env.get('PATH', '')}"
    if (ROOT / "ansible.cfg").exists():
        env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env.setdefault("ANSIBLE_PIPELINING", "1")  # local connection: no temp files per module
    env["ANSIBLE_ROLES_PATH"] = str(ROOT / "roles")
    return env


def run_playbook(inventory: str, render_dir: Path, *extra: str, check: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(ROOT / "inventories" / inventory), str(PLAYBOOK),
           "--tags", "kubernetes", "-e", "boutique_k8s_mode=render", "-e", f"boutique_render_dir={render_dir}",
           *extra]
    if check:
        cmd.append("--check")
    return subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=600)


def recap(output: str) -> dict[str, int]:
    line = next(ln for ln in output.splitlines() if ln.startswith("localhost") and "ok=" in ln)
    return {k: int(v) for k, v in (p.split("=") for p in line.split(":", 1)[1].split())}


@dataclass
class Rendered:
    inventory: str
    path: Path
    manifests: k8s_lint.Manifests
    output: str
    image_refs: dict[str, str]

    def objects(self, kind: str | None = None) -> list[dict]:
        return [o for _, o in self.manifests.objects if kind is None or o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [o for o in self.objects(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def release(self, name: str) -> dict:
        return next(r for r in self.manifests.releases if r["metadata"]["name"] == name)


def render(inventory: str, path: Path) -> Rendered:
    extra: list[str] = []
    refs: dict[str, str] = {}
    if inventory == "production":  # the images stage's fact, set in the same run
        refs = DIGEST_REFS
        extra = ["-e", json.dumps({"boutique_image_refs": refs})]
    else:  # the refs file an earlier images stage wrote (boutique_images_file)
        refs = {"adservice": "registry.local:5000/boutique/adservice@sha256:" + "c" * 64}
        path.mkdir(parents=True, exist_ok=True)
        (path / "images.json").write_text(json.dumps(refs))
        extra = ["-e", f"boutique_images_file={path / 'images.json'}"]
    result = run_playbook(inventory, path, *extra)
    assert result.returncode == 0, f"render of {inventory} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    return Rendered(inventory, path, k8s_lint.Manifests.load(path), result.stdout, refs)
