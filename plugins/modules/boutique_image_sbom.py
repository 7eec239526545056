#!/usr/bin/python
# Copyright: Boutique Mesh contributors
# Apache-2.0 (see the project's licence)
"""Write a CycloneDX SBOM of what one built image holds (Debian packages, Python distributions,
Go modules compiled into its binaries), read from the image's own filesystem."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: boutique_image_sbom
short_description: CycloneDX SBOM of a local Docker image's contents
description:
  - Exports the image's filesystem (a created, never started container) and lists what is
    installed in it, as a CycloneDX 1.6 JSON document validated against the CycloneDX schema.
    Debian packages come from C(/var/lib/dpkg/status), Python distributions from every
    C(*.dist-info/METADATA), Go modules from the build information of Go executables.
  - The document is deterministic for one image (serial number from the digest, timestamp the
    image's creation time), so an unchanged image gives an unchanged file (changed=false).
version_added: "0.1.0"
author: Boutique Mesh platform team
options:
  image:
    description: The local image (name:tag or ID) to read.
    type: str
    required: true
  ref:
    description: Its pushed reference, registry/repository@sha256:digest (the SBOM's subject).
    type: str
    required: true
  dest:
    description: Where the SBOM JSON is written.
    type: path
    required: true
  docker_host:
    description: The Docker engine.
    type: str
    default: unix:///var/run/docker.sock
"""

RETURN = r"""
path:
  description: The SBOM file.
  type: str
  returned: always
sha256:
  description: sha256 of the SBOM file.
  type: str
  returned: always
components:
  description: How many components the SBOM lists, by kind (deb, pypi, golang).
  type: dict
  returned: always
"""

GO_MAGIC = b"\xff Go buildinf:"
_DIST_INFO = re.compile(r"(^|/)[^/]+\.dist-info/METADATA$")
_MAX_GO_BINARY = 512 * 1024 * 1024


