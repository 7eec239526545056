"""The field's own checkers on the rendered manifests, beside our lint (scripts/k8s_lint.py):

  kubeconform      strict schema validation: Kubernetes' own schemas (kubernetes-validate's copy,
                   made standalone here) and the Istio and prometheus-operator CRD schemas, unknown
                   fields forbidden
  istioctl analyze the Istio analyzers, file-only (--use-kube=false), with the mesh config istiod
                   would get (the rendered istiod release's meshConfig)
  kube-score       workload best practices
  checkov          the Kubernetes policies of Bridgecrew's checkov

Every finding is either fixed in the roles' templates or accepted in scripts/field-tools-allow.yaml,
one entry per (tool, check) with the objects it covers and the reason; an entry that matches
nothing is itself an error, so the list stays short and true.

    python scripts/field_tools.py RENDER_DIR [--tool NAME ...]

runs every tool it can find (Go tools from `boutique tools build`, checkov from its own venv, see
boutique.dev.pytools) and exits 1 on any finding the allow-list does not cover.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from istio_crds import _forbid_unknown_fields  # the same strictness as our Istio validation

REPO = Path(__file__).resolve().parent.parent
ALLOW_FILE = REPO / "scripts" / "field-tools-allow.yaml"
OBJECT_DIRS = ("microservice", "istio", "observability")  # helm/ holds release records, not objects
TOOLS = ("kubeconform", "istioctl", "kube-score", "checkov")
SHARED = REPO.parent / "shared"


@dataclass(frozen=True)
class Finding:
    tool: str
    check: str
    object: str  # Kind/namespace/name
    message: str

    def __str__(self) -> str:
        return f"{self.tool} {self.check} {self.object}: {self.message}"


class ToolError(RuntimeError):
    """A tool could not run (not its findings: those are Findings)."""


# --------------------------------------------------------------------------- manifests
def manifest_files(render_dir: Path) -> list[Path]:
    files = sorted(p for d in OBJECT_DIRS for p in (render_dir / d).glob("*.yaml"))
    if not files:
        raise ToolError(f"no rendered objects under {render_dir}/{{{','.join(OBJECT_DIRS)}}}")
    return files


def objects(files: Iterable[Path]) -> list[dict[str, Any]]:
    return [o for f in files for o in yaml.safe_load_all(f.read_text()) if o]


def ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"


# --------------------------------------------------------------------------- schemas for kubeconform
def crd_bundles() -> list[Path]:
    """The Istio (BOUTIQUE_ISTIO_CRDS, else ../shared/istio) and prometheus-operator
    (BOUTIQUE_PROMETHEUS_OPERATOR_CRDS, else ../shared/prometheus-operator) CRD bundles."""
    istio = Path(os.environ.get("BOUTIQUE_ISTIO_CRDS") or SHARED / "istio" / "crds-1.30.3.yaml")
    prom_env = os.environ.get("BOUTIQUE_PROMETHEUS_OPERATOR_CRDS")
    prom = Path(prom_env) if prom_env else next(iter(sorted((SHARED / "prometheus-operator").glob("crds-*.yaml"))),
                                                SHARED / "prometheus-operator" / "crds.yaml")
    for path, var in ((istio, "BOUTIQUE_ISTIO_CRDS"), (prom, "BOUTIQUE_PROMETHEUS_OPERATOR_CRDS")):
        if not path.is_file():
            raise ToolError(f"CRD bundle {path} not found: set {var} to the bundle's path")
    return [istio, prom]


def _inline(schema: Any, defs: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """The schema with every `$ref` into _definitions.json replaced by its target (standalone, as
    kubeconform wants); a recursive reference becomes {} (unchecked, as in the upstream packs)."""
    if isinstance(schema, list):
        return [_inline(s, defs, stack) for s in schema]
    if not isinstance(schema, dict):
        return schema
    target = schema.get("$ref")
    if isinstance(target, str) and "#/$defs/" in target:
        name = target.rsplit("/", 1)[1]
        if name in stack:
            return {}
        resolved = _inline(defs[name], defs, (*stack, name))
        return {**resolved, **{k: _inline(v, defs, stack) for k, v in schema.items() if k != "$ref"}}
    return {k: _inline(v, defs, stack) for k, v in schema.items()}


def write_schemas(out: Path, objs: list[dict[str, Any]], k8s_version: str) -> None:
    """kubeconform schema folders for the kinds in `objs`: built-in kinds as
    <out>/v<version>-local-strict/<kind>-<group>-<version>.json, CRDs as <out>/crds/<group>/<kind>_<v>.json."""
    import kubernetes_validate

    src = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{k8s_version}-local-strict"
    if not src.is_dir():
        raise ToolError(f"kubernetes-validate has no schemas for Kubernetes {k8s_version} ({src})")
    defs = json.loads((src / "_definitions.json").read_text())["$defs"]
    builtin = out / f"v{k8s_version}-local-strict"
    builtin.mkdir(parents=True, exist_ok=True)
    for obj in objs:
        group, _, version = obj["apiVersion"].rpartition("/")
        name = f"{obj['kind'].lower()}-{group.split('.')[0] + '-' if group else ''}{version}.json"
        if (src / name).is_file() and not (builtin / name).exists():
            schema = json.loads((src / name).read_text())
            (builtin / name).write_text(json.dumps(_inline(schema, defs)))
    for bundle in crd_bundles():
        for crd in yaml.safe_load_all(bundle.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for ver in spec["versions"]:
                schema = copy.deepcopy(ver["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {}).update(
                    {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
                folder = out / "crds" / spec["group"]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{spec['names']['kind'].lower()}_{ver['name']}.json").write_text(
                    json.dumps(_forbid_unknown_fields(schema)))


# --------------------------------------------------------------------------- the tools
def _run(argv: list[str], ok_codes: tuple[int, ...] = (0, 1)) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise ToolError(f"{argv[0]} is not installed") from None
    if proc.returncode not in ok_codes:
        raise ToolError(f"{' '.join(argv[:3])} ... exited {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}")
    return proc


def run_kubeconform(binary: Path, files: list[Path], k8s_version: str) -> list[Finding]:
    objs = objects(files)
    namespaces: dict[tuple[str, str], set[str]] = {}  # kubeconform's report names no namespace
    for o in objs:
        namespaces.setdefault((o["kind"], o["metadata"]["name"]), set()).add(o["metadata"].get("namespace", ""))
    with tempfile.TemporaryDirectory(prefix="kubeconform-schemas-") as tmp:
        write_schemas(Path(tmp), objs, k8s_version)
        proc = _run([str(binary), "-strict", "-summary", "-output", "json", "-kubernetes-version", k8s_version,
                     "-schema-location", f"{tmp}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/"
                                         "{{ .ResourceKind }}{{ .KindSuffix }}.json",
                     "-schema-location", f"{tmp}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_"
                                         "{{ .ResourceAPIVersion }}.json",
                     *map(str, files)])
    report = json.loads(proc.stdout or "{}")
    findings = []
    for res in report.get("resources") or []:
        if res.get("status") in {"statusInvalid", "statusError"}:
            ns = namespaces.get((res.get("kind"), res.get("name")), set())
            obj = f"{res.get('kind')}/{','.join(sorted(ns))}/{res.get('name')}"
            findings.append(Finding("kubeconform", res["status"], obj, res.get("msg", "")))
    summary = report.get("summary", {})
    if not findings and summary.get("valid", 0) + summary.get("skipped", 0) == 0:
        raise ToolError(f"kubeconform validated nothing: {proc.stdout[-500:]}")
    return findings


def mesh_config(render_dir: Path) -> dict[str, Any]:
    """istiod's meshConfig from the rendered Helm release record."""
    for release in yaml.safe_load_all((render_dir / "helm" / "istio.yaml").read_text()):
        if release and release["spec"]["chart"] == "istiod":
            return release["spec"]["values"].get("meshConfig", {})
    raise ToolError(f"no istiod release in {render_dir}/helm/istio.yaml")


