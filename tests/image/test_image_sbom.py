"""The images role's SBOM (plugins/modules/boutique_image_sbom.py): what an image holds, as
CycloneDX 1.6 validated against the schema, deterministic per image. Uses a small image built
here on the debootstrap base (no registry, no fixed port)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path

import pytest
from image_lib import ROOT, docker
from testkit import VENV_BIN, run_playbook

from boutique.dev import gotools

MODULE = ROOT / "plugins/modules/boutique_image_sbom.py"
spec = importlib.util.spec_from_file_location("boutique_image_sbom", MODULE)
sbom = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sbom)


def test_go_build_info_lists_the_modules_compiled_in() -> None:
    binary = gotools.binary("kubeconform")
    modules = {m["name"]: m["version"] for m in sbom.parse_go_buildinfo(binary.read_bytes())}
    go_mod = (ROOT / "tools/go/kubeconform/go.mod").read_text()
    assert modules["github.com/yannh/kubeconform"] == "v0.8.0"
    assert all(f"{name} {version}" in go_mod for name, version in modules.items()), modules
    assert sbom.parse_go_buildinfo(b"not a go binary" * 1000) == []


def test_dpkg_status_and_dist_metadata_parse() -> None:
    status = ("Package: python3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.11.2-1+b1\n\n"
              "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n")
    assert sbom.parse_dpkg_status(status) == [{"name": "python3", "version": "3.11.2-1+b1", "arch": "amd64"}]
    meta = "Metadata-Version: 2.4\nName: grpcio\nVersion: 1.85.1\nLicense-Expression: Apache-2.0\n\nbody"
    assert sbom.parse_dist_metadata(meta) == {"name": "grpcio", "version": "1.85.1", "license": "Apache-2.0"}


@pytest.mark.docker
@pytest.mark.slow
def test_the_sbom_of_an_image_lists_its_debian_python_and_go_parts(base_image: str, tmp_path: Path) -> None:
    context = tmp_path / "context"
    dist = context / "site/sbomprobe-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sbomprobe\nVersion: 1.2.3\nLicense-Expression: MIT\n")
    shutil.copy(gotools.binary("kubeconform"), context / "kubeconform")
    (context / "Dockerfile").write_text(f"FROM {base_image}\nCOPY site /usr/lib/python3/dist-packages/\n"
                                        "COPY kubeconform /usr/local/bin/kubeconform\n")
    tag = f"boutique-sbom-test:{uuid.uuid4().hex[:8]}"
    docker("build", "--quiet", "-t", tag, str(context))
    ref = "registry.example:5000/boutique/sbom-test@sha256:" + "d" * 64
    dest = tmp_path / "sbom" / "probe.cdx.json"
    try:
        first, second = (_module(tag, ref, dest) for _ in range(2))
    finally:
        docker("rmi", "--force", tag, check=False)
    assert first["changed"] is True and second["changed"] is False  # deterministic: same image, same file
    assert first["sha256"] == second["sha256"]
    bom = json.loads(dest.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert bom["metadata"]["component"]["version"] == "sha256:" + "d" * 64
    purls = {c["purl"].split("?")[0] for c in bom["components"]}
    assert "pkg:pypi/sbomprobe@1.2.3" in purls
    assert any(p.startswith("pkg:deb/debian/python3@") for p in purls)
    assert "pkg:golang/github.com/yannh/kubeconform@v0.8.0" in purls
    assert first["components"]["deb"] > 50 and first["components"]["golang"] >= 2


def _module(image: str, ref: str, dest: Path) -> dict:
    """Run the module the way the role does (a play on the controller); its result as a dict."""
    out = dest.parent.parent / f"result-{uuid.uuid4().hex[:6]}.json"
    play = dest.parent.parent / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": [
        {"name": "SBOM", "boutique_image_sbom": {"image": image, "ref": ref, "dest": str(dest)}, "register": "r"},
        {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(out),
                                                              "mode": "0644"}}]}]))
    run_playbook(str(play), {"ansible_python_interpreter": str(VENV_BIN / "python")}, inventory="localhost,",
                 env={"ANSIBLE_LIBRARY": str(ROOT / "plugins/modules"), "ANSIBLE_LOCALHOST_WARNING": "0"}).assert_ok()
    return json.loads(out.read_text())
