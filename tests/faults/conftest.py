"""The fault suite's shop and its results table.

  fault_shop   (module) the whole shop through the local runner: every service a process,
               carts in a real redis-server with its append-only file
  results      the table the tests fill: one row per fault (requests, errors, lost carts,
               double charges); printed at the end of the run and written to
               <artifacts>/faults.txt
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from testkit import ROOT, require_tool, wait_until

from boutique.dev.shop import Shop, start_on_free_offset
from boutique.dev.shop.processes import tail


@dataclass
class Row:
    fault: str
    requests: int = 0
    errors: int = 0
    lost_carts: int = 0
    double_charges: int = 0
    seconds: float = 0.0
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)

    def add(self, fault: str, requests: int, errors: int, lost_carts: int, double_charges: int,
            seconds: float, note: str = "") -> Row:
        row = Row(fault, requests, errors, lost_carts, double_charges, seconds, note)
        self.rows.append(row)
        return row

    def table(self) -> str:
        head = f"{'fault':<34} {'requests':>8} {'errors':>6} {'lost carts':>10} {'double charges':>14} {'s':>5}  note"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.fault:<34} {r.requests:>8} {r.errors:>6} {r.lost_carts:>10} {r.double_charges:>14} "
                         f"{r.seconds:>5.1f}  {r.note}")
        return "\n".join(lines)


RESULTS = Results()


@pytest.fixture(scope="session")
def results() -> Results:
    return RESULTS


WARM_UP_SECONDS = 60


def warm_up(shop: Shop) -> None:
    """Put one item in a throw-away cart through the frontend before any fault.

    Health checks pass before the first real call has opened the frontend's channels and the
    cart's Redis connection; on a loaded CI machine (the node lane runs beside this one) that
    first call can overrun the cart's 2 s deadline and the shop rightly answers 500. The tests
    measure faults, not a cold start, so they begin once one add-to-cart has gone through."""
    with httpx.Client(base_url=shop.base_url, follow_redirects=False, timeout=10) as client:
        client.cookies.set("shop_session-id", str(uuid.uuid4()))

        def one_item_added() -> bool:
            r = client.post("/cart", data={"product_id": "OLJCESPC7Z", "quantity": "1"})
            if r.status_code != 302:  # the answer goes into the failure message
                raise AssertionError(f"{r.status_code} {r.text[:300]!r}")
            return True

        try:
            wait_until("an add-to-cart through the fresh shop", one_item_added, timeout=WARM_UP_SECONDS, interval=0.5)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\nfrontend log:\n{tail(shop.log_path('frontend'), 30)}")


@pytest.fixture(scope="module")
def fault_shop() -> Iterator[Shop]:
    require_tool("redis-server", "the fault suite keeps carts in a real Redis")
    shop = start_on_free_offset(redis=True, env={"BOUTIQUE_ACCESS_LOG": "errors", "SHUTDOWN_GRACE_SECONDS": "5"})
    try:
        warm_up(shop)
        yield shop
    finally:
        shop.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not RESULTS.rows:
        return
    text = RESULTS.table()
    terminalreporter.write_sep("=", "fault suite")
    terminalreporter.write_line(text)
    out = Path(os.environ.get("ARTIFACTS") or ROOT / "artifacts")
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.txt").write_text(text + "\n")
