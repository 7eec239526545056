"""The service image (Dockerfile): built on the debootstrap base, run the way
Kubernetes runs it (uid 1000, read-only root filesystem, no capabilities,
no privilege escalation, /tmp as the only writable place), it serves a real
gRPC service over a published loopback port."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from image_lib import NETWORK, ROOT, build_args, docker, free_port

from boutique import currency
from boutique import service_catalog as catalog_mod
from boutique.proto import demo_pb2 as pb
from boutique.proto import demo_pb2_grpc as rpc

# The first test waits for debootstrap (base image) and the first build.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

SERVICE = "currencyservice"
IMAGE = f"boutique-test/{SERVICE}:pytest"
HARDENED = ["--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    started = time.monotonic()
    docker("build", "--quiet", *build_args(SERVICE=SERVICE, VCS_REF="pytest"), "-t", IMAGE, str(ROOT))
    print(f"built {IMAGE} on {base_image} in {time.monotonic() - started:.1f}s")
    return IMAGE


def wait_serving(address: str, container: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            time.sleep(0.3)
    logs = docker("logs", "--tail", "40", container, check=False)
    pytest.fail(f"{container} never reported SERVING at {address} (last: {last}); logs:\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="module")
def running(image: str) -> Iterator[str]:
    """The image running hardened; yields the host address of its gRPC port."""
    port = free_port()
    name = f"boutique-pytest-{SERVICE}-{port}"
    if NETWORK == "host":
        net = ["--network", "host", "-e", f"PORT={port}", "-e", "METRICS_PORT=0"]
    else:
        net = ["-p", f"127.0.0.1:{port}:{catalog_mod.default().get(SERVICE).port}"]
    docker("run", "-d", "--name", name, *HARDENED, *net, image)
    try:
        wait_serving(f"127.0.0.1:{port}", name)
        yield f"127.0.0.1:{port}"
    finally:
        docker("rm", "-f", name, check=False)


def test_image_reports_serving_and_converts_currency_when_run_hardened(running: str) -> None:
    rates = currency.load_rates()
    expected = currency.convert(rates, 100, 0, "EUR", "USD")
    with grpc.insecure_channel(running) as channel:
        stub = rpc.CurrencyServiceStub(channel)
        request = pb.CurrencyConversionRequest(to_code="USD")
        getattr(request, "from").CopyFrom(pb.Money(currency_code="EUR", units=100, nanos=0))
        reply = stub.Convert(request, timeout=5)
        assert (reply.currency_code, reply.units, reply.nanos) == ("USD", *expected)
        assert (reply.units, reply.nanos) == (113, 50_000_000)
        with pytest.raises(grpc.RpcError) as bad:
            stub.Convert(pb.CurrencyConversionRequest(to_code="XXX"), timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_image_runs_as_uid_1000_and_serves_its_own_service_by_default(image: str) -> None:
    info = docker("image", "inspect", "-f", "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|"
                  "{{range .Config.Env}}{{println .}}{{end}}", image).stdout
    user, entrypoint, cmd, env = info.split("|", 3)
    assert user.split(":")[0] == "1000"
    assert entrypoint == '["boutique"]' and cmd == "null"
    assert f"BOUTIQUE_SERVICE={SERVICE}" in env.splitlines()
    assert "BOUTIQUE_CATALOG=/etc/boutique/catalog.yml" in env.splitlines()
    assert "PYTHONDONTWRITEBYTECODE=1" in env.splitlines()
    ident = docker("run", "--rm", *HARDENED, "--entrypoint", "id", image).stdout.strip()
    assert ident.startswith("uid=1000(boutique) gid=1000(boutique)")


def test_image_has_no_compiler_and_no_installer(image: str) -> None:
    probe = ("for t in gcc cc c++ make pip pip3; do command -v $t || true; done; "
             "python3 -c 'import pip' 2>/dev/null && echo importable-pip || true")
    found = docker("run", "--rm", *HARDENED, "--entrypoint", "sh", image, "-c", probe).stdout.split()
    assert found == []


def test_image_root_filesystem_is_not_writable_but_tmp_is(image: str) -> None:
    script = "touch /opt/app/x 2>/dev/null && echo wrote-app; touch /tmp/ok && echo wrote-tmp"
    out = docker("run", "--rm", *HARDENED, "--entrypoint", "sh", image, "-c", script).stdout.split()
    assert out == ["wrote-tmp"]


def test_image_catalog_is_the_repository_catalog(image: str) -> None:
    inside = docker("run", "--rm", *HARDENED, "--entrypoint", "cat", image, "/etc/boutique/catalog.yml").stdout
    assert inside == (ROOT / "group_vars" / "all" / "catalog.yml").read_text()


def test_image_leaves_the_development_code_out_and_its_cli_still_works(image: str) -> None:
    probe = ("import importlib.util as u; "
             "print(' '.join(m for m in ('boutique.runner', 'boutique.loadgen', 'boutique.bench', 'boutique.dev') "
             "if u.find_spec(m)) or 'none')")
    found = docker("run", "--rm", *HARDENED, "--entrypoint", "python3", image, "-c", probe).stdout.strip()
    assert found == "none", f"development modules in the service image: {found}"
    listing = docker("run", "--rm", *HARDENED, image, "catalog").stdout
    assert SERVICE in listing
    usage = docker("run", "--rm", *HARDENED, image, "run", check=False)
    assert usage.returncode == 2 and "invalid choice: 'run'" in usage.stderr, usage.stderr


def test_build_refuses_an_unknown_service(base_image: str) -> None:
    proc = docker("build", "--quiet", "--force-rm", *build_args(SERVICE="nosuchservice"),
                  "-t", "boutique-test/bad:pytest", str(ROOT), check=False)
    assert proc.returncode != 0
    assert "unknown service 'nosuchservice'" in proc.stdout + proc.stderr
