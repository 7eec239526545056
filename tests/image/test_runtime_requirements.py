"""requirements-runtime.txt (what the service images install) is a consistent
subset of the project lock, requirements.txt."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, Requirement]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


RUNTIME = pins(ROOT / "requirements-runtime.txt")
LOCK = pins(ROOT / "requirements.txt")


def test_every_runtime_pin_equals_the_lock_pin() -> None:
    assert RUNTIME, "requirements-runtime.txt is empty"
    for name, req in RUNTIME.items():
        assert name in LOCK, f"{name} is pinned for the images but missing from requirements.txt"
        assert str(req.specifier) == str(LOCK[name].specifier), f"{name}: {req} vs requirements.txt {LOCK[name]}"
        assert str(req.specifier).startswith("=="), f"{name} is not pinned exactly: {req}"
        assert req.marker == LOCK[name].marker, f"{name}: marker differs from requirements.txt"


def test_runtime_covers_the_package_dependencies_and_their_closure() -> None:
    """Every dependency of the package (pyproject) and, transitively, of those
    packages is pinned, for the host python and for Debian bookworm's 3.11.2."""
    envs = [default_environment(), {**default_environment(), "python_full_version": "3.11.2",
                                    "python_version": "3.11"}]
    todo = [Requirement(r) for r in importlib.metadata.requires("boutique-mesh") or []]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": ""}) for env in envs):
            continue
        if name in seen:
            continue
        seen.add(name)
        assert name in RUNTIME, f"{name} (needed by the services) is not in requirements-runtime.txt"
        pinned = RUNTIME[name].specifier
        version = next(iter(pinned)).version
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} does not satisfy {req}"
        try:
            todo += [Requirement(r) for r in importlib.metadata.requires(req.name) or []]
        except importlib.metadata.PackageNotFoundError:
            # Only needed on another python (the marker matched 3.11.2 only): pinned, not installed here.
            continue
    extra = set(RUNTIME) - seen
    assert not extra, f"requirements-runtime.txt pins packages the services do not need: {sorted(extra)}"