def run_istioctl(binary: Path, files: list[Path], render_dir: Path) -> list[Finding]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="meshconfig-") as mesh:
        yaml.safe_dump(mesh_config(render_dir), mesh)
        mesh.flush()
        proc = _run([str(binary), "analyze", "--use-kube=false", "--all-namespaces", "--meshConfigFile", mesh.name,
                     "--output", "json", "--output-threshold", "Info", "--failure-threshold", "Error",
                     *map(str, files)], ok_codes=(0, 1, 79))
    findings = []
    for msg in json.loads(proc.stdout or "[]"):
        kind, _, rest = msg.get("origin", "").partition(" ")
        ns, _, name = rest.rpartition("/")
        findings.append(Finding("istioctl", msg["code"], f"{kind}/{ns}/{name}", f"{msg['level']}: {msg['message']}"))
    return findings


def run_kube_score(binary: Path, files: list[Path]) -> list[Finding]:
    proc = _run([str(binary), "score", "--output-format", "json", *map(str, files)])
    findings = []
    for obj in json.loads(proc.stdout):
        meta = obj.get("object_meta", {})
        target = f"{obj['type_meta']['kind']}/{meta.get('namespace', '')}/{meta.get('name')}"
        for check in obj.get("checks", []):
            if check.get("skipped") or check["grade"] >= 10:  # 10 = all good
                continue
            comments = "; ".join(
                f"{c.get('path') + ': ' if c.get('path') else ''}{c['summary']}" for c in check.get("comments") or [])
            findings.append(Finding("kube-score", check["check"]["id"], target, comments))
    return findings


