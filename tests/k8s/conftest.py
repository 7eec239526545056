"""Fixtures for the Kubernetes tests: each inventory is rendered once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from k8s_helpers import INVENTORIES, ROOT, Rendered, k8s_lint, render
from testkit import IN_CI


@pytest.fixture(scope="session")
def rendered_all(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    return {inv: render(inv, tmp_path_factory.mktemp(f"render-{inv}")) for inv in INVENTORIES}


@pytest.fixture(scope="session", params=INVENTORIES)
def rendered(request: pytest.FixtureRequest, rendered_all: dict[str, Rendered]) -> Rendered:
    return rendered_all[request.param]


@pytest.fixture(scope="session")
def catalog() -> k8s_lint.Catalog:
    return k8s_lint.Catalog.load()


@pytest.fixture(scope="session")
def k8s_settings() -> dict:
    settings: dict = {}
    for name in ("main.yml", "kubernetes.yml"):
        settings.update(yaml.safe_load((ROOT / "group_vars/all" / name).read_text()))
    return settings


@pytest.fixture(scope="session")
def istio_crd_bundle() -> Path:
    """The Istio CRD bundle: $BOUTIQUE_ISTIO_CRDS or ../shared/istio/crds-1.30.3.yaml."""
    env = os.environ.get("BOUTIQUE_ISTIO_CRDS")
    path = Path(env) if env else ROOT.parent / "shared/istio/crds-1.30.3.yaml"
    if not path.is_file():
        message = (f"Istio CRD bundle not found at {path}: set BOUTIQUE_ISTIO_CRDS, or run "
                   "`python scripts/istio_crds.py` to download the pinned bundle")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
