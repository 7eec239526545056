"""BOUTIQUE_WORKERS=N: N processes share the port, metrics are aggregated, a crashed worker
takes the service down (no silent degraded mode), and stopping leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_samples import SAMPLES
from runtime_shop import alive, handled

from boutique.dev.shop import Shop, free_port_offset, port_free, start_on_free_offset

pytestmark = [pytest.mark.slow]


def _workers(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _wait_all_serving(shop: Shop, workers: int) -> None:
    """The runner is ready when one worker answers; wait for every worker's "serving" line."""
    deadline = time.monotonic() + 30
    while shop.log_path("currencyservice").read_text().count('"message": "serving"') < workers:
        assert time.monotonic() < deadline, "not every worker started"
        time.sleep(0.05)


def test_two_workers_serve_one_port_with_aggregated_metrics(tmp_path: Path) -> None:
    env = {"currencyservice": {"BOUTIQUE_WORKERS": "2"}}
    with start_on_free_offset(redis=False, services=["currencyservice"], service_env=env, log_dir=tmp_path) as shop:
        supervisor = shop.pid("currencyservice")
        assert supervisor
        workers = _workers(supervisor)
        assert len(workers) == 2
        _wait_all_serving(shop, 2)
        before = handled(shop.metrics_targets()["currencyservice"], "hipstershop.CurrencyService", "Convert")
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            with shop.channel("currencyservice") as ch:
                SAMPLES["hipstershop.CurrencyService"](ch)
        after = handled(shop.metrics_targets()["currencyservice"], "hipstershop.CurrencyService", "Convert")
        assert after - before == 30  # every worker's calls, summed by the supervisor's endpoint
        assert shop.stop_service("currencyservice") == 0
    assert not [w for w in workers if alive(w)]
    assert port_free(shop.port("currencyservice"))


def test_a_crashed_worker_takes_the_service_down(tmp_path: Path) -> None:
    env = {"currencyservice": {"BOUTIQUE_WORKERS": "2"}}
    with start_on_free_offset(redis=False, services=["currencyservice"], service_env=env, log_dir=tmp_path) as shop:
        supervisor = shop.pid("currencyservice")
        assert supervisor
        workers = _workers(supervisor)
        os.kill(workers[0], signal.SIGKILL)
        deadline, died = time.monotonic() + 15, {}
        while not died and time.monotonic() < deadline:
            died = shop.exited()
            time.sleep(0.05)
        assert died == {"currencyservice": 1}
        assert not [w for w in workers if alive(w)]
        assert "worker exited unexpectedly" in shop.log_path("currencyservice").read_text()


def test_sigterm_while_workers_start_stops_cleanly(tmp_path: Path) -> None:
    offset = free_port_offset(redis=False)
    shop = Shop(port_offset=offset, redis=False, services=["currencyservice"])
    env = {**os.environ, **shop.env_for("currencyservice"), "BOUTIQUE_WORKERS": "2"}
    with open(tmp_path / "svc.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "boutique.cli", "serve", "currencyservice"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline:
        workers = _workers(proc.pid)
        time.sleep(0.02)
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)  # the workers are still importing
    assert proc.wait(timeout=20) == 0, (tmp_path / "svc.log").read_text()
    assert not [w for w in workers if alive(w)]
