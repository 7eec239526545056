"""Dump and restore the cart's Redis data (playbooks/backup-cart.yml, restore-cart.yml).

The cart layout (contract §2.2): key = <user_id>, a HASH {absexp, sldexp, data}
where data is a serialized hipstershop.Cart. The backup is one JSON document:

    {"format": "boutique-cart-backup/1", "created": "...", "source": "host:port",
     "carts": [{"key": "<user_id>", "fields": {"absexp": "<base64>", ...}}, ...]}

  python -m boutique.tools.cartbackup dump    --redis host:port --file F
  python -m boutique.tools.cartbackup restore --redis host:port --file F [--prune] [--dry-run]

Both print one JSON object on stdout (what was done, `changed`), errors go to stderr
with exit status 2 (bad input) or 1 (Redis unreachable, I/O failure).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

FORMAT = "boutique-cart-backup/1"
CART_FIELDS = ("absexp", "sldexp", "data")


class BackupError(Exception):
    """Bad input: a malformed address or backup file."""


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackupError(f"--redis {text!r} must be host:port, e.g. 127.0.0.1:6379")
    return host.strip("[]"), int(port)


def connect(addr: str, password: str | None, timeout: float) -> redis.Redis:
    host, port = parse_addr(addr)
    return redis.Redis(host=host, port=port, password=password or None, socket_timeout=timeout,
                       socket_connect_timeout=timeout)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _cart_items(data: bytes) -> int | None:
    """Number of items in a serialized hipstershop.Cart, None when it does not parse."""
    from google.protobuf.message import DecodeError

    from boutique.proto import demo_pb2

    cart = demo_pb2.Cart()
    try:
        cart.ParseFromString(data)
    except DecodeError:
        return None
    return len(cart.items)


def read_carts(client: redis.Redis) -> tuple[dict[bytes, dict[bytes, bytes]], list[str]]:
    """Every hash key with its fields; names of keys of other types (skipped)."""
    carts: dict[bytes, dict[bytes, bytes]] = {}
    skipped: list[str] = []
    for key in client.scan_iter(count=500):
        kind = client.type(key)
        if kind == b"hash":
            carts[key] = client.hgetall(key)
        else:
            skipped.append(f"{key.decode('utf-8', 'backslashreplace')} ({kind.decode()})")
    return carts, sorted(skipped)


def encode(carts: dict[bytes, dict[bytes, bytes]], source: str) -> dict[str, Any]:
    entries = []
    for key in sorted(carts):
        entry: dict[str, Any] = {"fields": {f.decode(): _b64(v) for f, v in sorted(carts[key].items())}}
        try:
            entry["key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            entry["key_b64"] = _b64(key)
        entries.append(entry)
    return {"format": FORMAT, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": source, "carts": entries}


def decode(doc: Any, where: str) -> dict[bytes, dict[bytes, bytes]]:
    """Validate a backup document; key -> fields as bytes."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"{where}: not a cart backup (expected \"format\": \"{FORMAT}\")")
    if not isinstance(doc.get("carts"), list):
        raise BackupError(f"{where}: \"carts\" must be a list")
    carts: dict[bytes, dict[bytes, bytes]] = {}
    for i, entry in enumerate(doc["carts"]):
        here = f"{where}: carts[{i}]"
        try:
            key = entry["key"].encode() if "key" in entry else base64.b64decode(entry["key_b64"], validate=True)
            fields = {str(f).encode(): base64.b64decode(v, validate=True) for f, v in entry["fields"].items()}
        except (KeyError, TypeError, AttributeError):
            raise BackupError(f"{here}: needs \"key\" (or \"key_b64\") and a \"fields\" mapping") from None
        except (binascii.Error, ValueError):
            raise BackupError(f"{here}: a field value is not valid base64") from None
        if not key or not fields:
            raise BackupError(f"{here}: empty key or no fields")
        carts[key] = fields
    return carts


def summary(carts: dict[bytes, dict[bytes, bytes]]) -> dict[str, Any]:
    layout_ok = [k for k, f in carts.items() if set(CART_FIELDS) <= {x.decode() for x in f}]
    items = [_cart_items(f[b"data"]) for f in carts.values() if b"data" in f]
    return {
        "keys": len(carts),
        "cart_layout_keys": len(layout_ok),
        "items": sum(n for n in items if n is not None),
        "unparsable_carts": sum(1 for n in items if n is None),
    }


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)  # carts are user data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump(args: argparse.Namespace) -> dict[str, Any]:
    client = connect(args.redis, args.password, args.timeout)
    carts, skipped = read_carts(client)
    path = Path(args.file)
    if path.is_file():  # the same carts as the backup there: keep it (and its date), change nothing
        try:
            old_text = path.read_text()
            unchanged = decode(json.loads(old_text), str(path)) == carts
        except (OSError, ValueError, BackupError):
            unchanged = False
        if unchanged:
            return {"action": "dump", "file": str(path), "sha256": hashlib.sha256(old_text.encode()).hexdigest(),
                    "skipped_non_hash_keys": skipped, "changed": False, **summary(carts)}
    doc = encode(carts, args.redis)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    write_atomic(path, text)
    return {"action": "dump", "file": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "skipped_non_hash_keys": skipped, "changed": True, **summary(carts)}


def restore(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.file)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise BackupError(f"cannot read backup {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    wanted = decode(doc, str(path))
    client = connect(args.redis, args.password, args.timeout)
    current, _ = read_carts(client)
    to_write = sorted(k for k, fields in wanted.items() if current.get(k) != fields)
    to_delete = sorted(set(current) - set(wanted)) if args.prune else []
    if not args.dry_run and (to_write or to_delete):
        pipe = client.pipeline(transaction=True)
        for key in to_write:
            pipe.delete(key)
            pipe.hset(key, mapping=wanted[key])
        for key in to_delete:
            pipe.delete(key)
        pipe.execute()
    return {"action": "restore", "file": str(path), "dry_run": bool(args.dry_run),
            "written": len(to_write), "deleted": len(to_delete), "unchanged": len(wanted) - len(to_write),
            "changed": bool(to_write or to_delete), **summary(wanted)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boutique.tools.cartbackup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("dump", dump), ("restore", restore)):
        p = sub.add_parser(name)
        p.add_argument("--redis", required=True, help="host:port of the cart's Redis")
        p.add_argument("--file", required=True, help="backup JSON file")
        p.add_argument("--timeout", type=float, default=5.0, help="socket timeout in seconds")
        p.set_defaults(func=func)
        if name == "restore":
            p.add_argument("--prune", action="store_true", help="also delete keys that are not in the backup")
            p.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    args = parser.parse_args(argv)
    args.password = os.environ.get("REDIS_PASSWORD")
    try:
        result = args.func(args)
    except BackupError as exc:
        print(f"cartbackup: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"cartbackup: Redis at {args.redis}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cartbackup: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
