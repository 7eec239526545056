"""requirements-runtime.txt (what the service images install) is a consistent
subset of the project lock, requirements.txt."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


# The host's python and Debian bookworm's 3.11.2 (the service images' base).
ENVS = [default_environment(), {**default_environment(), "python_full_version": "3.11.2", "python_version": "3.11"}]


def pins(path: Path) -> dict[str, Requirement]:
    """name -> requirement of a `make lock` file (hash lines and continuations dropped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip().removesuffix("\\").strip()
        if line and not line.startswith("--"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def hashes(path: Path) -> dict[str, list[str]]:
    """name -> the sha256 hashes `make lock` recorded for it."""
    out: dict[str, list[str]] = {}
    name = ""
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip().removesuffix("\\").strip()
        if text.startswith("--hash=sha256:"):
            out[name].append(text.removeprefix("--hash=sha256:"))
        elif text:
            name = canonicalize_name(Requirement(text).name)
            out[name] = []
    return out


def _applies(req: Requirement) -> list[bool]:
    return [req.marker is None or req.marker.evaluate({**env, "extra": ""}) for env in ENVS]


RUNTIME = pins(ROOT / "requirements-runtime.txt")
LOCK = pins(ROOT / "requirements.txt")


def test_every_runtime_pin_equals_the_lock_pin() -> None:
    assert RUNTIME, "requirements-runtime.txt is empty"
    for name, req in RUNTIME.items():
        assert name in LOCK, f"{name} is pinned for the images but missing from requirements.txt"
        assert str(req.specifier) == str(LOCK[name].specifier), f"{name}: {req} vs requirements.txt {LOCK[name]}"
        assert str(req.specifier).startswith("=="), f"{name} is not pinned exactly: {req}"
        assert _applies(req) == _applies(LOCK[name]), f"{name}: its marker selects other pythons than the lock's"


def test_every_pin_of_both_locks_carries_hashes_and_they_agree() -> None:
    """`make lock` wrote sha256 hashes for every pin, so pip installs in --require-hashes mode."""
    lock, runtime = hashes(ROOT / "requirements.txt"), hashes(ROOT / "requirements-runtime.txt")
    assert set(lock) == set(LOCK) and set(runtime) == set(RUNTIME)
    assert not [n for n, h in {**lock, **runtime}.items() if not h], "pins without hashes"
    for name, runtime_hashes in runtime.items():
        assert set(runtime_hashes) <= set(lock[name]), f"{name}: runtime hashes not in requirements.txt"
    assert "--require-hashes" in (ROOT / "Dockerfile").read_text()


def test_runtime_covers_the_package_dependencies_and_their_closure() -> None:
    """Every dependency of the package (pyproject) and, transitively, of those
    packages is pinned, for the host python and for Debian bookworm's 3.11.2."""
    envs = ENVS
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
