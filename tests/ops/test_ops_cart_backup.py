"""backup-cart.yml / restore-cart.yml: round trips against real redis-servers (and S3 on moto)."""

from __future__ import annotations

import base64
import json

import pytest
from ops_playbook_lib import aws_vars, run_playbook

from boutique.proto import demo_pb2

pytestmark = [pytest.mark.slow]


def _cart(user: str, items: dict[str, int]) -> bytes:
    cart = demo_pb2.Cart(user_id=user, items=[demo_pb2.CartItem(product_id=p, quantity=q) for p, q in items.items()])
    return cart.SerializeToString()


def _seed(client) -> dict[bytes, dict[bytes, bytes]]:
    carts = {
        "6f1c7a52-0b35-4f0e-9a43-1d2c3b4a5e6f": {"OLJCESPC7Z": 2, "66VCHSJNUP": 1},
        "c2a1b0e9-8d7c-4b6a-9f5e-4d3c2b1a0f9e": {"L9ECAV7KIM": 10},
    }
    for user, items in carts.items():
        client.hset(user, mapping={"absexp": "-1", "sldexp": "-1", "data": _cart(user, items)})
    client.set("not-a-cart", "a string key is skipped")
    return {k: client.hgetall(k) for k in client.scan_iter() if client.type(k) == b"hash"}


def _hashes(client) -> dict[bytes, dict[bytes, bytes]]:
    return {k: client.hgetall(k) for k in client.scan_iter() if client.type(k) == b"hash"}


def test_backup_then_restore_into_an_empty_redis_gives_identical_carts(redis_pair, tmp_path):
    source, target = redis_pair
    seeded = _seed(source.client())
    backup = tmp_path / "backups" / "cart.json"

    run_playbook("playbooks/backup-cart.yml", {"cart_backup_redis": source.address,
                                               "cart_backup_file": str(backup)}).assert_ok()
    doc = json.loads(backup.read_text())
    assert doc["format"] == "boutique-cart-backup/1"
    assert {c["key"] for c in doc["carts"]} == {k.decode() for k in seeded}
    first = next(c for c in doc["carts"] if c["key"].startswith("6f1c"))
    cart = demo_pb2.Cart.FromString(base64.b64decode(first["fields"]["data"]))
    assert {(i.product_id, i.quantity) for i in cart.items} == {("OLJCESPC7Z", 2), ("66VCHSJNUP", 1)}
    assert base64.b64decode(first["fields"]["absexp"]) == b"-1"
    assert oct(backup.stat().st_mode & 0o777) == "0o600"

    restored = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": target.address,
                                                           "cart_restore_file": str(backup)}).assert_ok()
    assert restored.changed == 1
    assert _hashes(target.client()) == seeded
    assert target.client().get("not-a-cart") is None

    again = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": target.address,
                                                        "cart_restore_file": str(backup)}).assert_ok()
    assert again.changed == 0, "restoring the same backup twice must not change anything"


def test_restore_in_check_mode_reports_but_does_not_write(redis_pair, tmp_path):
    source, target = redis_pair
    seeded = _seed(source.client())
    backup = tmp_path / "cart.json"
    run_playbook("playbooks/backup-cart.yml", {"cart_backup_redis": source.address,
                                               "cart_backup_file": str(backup)}).assert_ok()
    user = next(iter(seeded))
    target.client().hset(user, mapping={"absexp": "-1", "sldexp": "-1", "data": _cart(user.decode(), {"X": 1})})
    before = _hashes(target.client())

    dry = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": target.address,
                                                      "cart_restore_file": str(backup)}, check=True).assert_ok()
    assert dry.changed == 1
    assert "check mode: would restore 2 cart(s)" in dry.flat
    assert _hashes(target.client()) == before

    pruned = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": target.address,
                                                         "cart_restore_file": str(backup),
                                                         "cart_restore_prune": True}).assert_ok()
    assert pruned.changed == 1
    assert _hashes(target.client()) == seeded


def test_restore_refuses_a_missing_or_malformed_backup(redis_pair, tmp_path):
    _, target = redis_pair
    missing = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": target.address,
                                                          "cart_restore_file": str(tmp_path / "nope.json")})
    missing.assert_failed_with("nope.json does not exist")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else", "carts": []}))
    wrong = run_playbook("playbooks/restore-cart.yml", {"cart_restore_redis": target.address,
                                                        "cart_restore_file": str(bad)})
    wrong.assert_failed_with("not a cart backup")

    bad_addr = run_playbook("playbooks/backup-cart.yml", {"cart_backup_redis": "localhost",
                                                          "cart_backup_file": str(tmp_path / "x.json")})
    bad_addr.assert_failed_with("must be host:port")


@pytest.mark.aws
def test_backup_to_s3_and_restore_from_s3_on_moto(redis_pair, tmp_path, moto_endpoint):
    import boto3

    source, target = redis_pair
    seeded = _seed(source.client())
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="boutique-cart-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    run_playbook("playbooks/backup-cart.yml", {
        "cart_backup_redis": source.address, "cart_backup_file": str(tmp_path / "up.json"),
        "cart_backup_s3_bucket": "boutique-cart-backups", "cart_backup_s3_key": "cart/test.json",
        **aws_vars(moto_endpoint)}).assert_ok()
    body = s3.get_object(Bucket="boutique-cart-backups", Key="cart/test.json")["Body"].read()
    assert json.loads(body)["format"] == "boutique-cart-backup/1"

    run_playbook("playbooks/restore-cart.yml", {
        "cart_restore_redis": target.address, "cart_restore_file": str(tmp_path / "down.json"),
        "cart_restore_s3_bucket": "boutique-cart-backups", "cart_restore_s3_key": "cart/test.json",
        **aws_vars(moto_endpoint)}).assert_ok()
    assert _hashes(target.client()) == seeded
