"""The roles' meta/argument_specs.yml are the truth: their defaults are defaults/main.yml's,
and each role's README variable table is what scripts/role_docs.py generates from them."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from testkit import ROOT

pytestmark = [pytest.mark.lint]

_spec = importlib.util.spec_from_file_location("role_docs", ROOT / "scripts" / "role_docs.py")
assert _spec and _spec.loader
role_docs = importlib.util.module_from_spec(_spec)
sys.modules["role_docs"] = role_docs
_spec.loader.exec_module(role_docs)

ROLES = role_docs.role_dirs()


def test_every_role_has_a_spec() -> None:
    assert {p.name for p in ROLES} == {p.name for p in (ROOT / "roles").iterdir() if p.is_dir()}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_defaults_are_the_role_defaults(role) -> None:
    assert role_docs.spec_disagreements(role) == []


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_variables_are_generated_from_the_spec(role) -> None:
    readme = role / "README.md"
    assert readme.exists(), f"{readme} is missing: python scripts/role_docs.py"
    assert readme.read_text(encoding="utf-8") == role_docs.readme_text(role), (
        f"{readme} is out of date: python scripts/role_docs.py"
    )


def test_the_security_relevant_defaults_are_documented_as_they_are() -> None:
    """The API allow-list defaults to the VPC, and three control-plane log types are on."""
    network = {name: opt for _, name, opt in role_docs.options(ROOT / "roles" / "network")}
    assert network["network_api_allowed_cidrs"]["default"] == ["{{ network_vpc_cidr }}"]
    eks = {name: opt for _, name, opt in role_docs.options(ROOT / "roles" / "eks")}
    assert eks["eks_cluster_log_types"]["default"] == ["api", "audit", "authenticator"]


def test_a_disagreement_is_found(tmp_path) -> None:
    """The checker names a spec default that differs from defaults/main.yml, also after templating,
    and accepts one that is the same value written out."""
    role = tmp_path / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "defaults" / "main.yml").write_text(
        "demo_cidr: 10.0.0.0/16\ndemo_allowed: ['{{ demo_cidr }}']\ndemo_same: '{{ demo_cidr }}'\ndemo_extra: 1\n"
    )
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n"
        "      demo_cidr: {type: str, required: true}\n"
        "      demo_allowed: {type: list, default: []}\n"
        "      demo_same: {type: str, default: 10.0.0.0/16}\n"
        "      demo_gone: {type: str, default: x}\n"
    )
    found = "\n".join(role_docs.spec_disagreements(role))
    assert "demo_cidr (main): required" in found
    assert "demo_allowed (main): spec says []" in found
    assert "demo_same" not in found
    assert "demo_gone (main): the spec's default 'x' is not in defaults/main.yml" in found
    assert "demo_extra: in defaults/main.yml but in no entry point's spec" in found
