"""Pieces of the shop benchmark that can be checked without running it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from boutique.bench import shop as bench


def test_cpu_seconds_reads_proc_stat_of_a_process() -> None:
    before = bench.cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    after = bench.cpu_seconds(os.getpid())
    assert after - before >= 0.1
    assert bench.cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_route_lookup_and_bad_duration() -> None:
    phase = {"routes": [{"name": "/", "method": "GET", "p50": 12.0, "rps": 3.0, "requests": 9}]}
    assert bench.route(phase, "/")["p50"] == 12.0
    assert bench.route(phase, "/cart")["requests"] == 0
    proc = subprocess.run([sys.executable, "-m", "boutique.bench.shop", "--out", os.devnull, "--duration", "ten"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--duration" in proc.stderr
