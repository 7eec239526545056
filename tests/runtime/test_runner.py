"""The local runner (boutique.dev.shop.Shop and `boutique run`) with real processes and sockets."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from runtime_samples import SAMPLES, place_order
from runtime_shop import alive, handled

from boutique import service_catalog as catalog_mod
from boutique.dev.shop import PortInUseError, Shop, free_port_offset, port_free, start_on_free_offset

pytestmark = [pytest.mark.slow]
CAT = catalog_mod.default()
GRPC_SERVICES = [s.name for s in CAT.grpc_services() if s.deploy]


def test_shop_starts_every_deployable_service(shop: Shop) -> None:
    assert shop.names, "nothing started"
    missing = [n for n in GRPC_SERVICES if n not in shop.names]
    assert not missing, f"backends not started by the runner: {missing} ({shop.skipped})"
    assert "loadgenerator" not in shop.names  # deploy: false
    for name in shop.names:
        assert shop.pid(name), name
        assert shop.address(name) == f"127.0.0.1:{CAT.get(name).local_port + shop.port_offset}"
        assert shop.metrics_targets()[name] == f"127.0.0.1:{CAT.get(name).local_metrics_port + shop.port_offset}"
    if "frontend" in shop.names:
        with urllib.request.urlopen(f"{shop.base_url}/_healthz", timeout=5) as resp:
            assert resp.status == 200


def test_every_grpc_service_has_a_sample_request() -> None:
    assert {CAT.get(n).grpc_service for n in GRPC_SERVICES} - set(SAMPLES) == {"hipstershop.CheckoutService"}


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_each_service_answers_and_counts_the_call(shop: Shop, name: str) -> None:
    svc = CAT.get(name)
    target = shop.metrics_targets()[name]
    with shop.channel(name) as ch:
        if name == "checkoutservice":
            with shop.channel("cartservice") as cart_ch:
                place_order(ch, cart_ch, lines=2)
            method = "PlaceOrder"
        else:
            method = SAMPLES[svc.grpc_service](ch)
    # metrics are served on the catalog's local metrics port + offset and count the call
    assert handled(target, svc.grpc_service, method) >= 1


def test_env_for_wires_callees_from_the_catalog(shop: Shop) -> None:
    env = shop.env_for("checkoutservice")
    assert env["PORT"] == str(CAT.get("checkoutservice").local_port + shop.port_offset)
    assert env["LISTEN_ADDR"] == "127.0.0.1"
    for callee in CAT.get("checkoutservice").callees:
        assert env[CAT.get(callee).addr_env] == shop.address(callee)
    cart_env = shop.env_for("cartservice")
    if shop.redis_address:
        assert cart_env["REDIS_ADDR"] == shop.redis_address
        assert shop.redis_address.endswith(f":{CAT.redis.local_port + shop.port_offset}")
    else:
        assert "REDIS_ADDR" not in cart_env


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    offset = free_port_offset(redis=False)
    port = CAT.get("currencyservice").local_port + offset
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        shop = Shop(port_offset=offset, redis=False, log_dir=tmp_path)
        with pytest.raises(PortInUseError, match=rf"currencyservice \(grpc\) needs 127\.0\.0\.1:{port}"):
            shop.start()
        assert shop.pid("currencyservice") is None  # nothing was started
        cli = subprocess.run([sys.executable, "-m", "boutique.cli", "run", "--no-redis", "--port-offset",
                              str(offset), "--log-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2, cli.stderr
    assert f"currencyservice (grpc) needs 127.0.0.1:{port}" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_dead_service_is_reported_and_can_be_restarted(tmp_path: Path) -> None:
    with start_on_free_offset(redis=False, services=["currencyservice"], log_dir=tmp_path) as shop:
        pid = shop.pid("currencyservice")
        assert pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        died: dict[str, int] = {}
        while not died and time.monotonic() < deadline:
            died = shop.exited()
            time.sleep(0.05)
        assert died == {"currencyservice": -signal.SIGKILL}
        assert shop.exited() == {}  # reported once
        shop.start_service("currencyservice")
        with shop.channel("currencyservice") as ch:
            assert SAMPLES["hipstershop.CurrencyService"](ch) == "Convert"
        assert shop.stop_service("currencyservice") == 0  # graceful stop exits 0
        assert port_free(shop.port("currencyservice"))


def _table_pids(stdout_lines: list[str]) -> dict[str, int]:
    pids = {}
    for line in stdout_lines:
        cols = line.split()
        if len(cols) == 4 and cols[3].isdigit() and cols[1].startswith("127.0.0.1:"):
            pids[cols[0]] = int(cols[3])
    return pids


def _start_boutique_run(log_dir: Path) -> tuple[subprocess.Popen[str], int, list[str]]:
    """`boutique run` on a free port offset, read until it reports ready: (process, offset, stdout lines).
    A port can be taken between our check and the services' bind (some catalog ports + offset lie in
    Linux's ephemeral range, where any outgoing connection may take them): then it exits 2 saying so,
    and we try another offset."""
    for attempt in range(3):
        offset = free_port_offset()
        proc = subprocess.Popen(
            [sys.executable, "-m", "boutique.cli", "run", "--port-offset", str(offset), "--log-dir", str(log_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def reader(proc: subprocess.Popen[str] = proc, lines: queue.Queue[str | None] = lines) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                if line is None:
                    break
                seen.append(line)
                if "Ctrl-C stops everything" in line:
                    return proc, offset, seen
        except queue.Empty:
            pass
        if proc.poll() is None:
            proc.terminate()  # the runner stops its services on SIGTERM
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        err = proc.stderr.read() if proc.stderr else ""
        # "port already in use" (taken before start) or "address in use" (taken between check and bind)
        if proc.returncode == 2 and "in use" in err and attempt < 2:
            continue
        pytest.fail(f"boutique run did not report ready (exit {proc.returncode}):\n{''.join(seen)}{err}")
    raise AssertionError("unreachable")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_boutique_run_stops_everything_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    proc, offset, seen = _start_boutique_run(tmp_path)
    try:
        pids = _table_pids(seen)
        assert set(GRPC_SERVICES) <= set(pids), seen
        assert f"http://127.0.0.1:{CAT.get('frontend').local_port + offset}/" in "".join(seen)
        assert all(alive(p) for p in pids.values())
        os.killpg(proc.pid, sig)  # what the terminal does on Ctrl-C: signal the foreground group
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    still = [n for n, p in pids.items() if alive(p)]
    assert not still, f"orphaned after {sig.name}: {still}"
    shop = Shop(port_offset=offset)
    shop.check_ports()  # every port is free again
    assert (tmp_path / "currencyservice.log").stat().st_size > 0
