"""Filters over the service catalog for every role and playbook.

They use the Python loader's own validation and duration grammar (services/boutique/service_catalog.py),
so the roles, the manifest lint and the services agree on what a valid catalog is:

  boutique_services | boutique_deployed(boutique_service_overrides)   deployed entries, overrides applied
  boutique_services | boutique_catalog_checked(boutique_redis)        the list, or a clear error
  '500ms' | boutique_seconds                                          0.5 (a bad one fails)
  'soon' | boutique_seconds(invalid=0)                                0
  boutique_services | boutique_callers('cartservice')                 names of the services that call it
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

_SERVICES = Path(__file__).resolve().parents[2] / "services"
if _SERVICES.is_dir() and str(_SERVICES) not in sys.path:
    sys.path.insert(0, str(_SERVICES))

from boutique import service_catalog as _catalog  # noqa: E402  (found through the checkout above)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A new dict: base with extra merged in, recursively (the inputs are left as they are).
    No deepcopy: Ansible's lazily templated containers are slow to deep-copy."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_overrides(services: list[dict[str, Any]], overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each entry merged (recursively) with overrides['*'] and then overrides[<its name>]."""
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise AnsibleFilterError(f"boutique_service_overrides must be a mapping of service name -> settings, "
                                 f"not {type(overrides).__name__}")
    names = {s.get("name") for s in services}
    unknown = sorted(set(overrides) - names - {"*"})
    if unknown:
        raise AnsibleFilterError(f"boutique_service_overrides names services that are not in the catalog: "
                                 f"{', '.join(unknown)} (known: {', '.join(sorted(n for n in names if n))})")
    return [_merge(_merge(s, overrides.get("*", {})), overrides.get(s.get("name"), {})) for s in services]


def deployed(services: list[dict[str, Any]], overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The entries that are deployed (deploy missing or true), in catalog order, overrides applied."""
    return [s for s in with_overrides(services, overrides) if s.get("deploy", True) is not False]


def checked(services: list[dict[str, Any]], redis: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        _catalog.from_data({"boutique_services": services, "boutique_redis": redis}, Path("boutique_services"))
    except _catalog.CatalogError as exc:
        raise AnsibleFilterError(f"the service catalog is invalid: {exc}") from None
    return services


def seconds(text: str, where: str = "duration", invalid: float | None = None) -> float:
    """The catalog's duration grammar (ms|s|m|h) in seconds; a bad one fails, or gives `invalid`
    when that is set (for an assert that names the variable itself)."""
    try:
        return _catalog.parse_duration(text, where)
    except _catalog.CatalogError as exc:
        if invalid is not None:
            return invalid
        raise AnsibleFilterError(str(exc)) from None


def callers(services: list[dict[str, Any]], name: str) -> list[str]:
    return sorted(s["name"] for s in services if name in (s.get("callees") or []))


def crds_of_kinds(documents_and_entry: tuple[list[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """From one CRD bundle (its documents, and its boutique_k8s_crd_files entry {path, kinds}),
    the CustomResourceDefinitions of the kinds asked for (all when `kinds` is empty)."""
    documents, entry = documents_and_entry
    kinds = set(entry.get("kinds") or [])
    crds = [d for d in documents if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
    chosen = [c for c in crds if not kinds or c.get("spec", {}).get("names", {}).get("kind") in kinds]
    missing = kinds - {c["spec"]["names"]["kind"] for c in chosen}
    if missing:
        raise AnsibleFilterError(f"{entry.get('path')} has no CustomResourceDefinition for "
                                 f"{', '.join(sorted(missing))}")
    return chosen


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"boutique_deployed": deployed, "boutique_with_overrides": with_overrides,
                "boutique_catalog_checked": checked, "boutique_seconds": seconds, "boutique_callers": callers,
                "boutique_crds_of_kinds": crds_of_kinds}
