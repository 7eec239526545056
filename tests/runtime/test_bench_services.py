"""The service benchmark's parts, without timing anything: ghz's report parsing and request files,
the baseline server, and the ours/baseline comparison with its targets. The ghz tests drive the
real ghz (tools/go/ghz, built by `make go-tools`) against real servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]

from boutique import currency
from boutique.bench import baseline
from boutique.bench import ghz as ghz_mod
from boutique.bench import services as bench
from boutique.dev.inprocess import BackgroundService
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

# The shape ghz v0.121.0 writes with -O json (trimmed: no options, histogram).
GHZ_JSON = {
    "date": "2026-12-01T22:09:48Z", "endReason": "normal", "count": 5, "total": 50_000_000,
    "average": 2_500_000, "fastest": 1_000_000, "slowest": 9_000_000, "rps": 100.0,
    "errorDistribution": {"rpc error: code = Unavailable desc = down": 2},
    "statusCodeDistribution": {"OK": 3, "Unavailable": 2},
    "latencyDistribution": [{"percentage": 50, "latency": 2_000_000}, {"percentage": 99, "latency": 9_000_000}],
    "details": [
        {"timestamp": "t", "latency": 3_000_000, "error": "", "status": "OK"},
        {"timestamp": "t", "latency": 1_000_000, "error": "", "status": "OK"},
        {"timestamp": "t", "latency": 9_000_000, "error": "", "status": "OK"},
        {"timestamp": "t", "latency": 500_000, "error": "rpc error: code = Unavailable desc = down",
         "status": "Unavailable"},
        {"timestamp": "t", "latency": 400_000, "error": "rpc error: code = Unavailable desc = down",
         "status": "Unavailable"},
    ],
}


def test_parse_report_converts_units_and_status_names() -> None:
    r = ghz_mod.parse_report(json.dumps(GHZ_JSON))
    assert (r.count, r.ok, r.seconds) == (5, 3, 0.05)
    assert (r.p50_ms, r.p99_ms, r.mean_ms) == (2.0, 9.0, 2.5)
    assert r.errors == {"UNAVAILABLE": 2}  # grpc-go's names -> grpc.StatusCode names
    assert r.first_error == "rpc error: code = Unavailable desc = down"
    assert r.latencies_ms == [1.0, 3.0, 9.0]  # successful calls only, sorted
    assert r.rps == 60.0  # successful calls per second


def test_parse_report_of_a_run_where_every_call_failed() -> None:
    raw = {**GHZ_JSON, "statusCodeDistribution": {"Unimplemented": 5}, "latencyDistribution": None,
           "details": []}
    r = ghz_mod.parse_report(json.dumps(raw))
    assert r.ok == 0 and r.errors == {"UNIMPLEMENTED": 5} and r.rps == 0.0
    assert r.p50_ms != r.p50_ms  # NaN: no latency to speak of


@pytest.mark.parametrize("text", ["", "Error: connection refused", "[1, 2]", '{"count": 3}'])
def test_parse_report_refuses_what_is_not_a_report(text: str) -> None:
    with pytest.raises(ghz_mod.GhzError, match="ghz"):
        ghz_mod.parse_report(text)


def test_delimited_files_hold_each_message_after_its_varint_length() -> None:
    messages = [pb.GetCartRequest(user_id=f"user-{i}" * (i * 20)).SerializeToString() for i in range(4)]
    data = ghz_mod.delimited(messages)
    out, pos = [], 0
    while pos < len(data):
        size, pos = _DecodeVarint(data, pos)
        out.append(data[pos:pos + size])
        pos += size
    assert out == messages
    assert len(messages[3]) > 127  # a length that needs two varint bytes


def test_argv_bounds_a_run_by_count_and_time() -> None:
    load = ghz_mod.Load(target="127.0.0.1:1", call="hipstershop.CurrencyService/Convert", concurrency=8,
                        connections=2, payload_file=Path("/tmp/p.bin"), total=100, duration=5.0)
    argv = ghz_mod.argv(Path("/bin/ghz"), Path("/tmp/d.protoset"), load)
    assert argv[-1] == "127.0.0.1:1" and "-z" not in argv
    assert argv[argv.index("-n") + 1] == "100" and argv[argv.index("-x") + 1] == "5.0s"
    timed = ghz_mod.argv(Path("/bin/ghz"), Path("/tmp/d.protoset"),
                         ghz_mod.Load(**{**load.__dict__, "total": 0}))
    assert timed[timed.index("-z") + 1] == "5.0s" and "-n" not in timed


def test_baseline_server_answers_constants_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "boutique.bench.baseline"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        with grpc.insecure_channel(line.split()[-1]) as ch:
            money = rpc.CurrencyServiceStub(ch).Convert(pb.CurrencyConversionRequest(to_code="JPY"), timeout=10)
            product = rpc.ProductCatalogServiceStub(ch).GetProduct(pb.GetProductRequest(id="anything"), timeout=10)
            with pytest.raises(grpc.RpcError) as err:
                rpc.CartServiceStub(ch).GetCart(pb.GetCartRequest(user_id="u"), timeout=10)
        assert money == baseline.CONSTANT_MONEY  # whatever was asked
        assert (product.id, product.name) == ("OLJCESPC7Z", "Sunglasses")  # the catalog's first product
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED  # nothing else is served
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def ghz_binary() -> Path:
    binary, why = ghz_mod.find()
    if binary is None:
        pytest.fail(f"ghz cannot be built here ({why}); `make go-tools` builds it")
    return binary


def test_ghz_round_robins_a_delimited_file_and_reports_statuses(ghz_binary: Path, tmp_path: Path) -> None:
    good = pb.CurrencyConversionRequest(**{"from": pb.Money(currency_code="USD", units=19, nanos=990000000)},
                                        to_code="EUR")
    bad = pb.CurrencyConversionRequest(**{"from": pb.Money(currency_code="USD", units=1)}, to_code="XXX")
    payload = tmp_path / "requests.bin"
    payload.write_bytes(ghz_mod.delimited([good.SerializeToString(), bad.SerializeToString()]))
    protoset = ghz_mod.write_protoset(tmp_path / "demo.protoset")
    with BackgroundService(currency.DEFINITION) as svc:
        report, client_cpu = ghz_mod.run(ghz_binary, protoset, ghz_mod.Load(
            target=svc.address, call="hipstershop.CurrencyService/Convert", concurrency=4, connections=2,
            payload_file=payload, total=100, timeout=10.0))
    assert report.count == 100
    assert report.ok == 50 and report.errors == {"INVALID_ARGUMENT": 50}  # message k % 2: half are bad
    assert "unsupported currency code 'XXX'" in report.first_error
    assert len(report.latencies_ms) == 50 and report.p50_ms <= report.p99_ms
    assert client_cpu > 0  # the ghz process's own CPU time, from wait4


def test_ghz_driver_measures_the_baseline_and_its_cpu(ghz_binary: Path, tmp_path: Path) -> None:
    server = bench.Baseline()
    try:
        driver = bench.GhzDriver(ghz_binary, tmp_path, warmup=0.2, duration=0.5, max_order_rate=10)
        m = driver.unary(server.address, "/hipstershop.CurrencyService/Convert",
                         pb.CurrencyConversionRequest(to_code="EUR").SerializeToString(), 4, 2,
                         {"baseline": [server.proc.pid]})
    finally:
        server.stop()
    assert m.calls > 0 and not m.errors
    assert m.server_cpu_s["baseline"] > 0  # the server's CPU over the measured run
    r = bench._result(m, rpc="Convert", service="baseline", role="baseline", workers=1, concurrency=4,
                      client="ghz")
    assert r.server_cpu_us_per_call > 0 and r.rps > 0


def _r(rpc: str, role: str, cpu: float, rps: float, workers: int = 1, **kw: object) -> bench.Result:
    fields = {"rpc": rpc, "service": "s", "role": role, "workers": workers, "concurrency": 16, "client": "ghz",
              "round": 1, "calls": 100, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.0, "errors": {},
              "server_cpu_percent": 50.0, "server_cpu_us_per_call": cpu, "client_cpu_us_per_call": 10.0,
              "duration_s": 5.0, **kw}
    return bench.Result(**fields)  # type: ignore[arg-type]


def test_comparison_takes_medians_and_targets_say_met_or_not() -> None:
    results = [_r("Convert", "ours", c, 5000) for c in (110, 150, 112)]
    results += [_r("Convert", "baseline", c, 6000) for c in (100, 100, 200)]
    results += [_r("GetProduct", "ours", 130, 4000), _r("GetProduct", "baseline", 100, 5000)]
    results += [_r("ListRecommendations", "ours", 150, 3100), _r("ListRecommendations", "ours", 150, 900, 2)]
    results += [_r("PlaceOrder", "ours", 4800, 200, p99_ms=35.0, concurrency=8,
                   cpu_us_per_call_by_service={"checkout": 2000})]
    comparisons = bench.compare(results)
    convert = next(c for c in comparisons if c["rpc"] == "Convert")
    assert convert["cpu_ratio"] == 1.12 and convert["rps_ratio"] == round(5000 / 6000, 3)
    checks = {c["what"].split(":")[0].split(" (")[0]: c["met"] for c in bench.check_targets(results, comparisons)}
    assert checks == {"Convert": True, "GetProduct": False, "ListRecommendations": True,
                      "PlaceOrder CPU per order, all services": True,
                      "PlaceOrder p99 at 8 concurrent orders": True}
    errors = [_r("PlaceOrder", "ours", 4800, 200, p99_ms=35.0, errors={"INTERNAL": 1})]
    assert not any(c["met"] for c in bench.check_targets(errors, []))  # errors fail a target
