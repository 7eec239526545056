"""The images stage (playbooks/site/images.yml, roles images + registry) on the
local inventory: every deployable catalog service is built from the Dockerfile,
pushed to the embedded loopback registry, recorded by digest; a re-run changes
nothing; every pushed image, pulled by digest, runs hardened and is healthy.

The build context is a snapshot of the repository's image inputs in a fresh git
repository (one commit), so the run sees a clean work tree and nothing edited
meanwhile in the checkout can change what is built between the two runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from image_lib import ROOT, docker, free_port, require_tool
from testkit import DAEMONIZE, PlaybookRun, moto_server, run_playbook

from boutique import service_catalog as catalog_mod

# The module fixture builds and pushes every image twice: allow more than the default 600s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
CATALOG = catalog_mod.default()
DEPLOYABLE = [s for s in CATALOG.services.values() if s.deploy]
# What the local inventory's images stage builds: every deployable service, the cart's Redis and,
# where the inventory traces, the Jaeger image.
_LOCAL_VARS = yaml.safe_load((ROOT / "inventories/local/group_vars/boutique.yml").read_text())
_K8S_VARS = yaml.safe_load((ROOT / "group_vars/all/kubernetes.yml").read_text())
BUILT = sorted([s.name for s in DEPLOYABLE] + [CATALOG.redis.name]
               + ([_K8S_VARS["boutique_jaeger_image_name"]] if _LOCAL_VARS.get("boutique_tracing_enabled") else []))
HARDENED = ["--user", "1000:1000", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]
PREFIX = "boutique-mesh"
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
])
IMAGE_INPUTS = ["Dockerfile", ".dockerignore", "requirements-runtime.txt", "group_vars/all/catalog.yml",
                "scripts/base-image.sh"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=pytest", "-c", "user.email=pytest@localhost",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def snapshot_context(dest: Path) -> str:
    """Copy the image inputs into dest, commit them; returns the short sha."""
    for rel in IMAGE_INPUTS:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    shutil.copytree(ROOT / "services" / "boutique", dest / "services" / "boutique",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    shutil.copytree(ROOT / "images", dest / "images")  # the Dockerfiles of the other images (Redis, Jaeger)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "image inputs snapshot")
    return git(dest, "rev-parse", "--short=12", "HEAD")


def images_stage(extra: dict[str, object]) -> PlaybookRun:
    return run_playbook("playbooks/site/images.yml", extra, timeout=1500)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[dict[str, object]]:
    """Run the images stage twice on a clean snapshot; stop the registry afterwards."""
    require_tool("docker-registry", "the local inventory pushes to the embedded registry")
    tmp = tmp_path_factory.mktemp("images-stage")
    context = tmp / "context"
    context.mkdir()
    sha = snapshot_context(context)
    port = free_port()
    extra = {
        "registry_port": port,
        "registry_state_dir": str(tmp / "registry"),
        "images_context": str(context),
        "boutique_images_file": str(tmp / "images.json"),
        "boutique_images_base_image": base_image,
        "boutique_images_allow_dirty": False,
        "boutique_images_required": True,
    }
    first = images_stage(extra)
    first_refs = json.loads((tmp / "images.json").read_text()) if first.returncode == 0 else None
    second = images_stage(extra) if first.returncode == 0 else None
    print(f"\nimages stage: first run {first.seconds:.0f}s, no-change run "
          f"{second.seconds if second else float('nan'):.0f}s")
    try:
        yield {"first": first, "first_refs": first_refs, "second": second, "port": port, "sha": sha, "tmp": tmp,
               "extra": extra,
               "refs_file": tmp / "images.json"}
    finally:
        pidfile = tmp / "registry" / "registry.pid"
        if pidfile.exists():
            subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(DAEMONIZE), "--stop", "--pidfile",
                            str(pidfile)], check=False, capture_output=True)


def _refs(stage: dict) -> dict[str, str]:
    """images.json's references (catalog name -> ref), without its "sboms" record."""
    data = json.loads(stage["refs_file"].read_text())
    data.pop("sboms", None)
    return data


