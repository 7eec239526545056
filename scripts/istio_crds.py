"""Istio CRD bundle: locate (or fetch) it and validate Istio objects against it.

The bundle is Istio's crd-all.gen.yaml for the pinned Istio version. Where it comes from:

1. the file named by $BOUTIQUE_ISTIO_CRDS (CI sets it to ../shared/istio/crds-1.30.3.yaml);
2. otherwise the pinned download (boutique_istio_crds_url in group_vars/all/kubernetes.yml),
   checked against boutique_istio_crds_sha256 and cached under .work/istio/.

Validation is strict: every object schema that lists its properties rejects unknown
fields (as the API server's structural-schema pruning + `kubectl --validate=strict` does).
CEL rules (x-kubernetes-validations) are not evaluated.

Usage: python scripts/istio_crds.py            # print the bundle path (downloading it if needed)
       python scripts/istio_crds.py FILE...    # validate the Istio objects in rendered YAML files
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
ENV_VAR = "BOUTIQUE_ISTIO_CRDS"
ISTIO_GROUPS = ("istio.io",)


class CrdBundleError(RuntimeError):
    """The CRD bundle is missing, unreadable or does not match its pinned checksum."""


def pinned_source() -> tuple[str, str]:
    settings = yaml.safe_load((REPO / "group_vars/all/kubernetes.yml").read_text())
    return settings["boutique_istio_crds_url"], settings["boutique_istio_crds_sha256"]


def bundle_path(download: bool = True) -> Path:
    """The CRD bundle: $BOUTIQUE_ISTIO_CRDS, or the pinned download (cached)."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise CrdBundleError(f"{ENV_VAR}={env} does not name a file (the Istio CRD bundle)")
        return path
    url, sha256 = pinned_source()
    cached = REPO / ".work" / "istio" / Path(url).name
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == sha256:
        return cached
    if not download:
        raise CrdBundleError(f"{ENV_VAR} is unset and {cached} is not downloaded yet")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise CrdBundleError(f"cannot download the Istio CRD bundle from {url}: {exc}; "
                             f"set {ENV_VAR} to a local copy") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise CrdBundleError(f"{url} has sha256 {digest}, expected {sha256} (boutique_istio_crds_sha256)")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)
    return cached


def _forbid_unknown_fields(schema: Any) -> Any:
    """Copy of an openAPIV3Schema where object schemas with properties reject extras."""
    if isinstance(schema, list):
        return [_forbid_unknown_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _forbid_unknown_fields(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def load_schemas(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema of the whole object."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise CrdBundleError(f"cannot read the Istio CRD bundle {path}: {exc}") from exc
    for crd in docs:
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
            schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = _forbid_unknown_fields(schema)
    if not schemas:
        raise CrdBundleError(f"{path} contains no CustomResourceDefinitions")
    return schemas


def is_istio(obj: dict[str, Any]) -> bool:
    return obj.get("apiVersion", "").split("/")[0].endswith(ISTIO_GROUPS)


def validate(obj: dict[str, Any], path: Path) -> list[str]:
    """Schema errors of one Istio object ([] when valid)."""
    schema = load_schemas(path).get((obj.get("apiVersion"), obj.get("kind")))
    name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    if schema is None:
        return [f"{name}: {obj.get('apiVersion')} {obj.get('kind')} is not served by the Istio CRDs in {path}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{name}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


def main(argv: list[str]) -> int:
    try:
        path = bundle_path()
        if not argv:
            print(path)
            return 0
        errors = []
        for name in argv:
            for obj in yaml.safe_load_all(Path(name).read_text()):
                if obj and is_istio(obj):
                    errors += [f"{name}: {e}" for e in validate(obj, path)]
    except CrdBundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(errors) or "all Istio objects are valid")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
