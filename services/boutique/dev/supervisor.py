"""A small process supervisor for development daemons (the test node's components).

`start(state_dir, programs)` starts a detached supervisor process that launches the programs in
order, waits until each one is ready (a TCP port, an HTTP(S) URL or a unix socket answers) before
starting the next, and then restarts any that dies (with a back-off, a bounded number of times).
It records everything in `<state_dir>/state.json`: pids, phase, restarts, the last exit. `stop`
sends it SIGTERM; it then stops the programs in reverse order (SIGTERM, a grace period, SIGKILL).
Every wait is bounded; a program that fails to start is reported with the end of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESTART_LIMIT = 5  # restarts within RESTART_WINDOW before the supervisor gives up on a program
RESTART_WINDOW = 120.0
STOP_GRACE = 10.0


class SupervisorError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ready:
    """How to tell a program is ready: exactly one of tcp ("host:port"), url (http/https) or unix."""

    tcp: str = ""
    url: str = ""
    unix: str = ""
    ca: str = ""  # https: verify with this CA (else the certificate is not checked: loopback only)
    timeout: float = 60.0

    def check(self) -> bool:
        try:
            if self.tcp:
                host, port = self.tcp.rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=1):
                    return True
            if self.unix:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1)
                    s.connect(self.unix)
                    return True
            if self.url:
                context = None
                if self.url.startswith("https:"):  # unverified only for loopback health checks
                    context = ssl.create_default_context(cafile=self.ca) if self.ca else \
                        ssl._create_unverified_context()
                with urllib.request.urlopen(self.url, timeout=2, context=context) as resp:
                    return 200 <= resp.status < 300
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Program:
    name: str
    argv: list[str]
    log: str
    ready: Ready = field(default_factory=Ready)
    env: dict[str, str] = field(default_factory=dict)  # added to the supervisor's environment
    restart: bool = True
    stop_signal: int = signal.SIGTERM

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Program:
        return cls(**{**data, "ready": Ready(**data.get("ready", {}))})


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or f"(empty log {path})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: read its state.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def read_state(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((state_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


class _Daemon:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        spec = json.loads((state_dir / "spec.json").read_text())
        self.programs = [Program.from_dict(p) for p in spec["programs"]]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state: dict[str, Any] = {"supervisor": os.getpid(), "phase": "starting",
                                      "programs": {p.name: {"state": "waiting", "restarts": 0} for p in self.programs}}
        self.restarts: dict[str, list[float]] = {p.name: [] for p in self.programs}
        self.stopping = False

    def save(self) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.dir / "state.json")

    def note(self, name: str, **fields: Any) -> None:
        self.state["programs"][name].update(fields)
        self.save()

    def launch(self, program: Program) -> None:
        Path(program.log).parent.mkdir(parents=True, exist_ok=True)
        with open(program.log, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor starts {program.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(program.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **program.env}, start_new_session=True, close_fds=True)
        self.procs[program.name] = proc
        self.note(program.name, pid=proc.pid, state="starting", started=time.time())

    def wait_ready(self, program: Program) -> str:
        """'' when ready, else why not."""
        proc = self.procs[program.name]
        deadline = time.monotonic() + program.ready.timeout
        while time.monotonic() < deadline and not self.stopping:
            if proc.poll() is not None:
                return f"{program.name} exited with status {proc.returncode} before it was ready"
            if program.ready.check():
                return ""
            time.sleep(0.25)
        return "stopped while starting" if self.stopping else (
            f"{program.name} was not ready within {program.ready.timeout:.0f}s")

    def terminate(self, program: Program) -> None:
        proc = self.procs.get(program.name)
        if proc is None or proc.poll() is not None:
            return
        self.note(program.name, state="stopping")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, program.stop_signal)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_GRACE)
        self.note(program.name, state="stopped", last_exit=proc.returncode)

    def stop_all(self) -> None:
        for program in reversed(self.programs):
            self.terminate(program)

    def run(self) -> int:
        def on_signal(_sig: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.save()
        for program in self.programs:
            if self.stopping:
                break
            started = time.monotonic()
            self.launch(program)
            why = self.wait_ready(program)
            if why:
                self.note(program.name, state="failed", message=why)
                self.state["phase"] = "failed"
                self.state["failed"] = program.name
                self.save()
                self.stop_all()
                return 1
            self.note(program.name, state="running", ready_seconds=round(time.monotonic() - started, 2))
        self.state["phase"] = "running" if not self.stopping else "stopping"
        self.save()
        while not self.stopping:
            self.watch()
            time.sleep(0.5)
        self.state["phase"] = "stopping"
        self.save()
        self.stop_all()
        self.state["phase"] = "stopped"
        self.save()
        return 0

    def watch(self) -> None:
        for program in self.programs:
            proc = self.procs[program.name]
            if proc.poll() is None or self.stopping:
                continue
            info = self.state["programs"][program.name]
            if info.get("state") == "failed":
                continue
            now = time.time()
            recent = [t for t in self.restarts[program.name] if now - t < RESTART_WINDOW]
            if not program.restart or len(recent) >= RESTART_LIMIT:
                self.note(program.name, state="failed", last_exit=proc.returncode,
                          message=f"exited with status {proc.returncode}; not restarted "
                                  f"({len(recent)} restarts in {RESTART_WINDOW:.0f}s)")
                continue
            self.restarts[program.name] = [*recent, now]
            backoff = min(2 ** len(recent), 16)
            self.note(program.name, state="restarting", last_exit=proc.returncode)
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.2)
            if self.stopping:
                return
            self.launch(program)
            self.note(program.name, restarts=info.get("restarts", 0) + 1)


def start(state_dir: Path, programs: list[Program], *, log: Callable[[str], None] = print,
          timeout: float = 300.0) -> dict[str, Any]:
    """Start the supervisor detached and wait until every program is ready; raise with the log tail."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (pid := supervisor_pid(state_dir)) is not None:
        raise SupervisorError(f"a supervisor (pid {pid}) already runs for {state_dir}; stop it first")
    (state_dir / "state.json").unlink(missing_ok=True)
    (state_dir / "spec.json").write_text(json.dumps({"programs": [asdict(p) for p in programs]}, indent=1))
    with open(state_dir / "supervisor.log", "ab") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "boutique.dev.supervisor", str(state_dir)],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True, close_fds=True)
    (state_dir / "supervisor.pid").write_text(f"{daemon.pid}\n")
    reported: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        for name, info in state.get("programs", {}).items():
            if info.get("state") == "running" and name not in reported:
                reported.add(name)
                log(f"  {name:24} ready in {info.get('ready_seconds', 0):5.1f}s  (pid {info.get('pid')})")
        if state.get("phase") == "running":
            return state
        if state.get("phase") == "failed" or daemon.poll() is not None:
            failed = state.get("failed", "")
            program = next((p for p in programs if p.name == failed), None)
            message = state.get("programs", {}).get(failed, {}).get("message", "the supervisor exited")
            tail = log_tail(program.log) if program else log_tail(state_dir / "supervisor.log")
            daemon.wait(timeout=STOP_GRACE * len(programs) + 5)
            raise SupervisorError(f"{message}; the end of {program.log if program else 'the supervisor log'}:\n{tail}")
        time.sleep(0.25)
    stop(state_dir)
    raise SupervisorError(f"the programs were not all ready within {timeout:.0f}s")