def registry_get(port: int, path: str, method: str = "GET") -> tuple[dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(resp.headers), resp.read()


@pytest.mark.docker
def test_first_run_builds_pushes_and_records_every_deployable_service(stage: dict) -> None:
    first = stage["first"]
    assert first.returncode == 0, first.output[-5000:]
    assert first.recap["changed"] > 0
    refs = _refs(stage)
    assert sorted(refs) == BUILT
    for name, ref in refs.items():
        assert re.fullmatch(rf"127\.0\.0\.1:{stage['port']}/{PREFIX}/{name}@sha256:[0-9a-f]{{64}}", ref), ref


@pytest.mark.docker
def test_each_image_has_a_valid_cyclonedx_sbom_recorded_beside_its_digest(stage: dict) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert stage["first"].returncode == 0, "the images stage failed; see the first test"
    data = json.loads(stage["refs_file"].read_text())
    sboms = data.pop("sboms")
    assert sorted(sboms) == sorted(data)
    for name, ref in data.items():
        record = sboms[name]
        assert record["digest"] == ref.split("@", 1)[1] and record["format"] == "CycloneDX 1.6"
        path = stage["refs_file"].parent / record["file"]
        text = path.read_text()
        assert hashlib.sha256(text.encode()).hexdigest() == record["sha256"]
        assert not JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
        bom = json.loads(text)
        assert bom["metadata"]["component"]["version"] == record["digest"]
        purls = {c["purl"].split("?")[0] for c in bom["components"]}
        assert any(p.startswith("pkg:deb/debian/") for p in purls), name  # the base's Debian packages
        if name in {s.name for s in DEPLOYABLE}:  # a service image: our pinned Python dependencies too
            assert "pkg:pypi/grpcio@1.85.1" in purls, name


@pytest.mark.docker
def test_registry_api_lists_the_images_with_the_recorded_digests(stage: dict) -> None:
    port, sha = stage["port"], stage["sha"]
    refs = _refs(stage)
    _, body = registry_get(port, "/v2/_catalog")
    assert sorted(json.loads(body)["repositories"]) == [f"{PREFIX}/{name}" for name in BUILT]
    for name, ref in refs.items():
        digest = ref.split("@", 1)[1]
        _, body = registry_get(port, f"/v2/{PREFIX}/{name}/tags/list")
        assert sorted(json.loads(body)["tags"]) == sorted([sha, f"local-{sha}"])
        for tag in (sha, f"local-{sha}"):
            headers, _ = registry_get(port, f"/v2/{PREFIX}/{name}/manifests/{tag}", method="HEAD")
            assert headers["Docker-Content-Digest"] == digest, (name, tag)


@pytest.mark.docker
def test_second_run_without_source_changes_changes_nothing(stage: dict) -> None:
    second = stage["second"]
    assert second is not None and second.returncode == 0, (second or stage["first"]).output[-5000:]
    assert second.recap["changed"] == 0, re.findall(r"changed: \[localhost\].*", second.output)
    assert json.loads(stage["refs_file"].read_text()) == stage["first_refs"], "the no-change run moved a reference"


@pytest.mark.docker
def test_check_mode_with_only_the_commit_tag_present_changes_nothing(stage: dict) -> None:
    """An image that another inventory built from the same commit has the commit tag but not this
    inventory's human tag: check mode reports the tag it would add and the push, and makes neither."""
    ref = _refs(stage)["frontend"]
    repo = ref.split("@", 1)[0]
    human = f"{repo}:local-{stage['sha']}"
    docker("rmi", human)
    try:
        run = run_playbook("playbooks/site/images.yml", stage["extra"], check=True, timeout=900)
        assert run.returncode == 0, run.output[-5000:]
        assert run.recap["changed"] >= 1, "the missing human tag is a change check mode must report"
        assert docker("image", "inspect", human, check=False).returncode != 0, "check mode tagged the image"
    finally:
        docker("tag", f"{repo}:{stage['sha']}", human)
    assert json.loads(stage["refs_file"].read_text()) == stage["first_refs"]


def wait_healthy(svc: catalog_mod.Service, port: int, timeout: float = 40) -> str:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            if svc.is_grpc:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return "SERVING"
                last = str(status)
            else:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return "200"
                    last = str(resp.status)
        except (grpc.RpcError, OSError) as exc:
            last = str(exc)[:200]
        time.sleep(0.5)
    return f"not healthy: {last}"


@pytest.mark.docker
def test_each_pushed_image_pulled_by_digest_runs_hardened_and_is_healthy(stage: dict) -> None:
    refs = _refs(stage)
    started: dict[str, tuple[str, int]] = {}
    try:
        for svc in DEPLOYABLE:
            ref = refs[svc.name]
            docker("pull", "--quiet", ref)
            port = free_port()
            env: list[str] = []
            for callee in svc.callees:
                if callee in CATALOG.services and CATALOG.get(callee).addr_env:
                    env += ["-e", f"{CATALOG.get(callee).addr_env}=127.0.0.1:9"]
            name = f"boutique-pytest-{svc.name}-{port}"
            docker("run", "-d", "--name", name, *HARDENED, *env, "-p", f"127.0.0.1:{port}:{svc.port}", ref)
            started[svc.name] = (name, port)
        results = {svc.name: wait_healthy(svc, started[svc.name][1]) for svc in DEPLOYABLE}
        bad = {n: r for n, r in results.items() if r not in {"SERVING", "200"}}
        for n in bad:
            bad[n] += "\n" + docker("logs", "--tail", "15", started[n][0], check=False).stderr
        assert not bad, bad
        users = {n: docker("inspect", "-f", "{{.Config.User}}", c).stdout.strip() for n, (c, _) in started.items()}
        assert set(users.values()) == {"1000:1000"}
    finally:
        for name, _ in started.values():
            docker("rm", "-f", name, check=False)


@pytest.mark.docker
def test_a_dirty_work_tree_is_refused_unless_allowed(stage: dict) -> None:
    tmp = stage["tmp"]
    (tmp / "context" / "services" / "boutique" / "scratch.py").write_text("# uncommitted\n")
    try:
        run = images_stage({**stage["extra"], "boutique_images_file": str(tmp / "dirty.json")})
        assert run.returncode != 0
        assert "has uncommitted or untracked changes" in run.output
        assert "services/boutique/scratch.py" in run.output
        assert not (tmp / "dirty.json").exists()
    finally:
        (tmp / "context" / "services" / "boutique" / "scratch.py").unlink()


NO_ENGINE = {
    "boutique_images_registry_embedded": False,
    "boutique_images_registry": "registry.example.com",
    "images_registry_auth": "none",
    "images_docker_host": "unix:///nonexistent/docker.sock",
}


def test_without_a_docker_engine_the_stage_warns_once_and_sets_no_refs(tmp_path: Path) -> None:
    run = images_stage({**NO_ENGINE, "boutique_images_file": str(tmp_path / "images.json")})
    assert run.returncode == 0, run.output[-3000:]
    text = " ".join(run.output.split())
    assert text.count("WARNING: no Docker engine answers at unix:///nonexistent/docker.sock") == 1
    assert "fallback image references" in text
    assert run.recap["changed"] == 0
    assert not (tmp_path / "images.json").exists()


def test_without_a_docker_engine_the_stage_fails_when_images_are_required(tmp_path: Path) -> None:
    run = images_stage({**NO_ENGINE, "boutique_images_required": True,
                        "boutique_images_file": str(tmp_path / "images.json")})
    assert run.returncode != 0
    assert "images_required is true but no Docker engine answers" in run.output


def test_a_non_loopback_embedded_registry_is_refused(tmp_path: Path) -> None:
    run = images_stage({"registry_host": "0.0.0.0", "boutique_images_file": str(tmp_path / "images.json")})
    assert run.returncode != 0
    text = " ".join(run.output.split())  # the YAML result format wraps long messages
    assert "boutique_images_registry_embedded is true but boutique_images_registry (images_registry)='0.0.0.0:5055'" \
        " is not a loopback address" in text


@pytest.mark.docker
def test_the_registry_role_refuses_to_listen_on_a_non_loopback_address(tmp_path: Path, docker_engine: None) -> None:
    run = images_stage({"registry_host": "0.0.0.0", "boutique_images_registry": f"127.0.0.1:{free_port()}",
                        "boutique_images_file": str(tmp_path / "images.json")})
    assert run.returncode != 0
    assert "only serves the local inventory on loopback" in " ".join(run.output.split())


@pytest.fixture
def moto_ecr(tmp_path: Path) -> Iterator[str]:
    """A throw-away moto server (the embedded AWS API) on a free loopback port."""
    with moto_server(tmp_path) as url:
        yield url


def test_ecr_login_module_returns_registry_and_user_but_hides_the_password(moto_ecr: str) -> None:
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1",
               ANSIBLE_LIBRARY=str(ROOT / "plugins" / "modules"), AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    proc = subprocess.run(["ansible", "localhost", "-c", "local", "-m", "boutique_ecr_token",
                           "-a", f"region=eu-west-1 endpoint_url={moto_ecr}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^\s*registry: \d{12}\.dkr\.ecr\.eu-west-1\.amazonaws\.com$", out, re.M), out
    assert re.search(r"^\s*username: AWS$", out, re.M) and re.search(r"^\s*changed: false$", out, re.M), out
    assert re.search(r"^\s*password: VALUE_SPECIFIED_IN_NO_LOG_PARAMETER$", out, re.M), out
    assert re.search(r"^\s*token: VALUE_SPECIFIED_IN_NO_LOG_PARAMETER$", out, re.M), out


@pytest.mark.docker
@pytest.mark.k8s
def test_rendered_deployments_reference_exactly_the_pushed_digests(stage: dict) -> None:
    """The Kubernetes stage, rendering after the images stage, deploys registry/name@sha256:...
    (the digests the images stage recorded), never a mutable tag."""
    import yaml

    assert stage["first"].returncode == 0, "the images stage failed; see the first test"
    refs = _refs(stage)
    render_dir = stage["tmp"] / "rendered"
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(["ansible-playbook", "-i", "inventories/local", "playbooks/site/kubernetes.yml",
                           "-e", f"boutique_render_dir={render_dir}",
                           "-e", f"boutique_images_file={stage['refs_file']}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    # Every Deployment that runs one of our images (the shop's and, where the inventory traces, Jaeger's
    # in the monitoring stage), by the image's name: a Deployment need not be named as its image.
    seen = {}
    for path in sorted(render_dir.rglob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj or obj.get("kind") != "Deployment":
                continue
            annotations = obj["metadata"].get("annotations") or {}
            if "boutique.dev/image-source" in annotations:
                image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
                assert annotations["boutique.dev/image-source"] == "digest", (obj["metadata"]["name"], image)
                seen[image.rsplit("/", 1)[1].split("@", 1)[0]] = image
    assert seen == refs
