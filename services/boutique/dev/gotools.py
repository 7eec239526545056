"""Reproducible builds of the Go programs the project runs (the test node, load and lint tools).

Each tool is a small wrapper module in `tools/go/<name>/`: its `go.mod` pins the versions with
`tool` directives (the binaries to build) and its `go.sum` pins every hash; `tool.toml` adds the
link flags and an environment variable that points at binaries a user already has. Builds go
through the Go module proxy into a cache folder outside the repository, keyed by the tool's files
and the Go version, so a second call with the cache present does nothing:

    boutique tools build kube        # build (or reuse) and print the bin folder
    boutique tools path kube         # print the bin folder, build nothing (exit 1 if not built)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TOOLS_DIR = REPO / "tools" / "go"
_TOOL_LINE = re.compile(r"^\s*(?:tool\s+)?([\w.\-]+(?:/[\w.\-]+)+)\s*$")


class GoToolError(RuntimeError):
    """A tool cannot be found or built; the message says what to do."""


@dataclass(frozen=True)
class GoTool:
    name: str
    folder: Path
    version: str
    packages: tuple[str, ...]
    ldflags: str = ""
    env: dict[str, str] = field(default_factory=dict)
    override_env: str = ""

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(p.rstrip("/").rsplit("/", 1)[-1] for p in self.packages)


def cache_root() -> Path:
    """`BOUTIQUE_CACHE`, else `$XDG_CACHE_HOME/boutique`, else `~/.cache/boutique`."""
    if os.environ.get("BOUTIQUE_CACHE"):
        return Path(os.environ["BOUTIQUE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "boutique"


def _tool_packages(go_mod: str) -> tuple[str, ...]:
    """The packages named by go.mod's `tool` directives (single lines and blocks)."""
    packages: list[str] = []
    in_block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif (m := _TOOL_LINE.match(line)) is not None:
                packages.append(m.group(1))
        elif line == "tool (":
            in_block = True
        elif line.startswith("tool ") and (m := _TOOL_LINE.match(line)) is not None:
            packages.append(m.group(1))
    return tuple(packages)


def names() -> list[str]:
    return sorted(p.name for p in TOOLS_DIR.iterdir() if (p / "tool.toml").is_file()) if TOOLS_DIR.is_dir() else []


def load(name: str) -> GoTool:
    folder = TOOLS_DIR / name
    if not (folder / "tool.toml").is_file():
        raise GoToolError(f"unknown Go tool {name!r}; known: {', '.join(names()) or 'none'} (in {TOOLS_DIR})")
    meta = tomllib.loads((folder / "tool.toml").read_text())
    version = str(meta["version"])
    packages = _tool_packages((folder / "go.mod").read_text())
    if not packages:
        raise GoToolError(f"{folder / 'go.mod'} names no `tool` packages to build")
    return GoTool(
        name=name, folder=folder, version=version, packages=packages,
        ldflags=str(meta.get("ldflags", "")).format(version=version).strip(),
        env={k: str(v) for k, v in meta.get("env", {}).items()},
        override_env=str(meta.get("override_env", "")),
    )


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise GoToolError("the go command is not installed (Go 1.24 or newer builds these tools; "
                          "Debian: apt-get install golang, or https://go.dev/dl/)")
    return go


def _go_version() -> str:
    return subprocess.run([_go(), "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def build_key(tool: GoTool) -> str:
    digest = hashlib.sha256()
    for part in ("go.mod", "go.sum", "tool.toml"):
        digest.update(part.encode() + b"\0" + (tool.folder / part).read_bytes() + b"\0")
    digest.update(_go_version().encode())
    return digest.hexdigest()[:12]


def cached_dir(tool: GoTool) -> Path:
    return cache_root() / "go" / f"{tool.name}-{tool.version}-{build_key(tool)}" / "bin"


def _override(tool: GoTool) -> Path | None:
    """The bin folder the user named with the tool's override variable, checked."""
    if not tool.override_env or not os.environ.get(tool.override_env):
        return None
    folder = Path(os.environ[tool.override_env]).expanduser()
    missing = [b for b in tool.binaries if not os.access(folder / b, os.X_OK)]
    if missing:
        raise GoToolError(f"{tool.override_env}={folder} lacks {', '.join(missing)}; point it at a folder "
                          f"holding {', '.join(tool.binaries)}, or unset it to build them")
    return folder


def path(name: str) -> Path | None:
    """The tool's bin folder if its binaries are there (override or complete cache), else None."""
    tool = load(name)
    override = _override(tool)
    if override is not None:
        return override
    folder = cached_dir(tool)
    return folder if (folder.parent / "complete").is_file() else None


def _measured(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, float]:
    """Run argv; (exit status, output, peak resident MB of it and every process it waited for)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, out.read().decode(errors="replace"), usage.ru_maxrss / 1024


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(name: str, log: Callable[[str], None] = print) -> Path:
    """The tool's bin folder, building it first when it is not in the cache."""
    found = path(name)
    if found is not None:
        return found
    tool = load(name)
    folder = cached_dir(tool)
    with _locked(folder.parent.parent / f".{folder.parent.name}.lock"):
        if (folder.parent / "complete").is_file():  # another process built it meanwhile
            return folder
        staging = folder.parent.with_name(folder.parent.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        argv = [_go(), "build", "-trimpath", "-o", str(staging / "bin") + "/"]
        if tool.ldflags:
            argv += ["-ldflags", tool.ldflags]
        argv += list(tool.packages)
        log(f"tools: building {tool.name} {tool.version} ({', '.join(tool.binaries)}) into {folder} ...")
        start = time.monotonic()
        returncode, output, peak_mb = _measured(argv, cwd=tool.folder, env={**os.environ, **tool.env})
        seconds = time.monotonic() - start
        if returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-25:])
            shutil.rmtree(staging, ignore_errors=True)
            raise GoToolError(f"go build of {tool.name} failed after {seconds:.0f}s:\n{tail}")
        (staging / "build.txt").write_text(
            f"tool={tool.name}\nversion={tool.version}\ngo={_go_version()}\nseconds={seconds:.0f}\n"
            f"peak_rss_mb={peak_mb:.0f}\n")
        shutil.rmtree(folder.parent, ignore_errors=True)
        staging.rename(folder.parent)
        (folder.parent / "complete").write_text("")
        log(f"tools: built {tool.name} in {seconds:.0f}s (peak memory of one build process {peak_mb:.0f} MB)")
        return folder


def binary(name: str, program: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Path of one program of a tool (default: the tool's only or first binary), built on demand."""
    tool = load(name)
    program = program or tool.binaries[0]
    if program not in tool.binaries:
        raise GoToolError(f"tool {name} builds {', '.join(tool.binaries)}, not {program}")
    return ensure(name, log=log) / program


def main(argv: list[str]) -> int:
    """`boutique tools build|path|list [NAME...]`."""
    action, *wanted = argv or ["list"]
    try:
        if action == "list":
            for n in names():
                tool = load(n)
                where = path(n)
                print(f"{n:12} {tool.version:10} {' '.join(tool.binaries):60} {where or '(not built)'}")
            return 0
        if action not in {"build", "path"} or not wanted:
            print("usage: boutique tools build|path NAME... | list", file=sys.stderr)
            return 2
        for n in wanted:
            where = ensure(n, log=lambda m: print(m, file=sys.stderr)) if action == "build" else path(n)
            if where is None:
                print(f"tools: {n} is not built (`boutique tools build {n}`)", file=sys.stderr)
                return 1
            print(where)
        return 0
    except GoToolError as exc:
        print(f"tools: {exc}", file=sys.stderr)
        return 1
