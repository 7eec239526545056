"""Python programs the project runs that cannot share the project's lock (checkov pins boto3,
packaging and networkx to versions the platform tooling cannot use).

Each is `tools/python/<name>/requirements.txt`, a hash-pinned lock (`make lock` regenerates it
from the requirements.in beside it), installed with `pip --require-hashes --no-deps` into its
own venv in the cache folder outside the repository (the same cache as boutique.dev.gotools),
keyed by the lock and the interpreter, so a second call does nothing:

    boutique.dev.pytools.binary("checkov")   # build (or reuse) the venv, return bin/checkov

`<NAME>_BIN` (e.g. CHECKOV_BIN) names a program of your own instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from boutique.dev.gotools import GoToolError, _locked, cache_root

REPO = Path(__file__).resolve().parents[3]
TOOLS_DIR = REPO / "tools" / "python"


class PyToolError(GoToolError):
    """A Python tool cannot be found or installed; the message says what to do."""


def names() -> list[str]:
    return sorted(p.name for p in TOOLS_DIR.iterdir() if (p / "requirements.txt").is_file()) \
        if TOOLS_DIR.is_dir() else []


def _lock(name: str) -> Path:
    lock = TOOLS_DIR / name / "requirements.txt"
    if not lock.is_file():
        raise PyToolError(f"unknown Python tool {name!r}; known: {', '.join(names()) or 'none'} (in {TOOLS_DIR})")
    return lock


def venv_dir(name: str) -> Path:
    digest = hashlib.sha256(_lock(name).read_bytes() + sys.version.encode()).hexdigest()[:12]
    return cache_root() / "py" / f"{name}-{digest}"


def ensure(name: str, log: Callable[[str], None] = print) -> Path:
    """The tool's venv bin folder, installing it first when it is not in the cache."""
    lock, venv = _lock(name), venv_dir(name)
    if (venv / "complete").is_file():
        return venv / "bin"
    with _locked(venv.parent / f".{venv.name}.lock"):
        if (venv / "complete").is_file():
            return venv / "bin"
        # installed in place (a venv's scripts name their interpreter by path); "complete" marks success
        shutil.rmtree(venv, ignore_errors=True)
        log(f"tools: installing {name} from {lock.relative_to(REPO)} (hash-checked) into {venv} ...")
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                               "--require-hashes", "--no-deps", "-r", str(lock)], capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise PyToolError(f"installing {name} failed:\n{tail}")
        (venv / "complete").write_text("")
        log(f"tools: installed {name} in {time.monotonic() - start:.0f}s")
        return venv / "bin"


def binary(name: str, program: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Path of one program of a Python tool (default: the tool's name), installed on demand."""
    program = program or name
    override = os.environ.get(f"{name.upper().replace('-', '_')}_BIN")
    if override:
        path = Path(override).expanduser()
        if not os.access(path, os.X_OK):
            raise PyToolError(f"{name.upper()}_BIN={path} is not an executable")
        return path
    found = ensure(name, log=log) / program
    if not os.access(found, os.X_OK):
        raise PyToolError(f"{name}'s venv has no {program} program")
    return found
