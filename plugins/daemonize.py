#!/usr/bin/env python3
"""Start a command as a detached background daemon, record its pid, wait for a TCP port.

  daemonize.py --pidfile F --logfile L --port P [--host H] [--wait S] [--unset-env NAME]... -- command args...
  daemonize.py --stop --pidfile F

Exit 0 once host:port accepts connections; 1 (with the log's tail) if the command
dies or the port stays closed, naming the cause: the log's last error line, and any --unset-env
variable that was set (the command runs without it). Used by the registry and moto roles.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


ERROR_LINE = re.compile(r"^\s*[\w.]+(Error|Exception|NotFound)\b.*:|Address already in use")


def cause(log_text: str) -> str:
    """The last error line of what the command logged (its last line when none looks like one)."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ERROR_LINE.search(ln)]
    return errors[-1] if errors else (lines[-1] if lines else "")


def start(args: argparse.Namespace) -> int:
    if not args.command:
        print("daemonize: no command given after --", file=sys.stderr)
        return 2
    dropped = [name for name in args.unset_env if os.environ.get(name)]
    env = {k: v for k, v in os.environ.items() if k not in args.unset_env}
    since = os.path.getsize(args.logfile) if os.path.isfile(args.logfile) else 0
    with open(args.logfile, "ab") as log:
        proc = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    with open(args.pidfile, "w") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if listening(args.host, args.port):
            print(f"started pid {proc.pid}, listening on {args.host}:{args.port}")
            return 0
        time.sleep(0.2)
    if proc.poll() is None:
        proc.terminate()
    with open(args.logfile, errors="replace") as f:
        f.seek(since)
        text = f.read()
    why = cause(text) or f"it did not listen within {args.wait:g}s"
    hint = f" ({', '.join(dropped)} was set and is not passed to it)" if dropped else ""
    print(f"daemonize: `{' '.join(args.command)[:160]}` did not start on {args.host}:{args.port}: {why}{hint};"
          f" log {args.logfile}:\n{text[-2000:]}", file=sys.stderr)
    return 1


def stop(args: argparse.Namespace) -> int:
    try:
        with open(args.pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        print("not running (no pidfile)")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    os.unlink(args.pidfile)
    print(f"stopped pid {pid}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--logfile", default=os.devnull)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("--stop", action="store_true")
    parser.add_argument("--unset-env", action="append", default=[], metavar="NAME",
                        help="run the command without this environment variable (repeatable)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    return stop(args) if args.stop else start(args)


if __name__ == "__main__":
    sys.exit(main())
