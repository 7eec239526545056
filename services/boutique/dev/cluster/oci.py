"""One-layer OCI images of static binaries, written without a container engine and imported into
the node's containerd: the pod sandbox (catatonit in pause mode) and CoreDNS."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from boutique.dev.cluster.components import system_program
from boutique.dev.cluster.host import run
from boutique.dev.cluster.settings import Settings

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: static binaries, imported locally


@dataclass(frozen=True)
class Image:
    name: str  # the full name containerd keeps (docker.io/... form, as the kubelet asks for it)
    files: dict[str, Path]  # path in the image -> file on the host
    entrypoint: list[str]
    user: str = "65532:65532"
    labels: dict[str, str] = field(default_factory=dict)


def _tar_layer(files: dict[str, Path]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent).lstrip("/") for p in files} - {""})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for inside, host_file in sorted(files.items()):
            data = host_file.read_bytes()
            info = tarfile.TarInfo(inside.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def write_archive(image: Image, target: Path) -> Path:
    """An OCI image layout archive, byte-for-byte the same for the same inputs."""
    layer = _tar_layer(image.files)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": image.entrypoint, "User": image.user, "Labels": image.labels,
                   "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }, sort_keys=True).encode()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w") as tar:
        layer_digest = _blob(tar, layer)
        config_digest = _blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": len(layer)}],
        }, sort_keys=True).encode()
        manifest_digest = _blob(tar, manifest)
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": MANIFEST, "digest": manifest_digest, "size": len(manifest),
            "annotations": {"io.containerd.image.name": image.name,
                            "org.opencontainers.image.ref.name": image.name.rsplit(":", 1)[-1]}}]}).encode()
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return target


def import_images(s: Settings, images: list[Image]) -> None:
    ctr = system_program("ctr")
    for image in images:
        archive = write_archive(image, s.path("images", image.name.replace("/", "_").replace(":", "_") + ".tar"))
        run(ctr, "--address", str(s.containerd_socket), "--namespace", "k8s.io", "images", "import",
            str(archive))