def run_checkov(binary: Path, files: list[Path]) -> list[Finding]:
    with tempfile.TemporaryDirectory(prefix="checkov-") as tmp:
        for i, f in enumerate(files):  # one folder: checkov scans a directory
            (Path(tmp) / f"{i:02d}-{f.parent.name}-{f.name}").write_text(f.read_text())
        proc = _run([str(binary), "--directory", tmp, "--framework", "kubernetes", "--output", "json", "--quiet",
                     "--compact", "--skip-download"])
    reports = json.loads(proc.stdout or "[]")
    findings = []
    for report in reports if isinstance(reports, list) else [reports]:
        if "results" not in report:
            continue
        for f in report["results"]["failed_checks"]:
            kind, ns, name = [*f["resource"].split(".", 2), "", ""][:3]
            findings.append(Finding("checkov", f["check_id"], f"{kind}/{ns}/{name}", f["check_name"]))
        if report["summary"]["passed"] == 0:
            raise ToolError("checkov passed no check at all: it did not read the manifests")
    return findings


# --------------------------------------------------------------------------- the allow-list
@dataclass(frozen=True)
class Allowed:
    tool: str
    check: str
    objects: tuple[str, ...]  # Kind/namespace/name globs
    annotation: tuple[str, str] | None  # the object must carry this annotation value
    reason: str


def load_allow_list(path: Path = ALLOW_FILE) -> list[Allowed]:
    entries = []
    for i, raw in enumerate(yaml.safe_load(path.read_text()) or []):
        where = f"{path.name} entry {i + 1}"
        missing = [k for k in ("tool", "check", "objects", "reason") if not raw.get(k)]
        if missing or raw["tool"] not in TOOLS:
            raise ToolError(f"{where}: needs tool (one of {', '.join(TOOLS)}), check, objects and reason")
        annotation = tuple(next(iter(raw["annotation"].items()))) if raw.get("annotation") else None
        entries.append(Allowed(raw["tool"], str(raw["check"]), tuple(raw["objects"]), annotation,  # type: ignore[arg-type]
                               " ".join(str(raw["reason"]).split())))
    return entries


def split(findings: list[Finding], allow: list[Allowed], objs: list[dict[str, Any]],
          ) -> tuple[list[Finding], dict[Allowed, list[Finding]]]:
    """(findings no entry covers, entry -> the findings it covers)."""
    annotations = {ref(o): o.get("metadata", {}).get("annotations") or {} for o in objs}
    covered: dict[Allowed, list[Finding]] = {a: [] for a in allow}
    open_findings = []
    for f in findings:
        entry = next((a for a in allow if a.tool == f.tool and a.check == f.check
                      and any(fnmatch.fnmatchcase(f.object, g) for g in a.objects)
                      and (a.annotation is None or annotations.get(f.object, {}).get(a.annotation[0])
                           == a.annotation[1])), None)
        if entry is None:
            open_findings.append(f)
        else:
            covered[entry].append(f)
    return open_findings, covered


def run(tool: str, binary: Path, render_dir: Path, k8s_version: str = "1.34.0") -> list[Finding]:
    files = manifest_files(render_dir)
    if tool == "kubeconform":
        return run_kubeconform(binary, files, k8s_version)
    if tool == "istioctl":
        return run_istioctl(binary, files, render_dir)
    if tool == "kube-score":
        return run_kube_score(binary, files)
    if tool == "checkov":
        return run_checkov(binary, files)
    raise ToolError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")


def find_binary(tool: str) -> Path:
    sys.path.insert(0, str(REPO / "services"))
    from boutique.dev import gotools, pytools

    if tool == "checkov":
        return pytools.binary("checkov", log=lambda m: print(m, file=sys.stderr))
    return gotools.binary(tool, log=lambda m: print(m, file=sys.stderr))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("render_dir", type=Path)
    parser.add_argument("--tool", action="append", choices=TOOLS, help="run only this tool (repeatable)")
    args = parser.parse_args(argv)
    try:
        allow = load_allow_list()
        objs = objects(manifest_files(args.render_dir))
        failed = False
        for tool in args.tool or TOOLS:
            findings = run(tool, find_binary(tool), args.render_dir)
            open_findings, covered = split(findings, [a for a in allow if a.tool == tool], objs)
            accepted = sum(len(v) for v in covered.values())
            print(f"{tool}: {len(open_findings)} finding(s), {accepted} accepted by {ALLOW_FILE.name}")
            for f in open_findings:
                print(f"  {f}")
            failed = failed or bool(open_findings)
    except Exception as exc:  # a tool that cannot run: say which and why, no traceback
        if not isinstance(exc, (ToolError, OSError, RuntimeError)):
            raise
        print(f"field_tools: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
