"""Ops playbooks against the real local shop (boutique.dev.shop.Shop, mutual TLS on):
smoke-test.yml walks the buying flow, verify-mtls.yml probes every gRPC service,
backup-cart.yml / restore-cart.yml round-trip a cart the frontend wrote to Redis."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from ops_playbook_lib import require_tool, run_playbook, start_shop

from boutique import service_catalog as catalog_mod

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def shop():
    shop = start_shop(mtls=True, redis="auto")
    try:
        yield shop
    finally:
        shop.stop()


def test_smoke_test_buys_through_the_frontend(shop):
    run = run_playbook("playbooks/smoke-test.yml", {"smoke_base_url": shop.base_url}).assert_ok()
    found = re.search(r"smoke test PASSED against (\S+): bought 2 x (\w+), order ([0-9a-f-]{36}), total (\S+)",
                      run.flat)
    assert found, run.output[-2000:]
    assert found.group(1) == shop.base_url


def test_smoke_test_names_the_step_that_broke(shop):
    run = run_playbook("playbooks/smoke-test.yml", {"smoke_base_url": shop.base_url, "smoke_product_id": "NOSUCHPROD"})
    run.assert_failed_with("smoke test FAILED at step 2 (product page)", "/product/NOSUCHPROD")

    unreachable = run_playbook("playbooks/smoke-test.yml", {"smoke_base_url": "http://127.0.0.1:9"})
    unreachable.assert_failed_with("smoke test FAILED at step 1 (home page)")


def test_smoke_test_validates_inputs_and_sends_nothing_in_check_mode(shop):
    bad = run_playbook("playbooks/smoke-test.yml", {"smoke_base_url": shop.base_url, "smoke_quantity": 11})
    bad.assert_failed_with("smoke_quantity an integer 1..10 (got 11)")
    dry = run_playbook("playbooks/smoke-test.yml", {"smoke_base_url": shop.base_url}, check=True).assert_ok()
    assert "nothing sent" in dry.flat
    assert dry.changed == 0


def test_verify_mtls_local_refuses_plaintext_and_certificate_less_clients(shop):
    run = run_playbook("playbooks/verify-mtls.yml", {"verify_mtls_tls_dir": str(shop.tls_dir),
                                                     "verify_mtls_port_offset": shop.port_offset}).assert_ok()
    grpc_count = len([s for s in catalog_mod.default().grpc_services() if s.deploy])
    assert f"mTLS OK on {grpc_count} gRPC services" in run.flat
    assert run.changed == 0
    checked = run_playbook("playbooks/verify-mtls.yml", {"verify_mtls_tls_dir": str(shop.tls_dir),
                                                         "verify_mtls_port_offset": shop.port_offset}, check=True)
    assert checked.assert_ok().changed == 0


def test_verify_mtls_local_fails_on_a_plaintext_service(shop):
    plain = start_shop(mtls=False, redis=False, services=["currencyservice"])
    try:
        run = run_playbook("playbooks/verify-mtls.yml", {"verify_mtls_tls_dir": str(shop.tls_dir),
                                                         "verify_mtls_port_offset": plain.port_offset,
                                                         "verify_mtls_services": "currencyservice"})
    finally:
        plain.stop()
    run.assert_failed_with("mTLS verification FAILED", "currencyservice: ACCEPTED a plaintext client",
                           "currencyservice: REFUSED the client certificate")


def test_verify_mtls_rejects_unknown_services(shop):
    run = run_playbook("playbooks/verify-mtls.yml", {"verify_mtls_tls_dir": str(shop.tls_dir),
                                                     "verify_mtls_services": "currencyservice,paymentsvc"})
    run.assert_failed_with("unknown service(s): paymentsvc", "catalog names from group_vars/all/catalog.yml:",
                           "cartservice")


def test_cart_backup_and_restore_round_trip_through_the_shop(shop, tmp_path):
    require_tool("redis-server", "the cart's Redis behind the local shop")
    assert shop.redis_address is not None, "redis-server is installed but the shop runs without it"
    with httpx.Client(base_url=shop.base_url, timeout=15) as web:
        assert web.get("/").status_code == 200
        assert web.post("/cart", data={"product_id": "66VCHSJNUP", "quantity": "3"}).status_code in (200, 302, 303)
        session = web.cookies["shop_session-id"]
        backup = tmp_path / "cart.json"
        run_playbook("playbooks/backup-cart.yml", {"cart_backup_redis": shop.redis_address,
                                                   "cart_backup_file": str(backup)}).assert_ok()
        doc = json.loads(backup.read_text())
        assert session in {c["key"] for c in doc["carts"]}

        assert web.post("/cart/empty").status_code in (200, 302, 303)
        assert "SKU #66VCHSJNUP" not in web.get("/cart").text

        restored = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": shop.redis_address,
                                                               "cart_restore_file": str(backup)}).assert_ok()
        assert restored.changed == 1
        page = web.get("/cart").text
        assert "SKU #66VCHSJNUP" in page
        assert re.search(r"Quantity:\s*3", page)
