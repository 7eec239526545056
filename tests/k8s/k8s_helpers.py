"""Helpers for the Kubernetes tests: render an inventory with the real playbook.

Rendering runs the real playbook (playbooks/site/kubernetes.yml) in render mode, the
same way `ansible-playbook -i inventories/<env> site.yml` would, into a temp dir.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import field_tools  # noqa: E402  (re-exported for the tests)
import istio_crds  # noqa: E402
import k8s_lint  # noqa: E402
import testkit  # noqa: E402
from testkit import PlaybookRun, free_port, require_tool  # noqa: E402

__all__ = ["field_tools", "free_port", "istio_crds", "k8s_lint", "require_tool"]

PLAYBOOK = ROOT / "playbooks/site/kubernetes.yml"
INVENTORIES = ("local", "production")
# Production renders with digest references for some services, to cover both image sources.
DIGEST_REFS = {
    "frontend": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/boutique/frontend@sha256:" + "a" * 64,
    "cartservice": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/boutique/cartservice@sha256:" + "b" * 64,
}


def run_playbook(inventory: str, render_dir: Path, *extra: str, check: bool = False) -> PlaybookRun:
    """playbooks/site/kubernetes.yml in render mode into render_dir (testkit's runner)."""
    return testkit.run_playbook(
        str(PLAYBOOK), inventory=str(ROOT / "inventories" / inventory), check=check, timeout=600,
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_PIPELINING": "1",
             "ANSIBLE_ROLES_PATH": str(ROOT / "roles")},
        extra_args=["--tags", "kubernetes", "-e", "boutique_k8s_mode=render", "-e", f"boutique_render_dir={render_dir}",
                    *extra])


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
    assert result.returncode == 0, f"render of {inventory} failed:\n{result.output[-6000:]}"
    return Rendered(inventory, path, k8s_lint.Manifests.load(path), result.output, refs)
