"""Fixtures for tests/ops (the helpers live in ops_playbook_lib)."""

from ops_playbook_lib import moto_endpoint, playbook, redis_pair  # noqa: F401  (fixtures)
