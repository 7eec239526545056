"""Alert rules and dashboards: promtool unit tests, PromQL that parses and only uses
exported metrics, the rendered PrometheusRule/ConfigMaps, and a live check that the
dashboards' queries return data from a real Prometheus scraping the running shop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from k8s_helpers import ROOT, free_port, require_tool

sys.path.insert(0, str(ROOT / "scripts"))
import k8s_lint

pytestmark = pytest.mark.k8s

RULES = ROOT / "roles/observability/files/rules/boutique.rules.yml"
RULE_TESTS = ROOT / "tests/k8s/promtool/boutique_rules_test.yml"
DASHBOARDS = sorted((ROOT / "roles/observability/files/dashboards").glob("*.json"))
# Metrics that only exist in a cluster (Istio proxies, kube-state-metrics, Prometheus alerts).
CLUSTER_ONLY = k8s_lint.ISTIO_METRICS | k8s_lint.KUBE_METRICS | {"ALERTS", "ALERTS_FOR_STATE"}


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every panel target."""
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
    return out


def test_alert_rules_pass_their_promtool_unit_tests():
    promtool = require_tool("promtool", "unit-tests the alert rules")
    result = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_rules_file_passes_promtool_check_and_covers_the_required_alerts():
    promtool = require_tool("promtool", "checks the alert rules")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert {"BoutiqueHighErrorRatio", "BoutiqueHighLatencyP99", "BoutiquePodNotReady",
            "BoutiqueContainerRestarting", "BoutiqueMtlsNotStrict"} <= alerts


def test_a_broken_rule_fails_promtool(tmp_path):
    promtool = require_tool("promtool", "checks the alert rules")
    bad = tmp_path / "bad.rules.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "Broken", "expr": "sum by (app (rate(grpc_server_handled_total[5m]))"}]}]}))
    result = subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0


def test_dashboard_promql_parses(tmp_path):
    promtool = require_tool("promtool", "parses the dashboards' PromQL")
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": k8s_lint.grafana_to_promql(expr)}
        for i, (_, _, expr) in enumerate(exprs)]}]}
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_rules_and_dashboards_only_use_exported_metrics():
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if "record" in r}
    exprs = [(f"rule {r.get('alert') or r.get('record')}", r["expr"])
             for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [(f"{d} {t}", e) for d, t, e in dashboard_exprs()]
    unknown = {where: sorted(k8s_lint.promql_metric_names(e) - k8s_lint.ALLOWED_METRICS - recorded)
               for where, e in exprs}
    assert {k: v for k, v in unknown.items() if v} == {}


def test_metric_name_extraction_sees_through_labels_functions_and_grouping():
    expr = ('histogram_quantile(0.99, sum by (app, le) (rate(grpc_server_handling_seconds_bucket{app="$app", '
            'grpc_code=~"OK|rate"}[$__rate_interval]))) / on (app) group_left () bogus_metric offset 5m')
    assert k8s_lint.promql_metric_names(expr) == {"grpc_server_handling_seconds_bucket", "bogus_metric"}


def test_service_dashboard_has_the_required_panels():
    service = json.loads((ROOT / "roles/observability/files/dashboards/service.json").read_text())
    text = json.dumps(service["panels"])
    for needle in ("grpc_server_handled_total", "http_requests_total", "histogram_quantile(0.5,",
                   "histogram_quantile(0.95,", "histogram_quantile(0.99,", "process_cpu_seconds_total",
                   "process_resident_memory_bytes", "kube_pod_container_status_restarts_total"):
        assert needle in text, needle
    assert [v["name"] for v in service["templating"]["list"]] == ["datasource", "app"]
    overview = json.loads((ROOT / "roles/observability/files/dashboards/mesh-overview.json").read_text())
    assert {p["title"] for p in overview["panels"]} >= {"Requests per second by service",
                                                       "Error ratio by service (server errors, 5m)"}
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids) == 2