def supervisor_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "supervisor.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def stop(state_dir: Path, timeout: float | None = None) -> bool:
    """Stop the supervisor and its programs; True if one was running. Kills what outlives the grace."""
    pid = supervisor_pid(state_dir)
    if pid is None:
        _kill_leftovers(state_dir)
        return False
    programs = json.loads((state_dir / "spec.json").read_text()).get("programs", []) \
        if (state_dir / "spec.json").is_file() else []
    limit = timeout if timeout is not None else STOP_GRACE * (len(programs) + 1) + 5
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _kill_leftovers(state_dir)
    (state_dir / "supervisor.pid").unlink(missing_ok=True)
    return True


def _kill_leftovers(state_dir: Path) -> None:
    """SIGKILL any recorded program process group still alive (a supervisor killed with -9)."""
    for info in read_state(state_dir).get("programs", {}).values():
        pid = info.get("pid")
        if isinstance(pid, int) and _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def running_pids(state_dir: Path) -> dict[str, int]:
    """Program name -> pid for every recorded program whose process is alive."""
    found = {}
    for name, info in read_state(state_dir).get("programs", {}).items():
        pid = info.get("pid")
        if isinstance(pid, int) and _alive(pid):
            found[name] = pid
    return found


if __name__ == "__main__":
    sys.exit(_Daemon(Path(sys.argv[1])).run())
