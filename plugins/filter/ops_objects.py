"""Filters of the ops role: pure transformations of one service's Kubernetes/Istio objects.

Each takes the list of a service's objects (as rendered by the microservice role or
read from the cluster) and returns the list as it should be after the operation,
leaving everything else untouched. The playbooks then write (render) or apply them.

  ops_canary(objects, service, action, canary_weight, image, replicas, stable_label, canary_label)
  ops_fault(objects, service, state, fault)
  ops_restart(objects, service, stamp)
  ops_scale(objects, service, replicas)
"""

from __future__ import annotations

import copy
from typing import Any

VERSION_LABEL = "version"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class OpsObjectError(ValueError):
    pass


def _find(objects: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objects if o.get("kind") == kind and o.get("metadata", {}).get("name") == name), None)


def _need(objects: list[dict], kind: str, name: str) -> dict:
    obj = _find(objects, kind, name)
    if obj is None:
        raise OpsObjectError(f"{kind} {name} not found among the service's objects")
    return obj


def _replace(objects: list[dict], new: dict) -> list[dict]:
    key = (new["kind"], new["metadata"]["name"])
    return [new if (o.get("kind"), o.get("metadata", {}).get("name")) == key else o for o in objects]


def _template_labels(deploy: dict) -> dict:
    return deploy["spec"]["template"]["metadata"].setdefault("labels", {})


def _weighted_route(route: list[dict], stable_weight: int, canary_weight: int) -> list[dict]:
    base = dict(route[0]["destination"])
    base.pop("subset", None)
    return [
        {"destination": {**base, "subset": "stable"}, "weight": stable_weight},
        {"destination": {**base, "subset": "canary"}, "weight": canary_weight},
    ]


def ops_canary(objects: list[dict], service: str, action: str, canary_weight: int = 0, image: str = "",
               replicas: int = 1) -> list[dict]:
    """shift: canary Deployment <service>-canary (version=canary) beside the stable one
    (version=stable), DestinationRule subsets stable/canary, every VirtualService route
    weighted 100-w / w. promote: stable gets the canary's image, 100/0, canary removed.
    abort: 100/0, canary removed, stable untouched."""
    objects = copy.deepcopy(list(objects))
    if action not in ("shift", "promote", "abort"):
        raise OpsObjectError(f"canary action {action!r} must be shift, promote or abort")
    weight = int(canary_weight)
    if not 0 <= weight <= 100:
        raise OpsObjectError(f"canary weight {weight} must be within 0..100")
    canary_name = f"{service}-canary"
    stable = _need(objects, "Deployment", service)
    canary = _find(objects, "Deployment", canary_name)

    # The stable pods carry version=stable so the stable subset can select them.
    _template_labels(stable)[VERSION_LABEL] = "stable"

    if action == "promote":
        if canary is None:
            raise OpsObjectError(f"{service} has no canary ({canary_name}) to promote")
        new_image = canary["spec"]["template"]["spec"]["containers"][0]["image"]
        stable["spec"]["template"]["spec"]["containers"][0]["image"] = new_image
        stable["metadata"].setdefault("annotations", {})["boutique.dev/promoted-image"] = new_image
    if action in ("promote", "abort"):
        weight = 0
        objects = [o for o in objects if o is not canary]
    else:
        if canary is None and not image:
            raise OpsObjectError(f"{service} has no canary yet: give the canary image")
        canary = copy.deepcopy(stable) if canary is None else canary
        meta = canary["metadata"]
        meta["name"] = canary_name
        meta.setdefault("labels", {})[VERSION_LABEL] = "canary"
        annotations = meta.setdefault("annotations", {})
        annotations.pop("boutique.dev/promoted-image", None)
        annotations["boutique.dev/canary-of"] = service
        canary["spec"]["replicas"] = int(replicas)
        canary["spec"]["selector"]["matchLabels"] = {**stable["spec"]["selector"]["matchLabels"],
                                                     VERSION_LABEL: "canary"}
        _template_labels(canary)[VERSION_LABEL] = "canary"
        if image:
            canary["spec"]["template"]["spec"]["containers"][0]["image"] = image
        if _find(objects, "Deployment", canary_name) is None:
            index = objects.index(_find(objects, "Deployment", service)) + 1
            objects.insert(index, canary)
        else:
            objects = _replace(objects, canary)

    dr = _need(objects, "DestinationRule", service)
    dr["spec"]["subsets"] = [
        {"name": "stable", "labels": {VERSION_LABEL: "stable"}},
        {"name": "canary", "labels": {VERSION_LABEL: "canary"}},
    ]
    vs = _need(objects, "VirtualService", service)
    for http in vs["spec"].get("http", []):
        http["route"] = _weighted_route(http["route"], 100 - weight, weight)
    return objects


def ops_fault(objects: list[dict], service: str, state: str, fault: dict | None = None) -> list[dict]:
    """present: put `fault` (an Istio HTTPFaultInjection) on every route of the service's
    VirtualService; absent: remove it again (the routes become exactly what they were)."""
    objects = copy.deepcopy(list(objects))
    vs = _need(objects, "VirtualService", service)
    for http in vs["spec"].get("http", []):
        if state == "present":
            http["fault"] = copy.deepcopy(fault)
        elif state == "absent":
            http.pop("fault", None)
        else:
            raise OpsObjectError(f"fault state {state!r} must be present or absent")
    return objects


def ops_restart(objects: list[dict], service: str, stamp: str) -> list[dict]:
    """The pod template annotation kubectl rollout restart sets (stable and canary)."""
    objects = copy.deepcopy(list(objects))
    _need(objects, "Deployment", service)
    for obj in objects:
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] in (service, f"{service}-canary"):
            obj["spec"]["template"]["metadata"].setdefault("annotations", {})[RESTARTED_AT] = stamp
    return objects


def ops_scale(objects: list[dict], service: str, replicas: int) -> list[dict]:
    """Scale through the HPA's minReplicas when there is one (the HPA owns the count;
    maxReplicas is raised if needed), else the Deployment's spec.replicas."""
    objects = copy.deepcopy(list(objects))
    replicas = int(replicas)
    hpa = _find(objects, "HorizontalPodAutoscaler", service)
    if hpa is not None:
        if replicas < 1:
            raise OpsObjectError(f"{service}: an HorizontalPodAutoscaler cannot scale below 1 replica")
        hpa["spec"]["minReplicas"] = replicas
        hpa["spec"]["maxReplicas"] = max(int(hpa["spec"]["maxReplicas"]), replicas)
    else:
        _need(objects, "Deployment", service)["spec"]["replicas"] = replicas
    return objects


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ops_canary": ops_canary, "ops_fault": ops_fault, "ops_restart": ops_restart, "ops_scale": ops_scale}