@pytest.mark.slow
def test_rendered_prometheus_rule_and_dashboards_match_the_repo_files(rendered_all):
    rendered = rendered_all["local"]
    rule = rendered.get("PrometheusRule", "boutique")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    maps = [o for o in rendered.objects("ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {f"boutique-{p.name}": json.loads(p.read_text()) for p in DASHBOARDS}
    assert {k: json.loads(v) for m in maps for k, v in m["data"].items()} == shipped


# --- live: a real Prometheus scraping the running shop ----------------------------------

def prometheus_query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def drive_load(base_url: str, rounds: int) -> None:
    """Browse, add to cart, check out, and hit a missing product (404 + NOT_FOUND)."""
    import httpx

    form = {"email": "someone@example.com", "street_address": "1600 Amphitheatre Parkway", "zip_code": "94043",
            "city": "Mountain View", "state": "CA", "country": "United States",
            "credit_card_number": "4432801561520454", "credit_card_expiration_month": "1",
            "credit_card_expiration_year": str(time.gmtime().tm_year + 2), "credit_card_cvv": "672"}
    with httpx.Client(base_url=base_url, timeout=15, follow_redirects=True) as client:
        for i in range(rounds):
            assert client.get("/").status_code == 200
            assert client.get("/product/OLJCESPC7Z").status_code == 200
            assert client.post("/setCurrency", data={"currency_code": ["EUR", "USD", "JPY"][i % 3]}).status_code == 200
            assert client.post("/cart", data={"product_id": "66VCHSJNUP", "quantity": "1"}).status_code == 200
            assert client.get("/cart").status_code == 200
            client.get("/product/NO-SUCH-PRODUCT")
            if i % 5 == 0:
                assert client.post("/cart/checkout", data=form).status_code == 200


@pytest.mark.slow
def test_dashboard_queries_return_data_from_a_live_shop(tmp_path):
    prometheus = require_tool("prometheus", "scrapes the live shop")
    runner = pytest.importorskip("boutique.dev.shop", reason="the local shop (boutique.dev.shop) is not available")
    offset = runner.free_port_offset()
    with runner.Shop(port_offset=offset, mtls=False) as shop:
        targets = shop.metrics_targets()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "boutique", "static_configs": [
                {"targets": [addr], "labels": {"app": name}} for name, addr in sorted(targets.items())]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = (tmp_path / "prometheus.log").open("w")
        proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: len(prometheus_query(base, "up == 1")) == len(targets), 60,
                     f"Prometheus did not scrape all {len(targets)} targets; log: {tmp_path / 'prometheus.log'}")
            drive_load(shop.base_url, rounds=40)
            time.sleep(4)  # a few more scrapes after the load

            def rule_groups() -> list[dict]:
                return json.load(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10))["data"]["groups"]

            # Each group evaluates on its own interval (30s): a rule is "unknown" until its
            # first evaluation, then "ok" or "err". Wait for every rule to be evaluated.
            wait_for(lambda: all(r["health"] != "unknown" for g in rule_groups() for r in g["rules"]), 90,
                     "Prometheus did not evaluate every rule within 90s")
            rules = rule_groups()
            assert {g["name"] for g in rules} == {"boutique.recording", "boutique.alerts"}
            assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
            queries = [(f"{dashboard} / {title}", expr) for dashboard, title, expr in dashboard_exprs()
                       if not k8s_lint.promql_metric_names(expr) & CLUSTER_ONLY]
            assert len(queries) >= 10

            def empty_queries() -> list[str]:
                empty = []
                for where, expr in queries:
                    apps = ["frontend", "checkoutservice"] if "$app" in expr else [None]
                    if not any(prometheus_query(base, k8s_lint.grafana_to_promql(
                            expr, {"__rate_interval": "1m", **({"app": app} if app else {})})) for app in apps):
                        empty.append(f"{where}: {expr}")
                return empty

            # Recording rules evaluate every 30s: give them up to a minute to see the load.
            deadline = time.monotonic() + 60
            while (empty := empty_queries()) and time.monotonic() < deadline:
                time.sleep(2)
            assert empty == []
            ratio = {r["metric"]["app"] for r in prometheus_query(base, "app:request_error_ratio:rate5m")}
            assert {"frontend", "cartservice", "checkoutservice", "productcatalogservice"} <= ratio
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()


def wait_for(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(message)


def test_promtool_test_file_points_at_the_rules_file():
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert [(RULE_TESTS.parent / f).resolve() for f in tests["rule_files"]] == [RULES.resolve()]
    assert Path(RULES).is_file()
