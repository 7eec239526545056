"""Fast unit tests of the ops building blocks: the ops role's object filters and the
cartbackup / grpcprobe command lines (real Redis / gRPC runs are in the other files)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys

import pytest
from ops_playbook_lib import ROOT

from boutique.dev.inprocess import BackgroundService
from boutique.tools import cartbackup, grpcprobe

_spec = importlib.util.spec_from_file_location("ops_objects", ROOT / "plugins/filter/ops_objects.py")
ops_objects = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ops_objects)


def _service_objects() -> list[dict]:
    labels = {"app.kubernetes.io/name": "currencyservice"}
    dest = {"host": "currencyservice.boutique.svc.cluster.local", "port": {"number": 7000}}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "currencyservice", "labels": labels},
         "spec": {"selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": dict(labels)},
                               "spec": {"containers": [{"name": "server", "image": "reg/currency:1"}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "currencyservice"},
         "spec": {"minReplicas": 2, "maxReplicas": 8}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "currencyservice"},
         "spec": {"host": dest["host"]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "currencyservice"},
         "spec": {"http": [{"name": "convert", "route": [{"destination": dest}]},
                           {"name": "default", "route": [{"destination": dest}]}]}},
    ]


def test_canary_shift_then_abort_keeps_the_stable_and_restores_100_0():
    original = _service_objects()
    shifted = ops_objects.ops_canary(original, "currencyservice", "shift", 30, "reg/currency:2", 2)
    assert original == _service_objects(), "the filter must not mutate its input"
    canary = next(o for o in shifted if o["metadata"]["name"] == "currencyservice-canary")
    assert canary["spec"]["replicas"] == 2
    assert canary["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "currencyservice",
                                                         "version": "canary"}
    assert [o["kind"] for o in shifted][:2] == ["Deployment", "Deployment"]
    vs = next(o for o in shifted if o["kind"] == "VirtualService")
    assert all([r["weight"] for r in h["route"]] == [70, 30] for h in vs["spec"]["http"])
    again = ops_objects.ops_canary(shifted, "currencyservice", "shift", 30, "", 2)
    assert again == shifted, "the same step (image kept) is a no-op"
    aborted = ops_objects.ops_canary(shifted, "currencyservice", "abort")
    assert [o["metadata"]["name"] for o in aborted if o["kind"] == "Deployment"] == ["currencyservice"]
    vs = next(o for o in aborted if o["kind"] == "VirtualService")
    assert all([(r["destination"]["subset"], r["weight"]) for r in h["route"]] == [("stable", 100), ("canary", 0)]
               for h in vs["spec"]["http"])


def test_canary_refuses_what_cannot_work():
    with pytest.raises(ops_objects.OpsObjectError, match="no canary"):
        ops_objects.ops_canary(_service_objects(), "currencyservice", "promote")
    with pytest.raises(ops_objects.OpsObjectError, match="give the canary image"):
        ops_objects.ops_canary(_service_objects(), "currencyservice", "shift", 10)
    with pytest.raises(ops_objects.OpsObjectError, match=r"0\.\.100"):
        ops_objects.ops_canary(_service_objects(), "currencyservice", "shift", 101, "x:1")


def test_fault_round_trip_is_exact():
    objs = _service_objects()
    fault = {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 5.0}}}
    faulty = ops_objects.ops_fault(objs, "currencyservice", "present", fault)
    assert all(h["fault"] == fault for h in next(o for o in faulty if o["kind"] == "VirtualService")["spec"]["http"])
    assert ops_objects.ops_fault(faulty, "currencyservice", "absent") == objs


def test_scale_and_restart_touch_only_their_fields():
    objs = _service_objects()
    scaled = ops_objects.ops_scale(objs, "currencyservice", 10)
    hpa = next(o for o in scaled if o["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (10, 10)
    with pytest.raises(ops_objects.OpsObjectError, match="below 1"):
        ops_objects.ops_scale(objs, "currencyservice", 0)
    restarted = ops_objects.ops_restart(objs, "currencyservice", "2026-01-01T00:00:00Z")
    expected = copy.deepcopy(objs)
    expected[0]["spec"]["template"]["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    assert restarted == expected


def test_cartbackup_rejects_bad_input_with_a_message(tmp_path, capsys):
    assert cartbackup.main(["dump", "--redis", "nohostport", "--file", str(tmp_path / "x.json")]) == 2
    assert "must be host:port" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": cartbackup.FORMAT, "carts": [{"key": "u1", "fields": {"data": "%%%"}}]}))
    assert cartbackup.main(["restore", "--redis", "127.0.0.1:1", "--file", str(bad)]) == 2
    assert "not valid base64" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"format": cartbackup.FORMAT, "carts": []}))
    assert cartbackup.main(["restore", "--redis", "127.0.0.1:1", "--file", str(good), "--timeout", "0.5"]) == 1
    assert "Redis at 127.0.0.1:1" in capsys.readouterr().err


def test_grpcprobe_reports_plaintext_success_and_tls_refusal_as_results():
    from boutique import currency

    with BackgroundService(currency.DEFINITION) as svc:
        proc = subprocess.run([sys.executable, "-m", "boutique.tools.grpcprobe", "--target", f"cur={svc.address}",
                               "--modes", "plaintext"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)["results"]
    assert (result["target"], result["mode"], result["ok"], result["status"]) == ("cur", "plaintext", True, "SERVING")
    assert grpcprobe.main(["--target", "x=127.0.0.1:1", "--modes", "mtls"]) == 2  # no --ca
