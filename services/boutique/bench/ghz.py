"""ghz, the gRPC load tool, as the service benchmark's load client.

A Go client costs the machine far less CPU per call than a Python one, so on a small box the
servers keep more of the cores. ghz is built from its pinned wrapper module (tools/go/ghz,
`boutique tools build ghz`); `find()` says why it is not available when it is not (no Go, a
failed build), and the benchmark then falls back to its Python client.

Requests are given as serialised messages (`-B`: no JSON work per call), length-delimited;
with several messages ghz sends message number (request number mod count), which gives each
PlaceOrder its own pre-filled cart. The service
descriptors come from our generated demo_pb2 as a protoset, so ghz makes no reflection calls
that the servers would pay for. Reports are ghz's JSON (`-O json`), parsed by `parse_report`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

from boutique.proto import demo_pb2 as pb

# grpc-go's status names (as ghz reports them) -> grpc.StatusCode names (as grpcio reports them)
GO_STATUS = {"OK": "OK", "Canceled": "CANCELLED", "Unknown": "UNKNOWN", "InvalidArgument": "INVALID_ARGUMENT",
             "DeadlineExceeded": "DEADLINE_EXCEEDED", "NotFound": "NOT_FOUND", "AlreadyExists": "ALREADY_EXISTS",
             "PermissionDenied": "PERMISSION_DENIED", "ResourceExhausted": "RESOURCE_EXHAUSTED",
             "FailedPrecondition": "FAILED_PRECONDITION", "Aborted": "ABORTED", "OutOfRange": "OUT_OF_RANGE",
             "Unimplemented": "UNIMPLEMENTED", "Internal": "INTERNAL", "Unavailable": "UNAVAILABLE",
             "DataLoss": "DATA_LOSS", "Unauthenticated": "UNAUTHENTICATED"}


class GhzError(RuntimeError):
    """ghz failed or wrote something that is not a report; the message says what it printed."""


@dataclass
class Report:
    """One ghz run, in the units the benchmark uses."""

    count: int  # calls that ended (OK or not) inside the run
    ok: int
    seconds: float  # the run's wall time as ghz measured it
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: dict[str, int] = field(default_factory=dict)  # grpc.StatusCode name -> calls
    first_error: str = ""
    end_reason: str = ""
    latencies_ms: list[float] = field(default_factory=list)  # every OK call's latency (from the details)

    @property
    def rps(self) -> float:
        """Successful calls per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def _status_name(go_name: str) -> str:
    return GO_STATUS.get(go_name, go_name.upper())


def parse_report(text: str) -> Report:
    """ghz's `-O json` output -> Report. Latencies are ms; errors keyed like grpc.StatusCode."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise GhzError(f"ghz did not write a JSON report ({exc}): {text[:300]!r}") from None
    if not isinstance(raw, dict) or "count" not in raw or "statusCodeDistribution" not in raw:
        raise GhzError(f"not a ghz JSON report (no count / statusCodeDistribution): {text[:300]!r}")
    statuses = {_status_name(k): int(v) for k, v in (raw.get("statusCodeDistribution") or {}).items()}
    ok = statuses.pop("OK", 0)
    percentiles = {int(p["percentage"]): p["latency"] / 1e6 for p in raw.get("latencyDistribution") or ()}
    details = raw.get("details") or ()
    latencies = sorted(d["latency"] / 1e6 for d in details if d.get("status") == "OK" and not d.get("error"))
    errors = raw.get("errorDistribution") or {}
    return Report(
        count=int(raw["count"]), ok=ok, seconds=raw.get("total", 0) / 1e9,
        p50_ms=percentiles.get(50, float("nan")), p99_ms=percentiles.get(99, float("nan")),
        mean_ms=raw.get("average", 0) / 1e6 if ok else float("nan"),
        errors=statuses, first_error=max(errors, key=errors.get) if errors else "",
        end_reason=str(raw.get("endReason", "")), latencies_ms=latencies,
    )


def write_protoset(path: Path) -> Path:
    """demo.proto's descriptors (from the generated module) as a FileDescriptorSet for --protoset."""
    fds = descriptor_pb2.FileDescriptorSet()
    proto = fds.file.add()
    pb.DESCRIPTOR.CopyToProto(proto)
    path.write_bytes(fds.SerializeToString())
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def delimited(messages: Iterable[bytes]) -> bytes:
    """Messages as ghz's -B file: each preceded by its length as a varint. (A lone message is
    written delimited too: ghz tries the delimited reading first, and a bare message can look
    like one.)"""
    return b"".join(_varint(len(m)) + m for m in messages)


def find() -> tuple[Path | None, str]:
    """(path of the ghz binary, "") or (None, why it is not available)."""
    from boutique.dev import gotools

    try:
        return gotools.binary("ghz", log=lambda msg: print(msg, flush=True)), ""
    except gotools.GoToolError as exc:
        return None, str(exc).splitlines()[0]
    except OSError as exc:
        return None, f"cannot run the Go toolchain: {exc}"


@dataclass
class Load:
    """What one ghz run sends: to `target`, method `call` (pkg.Service/Method)."""

    target: str
    call: str
    concurrency: int
    connections: int
    payload_file: Path  # delimited serialised requests (-B); see delimited()
    duration: float = 0.0  # seconds (-z, or -x with total)
    total: int = 0  # at most this many calls (-n)
    timeout: float = 20.0


def argv(ghz: Path, protoset: Path, load: Load) -> list[str]:
    out = [str(ghz), "--insecure", "--protoset", str(protoset), "--call", load.call,
           "-c", str(load.concurrency), "--connections", str(load.connections),
           "-t", f"{load.timeout}s", "-O", "json", "--duration-stop", "ignore", "-B", str(load.payload_file)]
    if load.total and load.duration:
        out += ["-n", str(load.total), "-x", f"{load.duration}s"]
    elif load.total:
        out += ["-n", str(load.total)]
    else:
        out += ["-z", f"{load.duration}s"]
    return [*out, load.target]


def run(ghz: Path, protoset: Path, load: Load) -> tuple[Report, float]:
    """Run ghz to the end: (its report, the CPU seconds the ghz process used, from wait4)."""
    cmd = argv(ghz, protoset, load)
    limit = (load.duration or 60.0) + load.timeout + 30
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(limit, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
    if proc.returncode == -signal.SIGKILL:
        raise GhzError(f"ghz did not finish within {limit:.0f} s: {' '.join(cmd)}")
    if proc.returncode != 0 and not out.strip():
        raise GhzError(f"ghz exited {proc.returncode}: {stderr[-500:]}")
    return parse_report(out.decode()), usage.ru_utime + usage.ru_stime
