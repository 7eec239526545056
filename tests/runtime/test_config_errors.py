"""`boutique serve` with bad configuration: exit 2, one clear line naming the problem, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from boutique import service_catalog as catalog_mod

pytestmark = [pytest.mark.slow]
CAT = catalog_mod.default()
# variables the runner or a developer shell might have set; each case starts from a clean slate
_CLEAN = {"PORT", "METRICS_PORT", "LISTEN_ADDR", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CA_FILE", "REDIS_ADDR",
          "BOUTIQUE_WORKERS", *(s.addr_env for s in CAT.services.values() if s.addr_env)}


def serve(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _CLEAN}
    return subprocess.run([sys.executable, "-m", "boutique.cli", "serve", name],
                          env={**base, "METRICS_PORT": "0", "LISTEN_ADDR": "127.0.0.1", "PORT": "0", **env},
                          capture_output=True, text=True, timeout=30)


def assert_config_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in {result.stderr!r}"


def _checkout_env_without(missing: str) -> dict[str, str]:
    env = {}
    for callee in CAT.get("checkoutservice").callees:
        env[CAT.get(callee).addr_env] = "127.0.0.1:1"
    env.pop(missing)
    return env


def test_missing_callee_address_names_the_variable() -> None:
    var = CAT.get("productcatalogservice").addr_env
    result = serve("checkoutservice", **_checkout_env_without(var))
    assert_config_error(result, "checkoutservice", var, "required")


def test_malformed_callee_address_names_the_variable() -> None:
    var = CAT.get("productcatalogservice").addr_env
    result = serve("recommendationservice", **{var: "no-port-here"})
    assert_config_error(result, var, "'no-port-here'", "host:port")


@pytest.mark.parametrize("port", ["abc", "70000", "-1"])
def test_malformed_port(port: str) -> None:
    assert_config_error(serve("currencyservice", PORT=port), "PORT=")


def test_tls_certificate_without_key(tmp_path: Path) -> None:
    cert = tmp_path / "svc.pem"
    cert.write_text("not really a certificate")
    result = serve("currencyservice", TLS_CERT_FILE=str(cert))
    assert_config_error(result, "TLS_CERT_FILE and TLS_KEY_FILE must be set together")


def test_tls_file_that_does_not_exist(tmp_path: Path) -> None:
    result = serve("currencyservice", TLS_CERT_FILE=str(tmp_path / "a.pem"), TLS_KEY_FILE=str(tmp_path / "a.key"))
    assert_config_error(result, "TLS_CERT_FILE=", "no such file")


def test_unknown_service_name() -> None:
    result = serve("nosuchservice")
    assert_config_error(result, "unknown service 'nosuchservice'", "currencyservice")


def test_bad_access_log_value() -> None:
    assert_config_error(serve("currencyservice", BOUTIQUE_ACCESS_LOG="verbose"), "BOUTIQUE_ACCESS_LOG")