class _StreamReader(io.RawIOBase):
    """A file object over the export's chunk iterator (tarfile reads it in stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        while not self.buffer:
            try:
                self.buffer = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self.buffer))
        target[:n], self.buffer = self.buffer[:n], self.buffer[n:]
        return n


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    packages = []
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", block, re.M))
        if fields.get("Package") and "installed" in fields.get("Status", "").split():
            packages.append({"name": fields["Package"], "version": fields.get("Version", ""),
                             "arch": fields.get("Architecture", "")})
    return packages


def parse_dist_metadata(text: str) -> dict[str, str] | None:
    headers = text.split("\n\n", 1)[0]
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", headers, re.M))
    if not fields.get("Name") or not fields.get("Version"):
        return None
    return {"name": fields["Name"], "version": fields["Version"],
            "license": fields.get("License-Expression") or ""}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def parse_go_buildinfo(data: bytes) -> list[dict[str, str]]:
    """Modules of a Go executable (Go >= 1.18 inline build info): main module and deps."""
    at = data.find(GO_MAGIC)
    if at < 0 or len(data) < at + 32 or not data[at + 15] & 0x2:  # flag 2: inline strings
        return []
    pos = at + 32  # after the 32-byte header: the Go version, then the module info (varint length + bytes)
    vlen, pos = _varint(data, pos)
    pos += vlen
    mlen, pos = _varint(data, pos)
    modinfo = data[pos:pos + mlen]
    if len(modinfo) > 32:
        modinfo = modinfo[16:-16]  # framed by 16-byte sentinels
    mods = []
    for line in modinfo.decode(errors="replace").splitlines():
        parts = line.split("\t")
        if parts[0] in {"mod", "dep"} and len(parts) >= 3 and parts[2] not in {"", "(devel)"}:
            mods.append({"name": parts[1], "version": parts[2]})
    return mods


def inventory(tar: tarfile.TarFile) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {"deb": [], "pypi": [], "golang": []}
    seen: set[tuple[str, str, str]] = set()
    for member in tar:
        if not member.isfile():
            continue
        name = member.name.lstrip("./")
        if name == "var/lib/dpkg/status":
            found["deb"] += parse_dpkg_status(tar.extractfile(member).read().decode(errors="replace"))
        elif _DIST_INFO.search(name):
            dist = parse_dist_metadata(tar.extractfile(member).read().decode(errors="replace"))
            if dist and ("pypi", dist["name"].lower(), dist["version"]) not in seen:
                seen.add(("pypi", dist["name"].lower(), dist["version"]))
                found["pypi"].append(dist)
        elif member.mode & 0o111 and 1024 * 1024 < member.size < _MAX_GO_BINARY:
            for mod in parse_go_buildinfo(tar.extractfile(member).read()):
                if ("golang", mod["name"], mod["version"]) not in seen:
                    seen.add(("golang", mod["name"], mod["version"]))
                    found["golang"].append(mod)
    return found


def build_bom(ref: str, created: str, found: dict[str, list[dict[str, str]]]) -> str:
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import License, LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    repo, _, digest = ref.partition("@")
    image = Component(type=ComponentType.CONTAINER, name=repo, version=digest, bom_ref=ref,
                      purl=PackageURL("oci", name=repo.rsplit("/", 1)[-1], version=digest,
                                      qualifiers={"repository_url": repo}))
    bom = Bom()
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, ref)
    bom.metadata.component = image
    bom.metadata.timestamp = datetime.fromisoformat(created[:19]).replace(tzinfo=UTC)  # image creation
    for pkg in sorted(found["deb"], key=lambda p: p["name"]):
        qualifiers = {"arch": pkg["arch"], "distro": "debian"} if pkg["arch"] else {"distro": "debian"}
        bom.components.add(Component(name=pkg["name"], version=pkg["version"], bom_ref=f"deb:{pkg['name']}",
                                     purl=PackageURL("deb", namespace="debian", name=pkg["name"],
                                                     version=pkg["version"], qualifiers=qualifiers)))
    for dist in sorted(found["pypi"], key=lambda d: d["name"].lower()):
        licenses: list[License] = [LicenseExpression(dist["license"])] if dist["license"] else []
        bom.components.add(Component(name=dist["name"], version=dist["version"], licenses=licenses,
                                     bom_ref=f"pypi:{dist['name'].lower()}@{dist['version']}",
                                     purl=PackageURL("pypi", name=dist["name"].lower(), version=dist["version"])))
    for mod in sorted(found["golang"], key=lambda m: m["name"]):
        namespace, _, name = mod["name"].rpartition("/")
        bom.components.add(Component(name=mod["name"], version=mod["version"],
                                     bom_ref=f"golang:{mod['name']}@{mod['version']}",
                                     purl=PackageURL("golang", namespace=namespace or None, name=name,
                                                     version=mod["version"])))
    for component in bom.components:
        bom.register_dependency(image, [component])
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise ValueError(f"the SBOM does not validate against CycloneDX 1.6: {errors}")
    return text + "\n"


def main() -> None:
    module = AnsibleModule(argument_spec={
        "image": {"type": "str", "required": True}, "ref": {"type": "str", "required": True},
        "dest": {"type": "path", "required": True},
        "docker_host": {"type": "str", "default": "unix:///var/run/docker.sock"}}, supports_check_mode=True)
    p = module.params
    try:
        import docker

        client = docker.DockerClient(base_url=p["docker_host"])
        image = client.images.get(p["image"])
        container = client.containers.create(image.id, entrypoint=["/nonexistent"], network_disabled=True)
        try:
            with tarfile.open(fileobj=io.BufferedReader(_StreamReader(iter(container.export()))), mode="r|") as tar:
                found = inventory(tar)
        finally:
            container.remove(force=True)
        text = build_bom(p["ref"], image.attrs["Created"], found)
    except ImportError as exc:
        module.fail_json(msg=f"the SBOM needs the docker and cyclonedx-python-lib packages ({exc})")
    except Exception as exc:  # the engine or the image: say what failed
        module.fail_json(msg=f"cannot make the SBOM of {p['image']}: {type(exc).__name__}: {exc}")
    data = text.encode()
    old = None
    if os.path.isfile(p["dest"]):
        with open(p["dest"], "rb") as fh:
            old = fh.read()
    changed = old != data
    if changed and not module.check_mode:
        os.makedirs(os.path.dirname(p["dest"]) or ".", exist_ok=True)
        with open(p["dest"], "wb") as fh:
            fh.write(data)
    module.exit_json(changed=changed, path=p["dest"], sha256=hashlib.sha256(data).hexdigest(),
                     components={k: len(v) for k, v in found.items()})


if __name__ == "__main__":
    main()
