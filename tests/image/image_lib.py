"""Helpers and fixtures for the image tests: a Docker engine, the debootstrap base image,
and a helper to run the docker CLI.

Container networking here: the engine's default bridge works and `-p
127.0.0.1:<port>:<container port>` publishes to loopback. Where a kernel has no
netfilter, start the engine with BOUTIQUE_DOCKERD_ARGS="--iptables=false
--bridge=none" and set BOUTIQUE_DOCKER_NETWORK=host: the tests then run
containers with --network host and tell the service its port through PORT.
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest
from testkit import ROOT, free_port, require_tool

__all__ = ["ROOT", "free_port", "require_tool"]

BASE_IMAGE = os.environ.get("BOUTIQUE_BASE_IMAGE", "boutique/base:bookworm")
# Extra CA certificates pip needs inside the build (an intercepting proxy's CA):
# the locally added CAs of this machine, unless BOUTIQUE_BUILD_CA_FILES names others.
CA_GLOB = os.environ.get("BOUTIQUE_BUILD_CA_FILES", "/usr/local/share/ca-certificates/*.crt")
NETWORK = os.environ.get("BOUTIQUE_DOCKER_NETWORK", "")  # "" = bridge + port publishing, or "host"


def docker(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; on failure the error shows the command and its output."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:3])} ... exited {proc.returncode}:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def extra_ca_text() -> str:
    """The CA files joined the way the images role joins them (so both share the build cache)."""
    return "\n".join(Path(p).read_text().rstrip() for p in sorted(glob.glob(CA_GLOB)))


def build_args(**extra: str) -> list[str]:
    args = {"BASE_IMAGE": BASE_IMAGE, "PYTHON": "python3", **extra}
    ca = extra_ca_text()
    if ca:
        args["EXTRA_CA_CERTS"] = ca
    out: list[str] = []
    for key, value in args.items():
        out += ["--build-arg", f"{key}={value}"]
    return out


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The debootstrap base image (built once; cached in the engine afterwards)."""
    require_tool("debootstrap", "the base image is made from Debian packages (no registry pulls here)")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "base-image.sh"), BASE_IMAGE],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/base-image.sh failed:\n{proc.stdout}\n{proc.stderr}")
    return BASE_IMAGE
