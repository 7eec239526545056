"""Cross-object lint for the manifests the Kubernetes roles render.

Schema validation (kubernetes-validate, Istio CRD schemas) checks each object on its
own; this module checks what only the whole set can show, against the service
catalog (group_vars/all/catalog.yml):

* every workload meets Pod Security "restricted", has startup/readiness/liveness
  probes, requests and limits, and runs as its own ServiceAccount;
* AuthorizationPolicy principals are ServiceAccounts that exist, and the ALLOW
  edges equal the catalog's call graph (plus the ingress gateway -> ingress service)
  exactly, with the target's exact gRPC paths and port; the same for NetworkPolicy;
* DestinationRule / VirtualService hosts and destinations are Services (and ports);
* retries only on routes that match idempotent methods exactly, and
  (retries + 1) x perTryTimeout fits the route timeout;
* Services select a workload and target one of its container ports;
* PromQL in rules and dashboards only uses metrics the services, Istio,
  kube-state-metrics or our own recording rules provide.

Usage: python scripts/k8s_lint.py RENDER_DIR [--catalog group_vars/all/catalog.yml]
Exit status 1 and one line per finding when something is wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "services") not in sys.path:
    sys.path.insert(0, str(REPO / "services"))

# The catalog's own duration grammar (ms|s|m|h), so the lint, the roles and the services agree;
# a CatalogError is a ValueError.
from boutique.service_catalog import parse_duration  # noqa: E402

TRUST_DOMAIN = "cluster.local"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

# Metrics PromQL may use: what the services export (prometheus-client), what Istio's
# proxies export, what kube-state-metrics (in kube-prometheus-stack) exports, and
# Prometheus' own synthetic series. Recording rules we define are added at run time.
_HIST = ("_bucket", "_sum", "_count")
SERVICE_METRICS = frozenset(
    {"grpc_server_handled_total", "grpc_client_handled_total", "http_requests_total",
     "process_cpu_seconds_total", "process_resident_memory_bytes"}
    | {f"{h}{s}" for h in ("grpc_server_handling_seconds", "grpc_client_handling_seconds",
                           "http_request_duration_seconds") for s in _HIST}
)
ISTIO_METRICS = frozenset(
    {"istio_requests_total", "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
     "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"}
    | {f"{h}{s}" for h in ("istio_request_duration_milliseconds", "istio_request_bytes",
                           "istio_response_bytes") for s in _HIST}
)
KUBE_METRICS = frozenset({"kube_pod_status_ready", "kube_pod_labels", "kube_pod_container_status_restarts_total"})
PROMETHEUS_METRICS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
ALLOWED_METRICS = SERVICE_METRICS | ISTIO_METRICS | KUBE_METRICS | PROMETHEUS_METRICS

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
     "offset", "inf", "nan", "le"}
)


@dataclass
class Catalog:
    services: list[dict[str, Any]]
    redis: dict[str, Any]

    @classmethod
    def load(cls, path: Path = REPO / "group_vars/all/catalog.yml") -> Catalog:
        data = yaml.safe_load(path.read_text())
        return cls(services=data["boutique_services"], redis=data["boutique_redis"])

    @property
    def deployed(self) -> list[dict[str, Any]]:
        return [s for s in self.services if s.get("deploy", True)]

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.services if s["name"] == name), None)

    def edges(self) -> set[tuple[str, str]]:
        """(caller, callee) pairs among deployed services and the Redis."""
        names = {s["name"] for s in self.deployed} | {self.redis["name"]}
        return {(s["name"], c) for s in self.deployed for c in s["callees"] if c in names}


@dataclass
class Manifests:
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file, object)
    releases: list[dict[str, Any]] = field(default_factory=list)  # Helm release records

    @classmethod
    def load(cls, render_dir: Path) -> Manifests:
        found = cls()
        for path in sorted(render_dir.rglob("*.yaml")):
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            rel = str(path.relative_to(render_dir))
            for doc in docs:
                if doc.get("kind") == "HelmRelease" and doc.get("apiVersion", "").startswith("boutique.dev/"):
                    found.releases.append(doc)
                elif "kind" in doc and "apiVersion" in doc:
                    found.objects.append((rel, doc))
        return found

    def of_kind(self, *kinds: str) -> Iterator[dict[str, Any]]:
        return (o for _, o in self.objects if o["kind"] in kinds)


def ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Linter:
    def __init__(self, manifests: Manifests, catalog: Catalog) -> None:
        self.m = manifests
        self.catalog = catalog
        self.findings: list[str] = []
        self.workloads = list(manifests.of_kind(*WORKLOAD_KINDS))
        self.services = list(manifests.of_kind("Service"))
        self.service_accounts = {
            (o["metadata"]["namespace"], o["metadata"]["name"]) for o in manifests.of_kind("ServiceAccount")
        }
        # Helm-installed identities the policies may name (the Istio gateway chart
        # creates a ServiceAccount named after its release).
        self.gateway_accounts = {
            (r["metadata"]["namespace"], r["metadata"]["name"]) for r in manifests.releases
            if r["spec"]["chart"] == "gateway"
        }

    def fail(self, obj: dict[str, Any] | None, message: str) -> None:
        self.findings.append(f"{ref(obj) if obj else 'manifests'}: {message}")

    def run(self) -> list[str]:
        for check in (self.check_workloads, self.check_services, self.check_authorization,
                      self.check_network_policies, self.check_traffic, self.check_scaling,
                      self.check_promql):
            check()
        return self.findings

    # -- workloads ------------------------------------------------------------------
    def workload_of_pod_labels(self, namespace: str, selector: dict[str, str]) -> dict[str, Any] | None:
        return next((w for w in self.workloads if w["metadata"]["namespace"] == namespace and labels_match(
            selector, w["spec"]["template"]["metadata"].get("labels", {}))), None)

    def check_workloads(self) -> None:
        accounts_used: dict[tuple[str, str], str] = {}
        for w in self.workloads:
            ns, name = w["metadata"]["namespace"], w["metadata"]["name"]
            pod = w["spec"]["template"]["spec"]
            psc = pod.get("securityContext", {})
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(flag):
                    self.fail(w, f"{flag} is forbidden by Pod Security restricted")
            for vol in pod.get("volumes", []):
                if "hostPath" in vol:
                    self.fail(w, f"hostPath volume {vol['name']} is forbidden")
            sa = pod.get("serviceAccountName")
            if not sa or sa == "default":
                self.fail(w, "runs as the default ServiceAccount; every workload needs its own")
            elif (ns, sa) not in self.service_accounts:
                self.fail(w, f"ServiceAccount {ns}/{sa} is not among the rendered objects")
            elif (ns, sa) in accounts_used:
                self.fail(w, f"shares ServiceAccount {sa} with {accounts_used[(ns, sa)]}")
            else:
                accounts_used[(ns, sa)] = name
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                self.check_container(w, psc, c, init=c in pod.get("initContainers", []))

    def check_container(self, w: dict[str, Any], psc: dict[str, Any], c: dict[str, Any], init: bool) -> None:
        csc = c.get("securityContext", {})
        who = f"container {c['name']}"

        def effective(key: str) -> Any:
            return csc.get(key, psc.get(key))

        if effective("runAsNonRoot") is not True:
            self.fail(w, f"{who}: runAsNonRoot must be true")
        if effective("runAsUser") == 0:
            self.fail(w, f"{who}: runAsUser 0 (root)")
        if (effective("seccompProfile") or {}).get("type") not in {"RuntimeDefault", "Localhost"}:
            self.fail(w, f"{who}: seccompProfile must be RuntimeDefault")
        if csc.get("allowPrivilegeEscalation") is not False:
            self.fail(w, f"{who}: allowPrivilegeEscalation must be false")
        if csc.get("privileged"):
            self.fail(w, f"{who}: privileged")
        caps = csc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            self.fail(w, f"{who}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            self.fail(w, f"{who}: adds capabilities {caps['add']}")
        if csc.get("readOnlyRootFilesystem") is not True:
            self.fail(w, f"{who}: readOnlyRootFilesystem must be true")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            self.fail(w, f"{who}: hostPort is forbidden")
        resources = c.get("resources", {})
        for section in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in resources.get(section, {}):
                    self.fail(w, f"{who}: resources.{section}.{res} is missing")
        if not init:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    self.fail(w, f"{who}: {probe} is missing")

    # -- services -------------------------------------------------------------------
    def check_services(self) -> None:
        for s in self.services:
            ns = s["metadata"]["namespace"]
            target = self.workload_of_pod_labels(ns, s["spec"].get("selector", {}))
            if target is None:
                self.fail(s, "selects no rendered workload")
                continue
            container_ports = {p["containerPort"] for c in target["spec"]["template"]["spec"]["containers"]
                               for p in c.get("ports", [])}
            for port in s["spec"].get("ports", []):
                if port.get("targetPort", port["port"]) not in container_ports:
                    self.fail(s, f"port {port['port']} targets {port.get('targetPort')}, not a container port")
                if not re.match(r"^(grpc|http|http2|tcp|tls|https|redis)(-|$)", port.get("name", "")):
                    self.fail(s, f"port name {port.get('name')!r} lacks an Istio protocol prefix")
                if not port.get("appProtocol"):
                    self.fail(s, f"port {port['port']} has no appProtocol")

    def service_by_host(self, host: str, namespace: str) -> dict[str, Any] | None:
        parts = host.split(".")
        name, ns = parts[0], parts[1] if len(parts) > 1 else namespace
        if len(parts) > 2 and ".".join(parts[2:]) != f"svc.{TRUST_DOMAIN}":
            return None
        return next((s for s in self.services
                     if s["metadata"]["name"] == name and s["metadata"]["namespace"] == ns), None)

    # -- authorization --------------------------------------------------------------
    def expected_edges(self) -> set[tuple[str, str]]:
        """(principal, target workload name) the catalog and ingress imply."""
        shop_ns = self.shop_namespace()
        edges = {(f"{TRUST_DOMAIN}/ns/{shop_ns}/sa/{a}", b) for a, b in self.catalog.edges()}
        for vs in self.m.of_kind("VirtualService"):
            if not vs["spec"].get("gateways"):
                continue
            for route in vs["spec"].get("http", []):
                for dest in route.get("route", []):
                    svc = self.service_by_host(dest["destination"]["host"], vs["metadata"]["namespace"])
                    if svc:
                        for gw_ns, gw_sa in self.gateway_accounts:
                            edges.add((f"{TRUST_DOMAIN}/ns/{gw_ns}/sa/{gw_sa}", svc["metadata"]["name"]))
        return edges

    def shop_namespace(self) -> str:
        # the catalog's workloads (others, such as the trace collector, live elsewhere)
        names = {s["name"] for s in self.catalog.deployed} | {self.catalog.redis["name"]}
        namespaces = {w["metadata"]["namespace"] for w in self.workloads if w["metadata"]["name"] in names}
        if len(namespaces) != 1:
            self.fail(None, f"expected the shop's workloads in one namespace, found {sorted(namespaces)}")
        return next(iter(sorted(namespaces)), "")

    def check_authorization(self) -> None:
        shop_ns = self.shop_namespace()
        seen: set[tuple[str, str]] = set()
        default_deny = False
        for ap in self.m.of_kind("AuthorizationPolicy"):
            ns, spec = ap["metadata"]["namespace"], ap.get("spec") or {}
            if not spec:
                default_deny = default_deny or ns == shop_ns
                continue
            if spec.get("action", "ALLOW") != "ALLOW":
                continue
            target = self.workload_of_pod_labels(ns, spec.get("selector", {}).get("matchLabels", {}))
            if target is None:
                self.fail(ap, "ALLOW policy without a selector matching a rendered workload")
                continue
            target_name = target["metadata"]["name"]
            entry = self.catalog.by_name(target_name)
            port = str(entry["port"] if entry else self.catalog.redis["port"])
            if not spec.get("rules"):
                self.fail(ap, "ALLOW policy without rules")
            for rule in spec.get("rules", []):
                principals = [p for f in rule.get("from", []) for p in f.get("source", {}).get("principals", [])]
                if not principals:
                    self.fail(ap, "rule without source principals (would allow any caller)")
                for principal in principals:
                    match = re.fullmatch(rf"{re.escape(TRUST_DOMAIN)}/ns/([^/]+)/sa/([^/]+)", principal)
                    if not match:
                        self.fail(ap, f"principal {principal!r} is not a ServiceAccount identity")
                        continue
                    if match.groups() not in self.service_accounts | self.gateway_accounts:
                        self.fail(ap, f"principal {principal} names no existing ServiceAccount")
                    seen.add((principal, target_name))
                self.check_operations(ap, rule, entry, port)
        if not default_deny:
            self.fail(None, f"no default-deny AuthorizationPolicy (spec: {{}}) in namespace {shop_ns}")
        expected = self.expected_edges()
        for principal, target in sorted(expected - seen):
            self.fail(None, f"call graph edge {principal} -> {target} is not allowed by any AuthorizationPolicy")
        for principal, target in sorted(seen - expected):
            self.fail(None, f"AuthorizationPolicy allows {principal} -> {target}, which is not in the call graph")

    def check_operations(self, ap: dict[str, Any], rule: dict[str, Any],
                         entry: dict[str, Any] | None, port: str) -> None:
        ops = [t.get("operation", {}) for t in rule.get("to", [])]
        if not ops:
            self.fail(ap, "rule without `to` operations (allows every port and path)")
        for op in ops:
            if op.get("ports") != [port]:
                self.fail(ap, f"operation ports {op.get('ports')} should be [{port!r}]")
            if entry and entry["protocol"] == "grpc":
                expected = {f"/{entry['grpc_service']}/{m['name']}" for m in entry["methods"]}
                if op.get("methods") != ["POST"]:
                    self.fail(ap, "gRPC operations must be methods: [POST]")
                paths = set(op.get("paths", []))
                if not paths or not paths <= expected:
                    self.fail(ap, f"paths {sorted(paths)} are not the service's gRPC methods {sorted(expected)}")

    def check_network_policies(self) -> None:
        policies = list(self.m.of_kind("NetworkPolicy"))
        if not policies:
            return
        shop_ns = self.shop_namespace()
        if not any(p["spec"].get("podSelector") == {} and not p["spec"].get("ingress")
                   and not p["spec"].get("egress") and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                   for p in policies if p["metadata"]["namespace"] == shop_ns):
            self.fail(None, f"NetworkPolicies are rendered but there is no default deny in {shop_ns}")
        seen: set[tuple[str, str]] = set()
        for p in policies:
            target = self.workload_of_pod_labels(p["metadata"]["namespace"],
                                                 p["spec"]["podSelector"].get("matchLabels", {}))
            if target is None:
                continue
            for rule in p["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    if "namespaceSelector" in peer:
                        continue  # the ingress gateway / monitoring namespaces
                    caller = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                    if caller is None:
                        self.fail(p, "ingress peer without an app.kubernetes.io/name pod selector")
                    else:
                        seen.add((caller, target["metadata"]["name"]))
        expected = self.catalog.edges()
        for a, b in sorted(expected - seen):
            self.fail(None, f"NetworkPolicy misses call graph edge {a} -> {b}")
        for a, b in sorted(seen - expected):
            self.fail(None, f"NetworkPolicy allows {a} -> {b}, which is not in the call graph")

    # -- traffic --------------------------------------------------------------------
    def check_traffic(self) -> None:
        for dr in self.m.of_kind("DestinationRule"):
            if not self.service_by_host(dr["spec"]["host"], dr["metadata"]["namespace"]):
                self.fail(dr, f"host {dr['spec']['host']} is not a rendered Service")
        for vs in self.m.of_kind("VirtualService"):
            ns = vs["metadata"]["namespace"]
            if not vs["spec"].get("gateways"):
                for host in vs["spec"].get("hosts", []):
                    if not self.service_by_host(host, ns):
                        self.fail(vs, f"host {host} is not a rendered Service")
            for route in vs["spec"].get("http", []):
                self.check_route(vs, ns, route)

    def check_route(self, vs: dict[str, Any], ns: str, route: dict[str, Any]) -> None:
        name = route.get("name", "?")
        entry = None
        for dest in route.get("route", []):
            d = dest["destination"]
            svc = self.service_by_host(d["host"], ns)
            if svc is None:
                self.fail(vs, f"route {name}: destination {d['host']} is not a rendered Service")
                continue
            entry = self.catalog.by_name(svc["metadata"]["name"])
            ports = {p["port"] for p in svc["spec"]["ports"]}
            if "port" in d and d["port"]["number"] not in ports:
                self.fail(vs, f"route {name}: port {d['port']['number']} is not a port of {d['host']}")
        if "timeout" not in route:
            self.fail(vs, f"route {name}: no timeout")
        retries = route.get("retries")
        if retries is None:
            self.fail(vs, f"route {name}: no explicit retries (Istio's default retries every method)")
            return
        attempts = int(retries.get("attempts", 0))
        if attempts == 0:
            return
        matches = route.get("match", [])
        exact = [m.get("uri", {}).get("exact") for m in matches]
        idempotent = {f"/{entry['grpc_service']}/{m['name']}" for m in entry["methods"] if m["idempotent"]} \
            if entry and entry["protocol"] == "grpc" else set()
        if not matches or None in exact or not set(exact) <= idempotent:
            self.fail(vs, f"route {name}: retries on {exact or 'every method'}, "
                          f"but only the idempotent methods {sorted(idempotent)} may be retried")
        try:
            budget = (attempts + 1) * parse_duration(retries["perTryTimeout"])
            timeout = parse_duration(route["timeout"])
        except (KeyError, ValueError) as exc:
            self.fail(vs, f"route {name}: unreadable retry budget ({exc})")
            return
        if budget > timeout + 1e-9:
            self.fail(vs, f"route {name}: {attempts + 1} tries x {retries['perTryTimeout']} = {budget:g}s "
                          f"exceeds the timeout {route['timeout']}")

    def check_scaling(self) -> None:
        names = {(w["metadata"]["namespace"], w["metadata"]["name"]) for w in self.workloads}
        for hpa in self.m.of_kind("HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]
            if (hpa["metadata"]["namespace"], target["name"]) not in names:
                self.fail(hpa, f"scales {target['kind']} {target['name']}, which is not rendered")
        for pdb in self.m.of_kind("PodDisruptionBudget"):
            if not self.workload_of_pod_labels(pdb["metadata"]["namespace"],
                                               pdb["spec"]["selector"].get("matchLabels", {})):
                self.fail(pdb, "selects no rendered workload")

    # -- PromQL ---------------------------------------------------------------------
    def check_promql(self) -> None:
        recorded = {r["record"] for g in rule_groups(self.m) for r in g["rules"] if "record" in r}
        allowed = ALLOWED_METRICS | recorded
        for where, expr in promql_expressions(self.m):
            unknown = promql_metric_names(expr) - allowed
            if unknown:
                self.fail(None, f"{where}: PromQL uses metrics nobody exports: {sorted(unknown)}")


def rule_groups(manifests: Manifests) -> list[dict[str, Any]]:
    return [g for r in manifests.of_kind("PrometheusRule") for g in r["spec"]["groups"]]


def dashboards(manifests: Manifests) -> Iterator[tuple[str, dict[str, Any]]]:
    for cm in manifests.of_kind("ConfigMap"):
        for key, text in (cm.get("data") or {}).items():
            if key.endswith(".json"):
                yield f"{ref(cm)}/{key}", json.loads(text)


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]


def promql_expressions(manifests: Manifests) -> Iterator[tuple[str, str]]:
    for group in rule_groups(manifests):
        for rule in group["rules"]:
            yield f"rule {rule.get('record') or rule.get('alert')}", rule["expr"]
    for where, dash in dashboards(manifests):
        for what, expr in dashboard_expressions(dash):
            yield f"{where} {what}", expr


def grafana_to_promql(expr: str, variables: dict[str, str] | None = None) -> str:
    """Substitute Grafana's variables so the expression is plain PromQL."""
    values = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h", "app": "frontend"}
    values.update(variables or {})
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (a lexer-level approximation).

    Strings, label matchers, grouping clauses and range/offset brackets are removed;
    what remains of identifiers that are not functions or keywords are metric names.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', grafana_to_promql(expr))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(0), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def lint(manifests: Manifests, catalog: Catalog) -> list[str]:
    return Linter(manifests, catalog).run()


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("render_dir", type=Path, help="boutique_render_dir of a render-mode run")
    parser.add_argument("--catalog", type=Path, default=REPO / "group_vars/all/catalog.yml")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not args.render_dir.is_dir():
        parser.error(f"render directory {args.render_dir} does not exist (run the playbook in render mode first)")
    manifests = Manifests.load(args.render_dir)
    if not manifests.objects:
        parser.error(f"no manifests under {args.render_dir}")
    findings = lint(manifests, Catalog.load(args.catalog))
    for finding in findings:
        print(finding)
    print(f"{len(manifests.objects)} objects, {len(manifests.releases)} Helm releases, {len(findings)} findings",
          file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
