"""Fixtures and helpers of the ops playbook tests over tests/testkit.py (its playbook runner,
redis-server and moto helpers). Imported as `ops_playbook_lib` (a unique module name).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import ROOT, RedisServer, moto_server, require_tool, run_playbook

__all__ = ["ROOT", "aws_vars", "require_tool", "run_playbook", "start_shop"]


@pytest.fixture
def playbook():
    return run_playbook


@pytest.fixture
def redis_pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two independent redis-servers: the source of a backup and the restore target."""
    binary = require_tool("redis-server", "cart backup/restore round trip against a real Redis")
    servers = [RedisServer(binary, workdir=tmp_path) for _ in range(2)]
    try:
        yield servers[0].start(), servers[1].start()
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real moto server (the project's patched start-up script) on a free loopback port."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def aws_vars(endpoint: str) -> dict[str, Any]:
    """Extra vars pointing the local inventory's plays at a test moto server."""
    port = int(endpoint.rsplit(":", 1)[1])
    return {"boutique_aws_endpoint_url": endpoint, "moto_port": port}


# Runner port offsets for the ops tests: away from the other areas' usual offsets
# and not 5/50/70 apart from each other (the catalog's local ports are that close).
OPS_PORT_OFFSETS = (311, 337, 363, 389, 413, 439)


def start_shop(**kwargs):
    """Start a local Shop on the first free ops port offset (real processes)."""
    from boutique.dev.shop import PortInUseError, Shop

    last: Exception | None = None
    for offset in OPS_PORT_OFFSETS:
        shop = Shop(port_offset=offset, **kwargs)
        try:
            return shop.start()
        except PortInUseError as exc:
            last = exc
    raise AssertionError(f"no free port offset for the shop among {OPS_PORT_OFFSETS}: {last}")
