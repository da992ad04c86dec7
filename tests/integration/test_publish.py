"""Publishing to a real registry (Debian's docker-registry on 127.0.0.1): only what passed, idempotent,
exact tags immutable, multi-arch manifest lists with the right architectures, SBOMs alongside."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cpforge import api
from cpforge.engine import Engine
from cpforge.errors import EngineError
from cpforge.publish import PublishError, publish
from cpforge.registry import RegistryError
from cpforge.report import EntryResult, Report

from .faults import CuttingProxy
from .registries import serving_registry

pytestmark = pytest.mark.integration
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def manifest(registry: str, repo: str, ref: str) -> tuple[int, dict, str]:
    r = requests.get(f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": f"{LIST}, {V2}"}, timeout=10)
    return r.status_code, (r.json() if r.status_code == 200 else {}), r.headers.get("Docker-Content-Digest", "")


@pytest.fixture(scope="session")
def published(
    ctx: api.Context,
    engine: Engine,
    registry: str,
    built_314: dict[str, EntryResult],
    built_arm64: dict[str, EntryResult],
    workdir: Path,
) -> dict[str, object]:
    specs = api.plan(ctx, filters=["3.14-freethreaded-trixie-*"], profile="quick")
    first = publish(engine, Report.load(ctx.report_path), specs, f"{registry}/platform", out=workdir / "pub")
    second = publish(engine, Report.load(ctx.report_path), specs, f"{registry}/platform", out=workdir / "pub")
    return {"first": first, "second": second}


def test_multi_arch_index_has_both_platforms(
    registry: str, published: dict[str, object], built_314: dict[str, EntryResult], built_arm64: dict[str, EntryResult]
) -> None:
    for tag in ("3.14.7-freethreaded-trixie-quick", "3.14-freethreaded-quick", "3.14t-quick"):
        status, body, _ = manifest(registry, "platform/python", tag)
        assert status == 200 and body["mediaType"] == LIST, tag
        archs = {m["platform"]["architecture"]: m["digest"] for m in body["manifests"]}
        assert set(archs) == {"amd64", "arm64"}
        for arch, digest in archs.items():
            s, m, _ = manifest(registry, "platform/python", digest)
            assert s == 200
            expected = (
                built_314["freethreaded"] if arch == "amd64" else built_arm64["3.14-freethreaded-trixie-arm64"]
            ).image_id
            assert m["config"]["digest"] == expected  # the arm64 tag serves the arm64 image


def test_second_publish_is_a_no_op(published: dict[str, object]) -> None:
    first, second = published["first"], published["second"]
    assert first.pushed and not first.skipped  # type: ignore[attr-defined]
    assert second.pushed == []  # type: ignore[attr-defined]
    assert set(second.unchanged) >= set(first.pushed)  # type: ignore[attr-defined]


def test_pull_by_tag_and_digest_and_run_arm64(
    engine: Engine, registry: str, published: dict[str, object], built_arm64: dict[str, EntryResult]
) -> None:
    ref = f"{registry}/platform/python:3.14.7-freethreaded-trixie-arm64-quick"
    engine.remove_image(ref)
    assert engine.pull(ref, "linux/arm64")
    assert engine.image_id(ref) == built_arm64["3.14-freethreaded-trixie-arm64"].image_id
    _, _, digest = manifest(registry, "platform/python", "3.14.7-freethreaded-trixie-arm64-quick")
    by_digest = f"{registry}/platform/python@{digest}"
    assert engine.pull(by_digest, "linux/arm64")
    out = engine.run(
        by_digest,
        ["python3", "-c", "import platform, sys; print(platform.machine(), sys._is_gil_enabled())"],
        platform="linux/arm64",
    )
    assert out.exit_code == 0, out.stderr
    assert out.stdout.split() == ["aarch64", "False"]


def test_sbom_file_and_artifact(registry: str, published: dict[str, object]) -> None:
    first = published["first"]
    path = Path(first.sboms["3.14-freethreaded-trixie-arm64@quick"])  # type: ignore[attr-defined]
    doc = json.loads(path.read_text())
    names = {c["name"] for c in doc["components"]}
    assert {"cpython", "libssl3t64", "libc6"} <= names
    cpython = next(c for c in doc["components"] if c["name"] == "cpython")
    assert cpython["hashes"][0]["content"] == "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
    assert {c["name"] for c in cpython["components"]} >= {"expat", "HACL*"}
    assert any("arch=arm64" in c.get("purl", "") for c in doc["components"])
    _, _, digest = manifest(registry, "platform/python", "3.14.7-freethreaded-trixie-arm64-quick")
    r = requests.get(
        f"http://{registry}/v2/platform/python/manifests/{digest.replace(':', '-')}.sbom",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["subject"]["digest"] == digest


def test_failed_entry_is_never_pushed(
    ctx: api.Context, engine: Engine, registry: str, workdir: Path, built_314: dict[str, EntryResult]
) -> None:
    report = Report.load(ctx.report_path)
    key = "3.14-jit-trixie-amd64@quick"
    report.entries[key].status = "failed"
    report.entries[key].problems = ["JIT enabled by default: expected True, got False"]
    specs = api.plan(ctx, filters=["3.14-jit-trixie-amd64"], profile="quick")
    res = publish(engine, report, specs, f"{registry}/failing", out=workdir / "pub-failing")
    assert res.pushed == [] and len(res.skipped) == 1 and "smoke test failed" in res.skipped[0]
    assert manifest(registry, "failing/python", "3.14.7-jit-trixie-amd64-quick")[0] == 404


def test_registry_unreachable_is_a_clear_error(
    ctx: api.Context, engine: Engine, workdir: Path, built_314: dict[str, EntryResult]
) -> None:
    specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    with pytest.raises(RegistryError, match=r"cannot reach the registry at http://127\.0\.0\.1:9"):
        publish(engine, Report.load(ctx.report_path), specs, "127.0.0.1:9/ns", out=workdir / "pub-none")


def test_publish_refuses_moving_an_exact_tag_without_force(
    ctx: api.Context, engine: Engine, registry: str, workdir: Path, built_314: dict[str, EntryResult]
) -> None:
    specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    target = f"{registry}/immutable"
    publish(engine, Report.load(ctx.report_path), specs, target, out=workdir / "pub-imm")
    # Someone pushes another image under the exact tag; the next publish of our build must refuse.
    status, body, _ = manifest(registry, "immutable/python", "3.14.7-default-trixie-amd64-quick")
    other = f"{registry}/immutable/python:3.14.7-default-trixie-amd64-quick"
    engine.tag(built_314["freethreaded"].image_id or "", other)
    engine.push(other)
    with pytest.raises(PublishError, match="refusing to move exact tags"):
        publish(engine, Report.load(ctx.report_path), specs, target, out=workdir / "pub-imm")
    res = publish(engine, Report.load(ctx.report_path), specs, target, out=workdir / "pub-imm", force=True)
    assert "3.14.7-default-trixie-amd64-quick" in res.pushed
    assert (
        manifest(registry, "immutable/python", "3.14.7-default-trixie-amd64-quick")[1]["config"]["digest"]
        == built_314["default"].image_id
    )
    assert status == 200 and body


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bcrypt = pytest.importorskip("bcrypt")  # a dev dependency; skipping here is a visible 's' in the summary
    root = tmp_path_factory.mktemp("auth-registry")
    (root / "htpasswd").write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=5)).decode() + "\n")
    with serving_registry(
        root, f"auth:\n  htpasswd:\n    realm: cpforge-test\n    path: {root / 'htpasswd'}\n"
    ) as address:
        yield address


def docker_config(tmp_path: Path, host: str, user: str, password: str) -> Path:
    import base64

    cfg = tmp_path / "docker-config"
    cfg.mkdir(parents=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return cfg


def test_credentials_from_docker_config(
    ctx: api.Context,
    engine: Engine,
    auth_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    built_314: dict[str, EntryResult],
    capsys: pytest.CaptureFixture[str],
) -> None:
    specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "bad", auth_registry, "alice", "wrong")))
    with pytest.raises(RegistryError, match="refused the credentials"):
        publish(engine, Report.load(ctx.report_path), specs, f"{auth_registry}/team", out=tmp_path / "o1")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "good", auth_registry, "alice", "s3cret")))
    res = publish(engine, Report.load(ctx.report_path), specs, f"{auth_registry}/team", out=tmp_path / "o2")
    assert "3.14.7-default-trixie-amd64-quick" in res.pushed
    out = capsys.readouterr()
    assert "s3cret" not in out.out + out.err
    r = requests.get(
        f"http://{auth_registry}/v2/team/python/manifests/3.14-quick",
        auth=("alice", "s3cret"),
        headers={"Accept": LIST},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["manifests"][0]["platform"]["architecture"] == "amd64"


def _blobs_present(registry: str, repo: str, ref: str) -> bool:
    """Every manifest an index lists, and every blob those manifests name, is in the registry."""
    status, body, _ = manifest(registry, repo, ref)
    assert status == 200 and body["mediaType"] == LIST
    for m in body["manifests"]:
        s, image, _ = manifest(registry, repo, m["digest"])
        if s != 200:
            return False
        for blob in [image["config"], *image["layers"]]:
            r = requests.head(f"http://{registry}/v2/{repo}/blobs/{blob['digest']}", timeout=10)
            if r.status_code != 200:
                return False
    return True


def test_push_interrupted_halfway_is_retried(
    ctx: api.Context, engine: Engine, registry: str, workdir: Path, built_314: dict[str, EntryResult]
) -> None:
    specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    # The first connection that uploads more than 1 MiB is reset mid-body (a layer is tens of MB).
    with CuttingProxy(registry, cut_after=1 << 20, cuts=1) as proxy:
        res = publish(engine, Report.load(ctx.report_path), specs, f"{proxy.address}/flaky", out=workdir / "pub-f")
        assert proxy.cut == 1  # the fault really happened
    assert {"3.14.7-default-trixie-amd64-quick", "3.14.7-default-trixie-quick", "3.14-quick"} <= set(res.pushed)
    assert manifest(registry, "flaky/python", "3.14.7-default-trixie-amd64-quick")[1]["config"]["digest"] == (
        built_314["default"].image_id
    )
    assert _blobs_present(registry, "flaky/python", "3.14.7-default-trixie-quick")


def test_push_that_keeps_failing_writes_no_index_and_a_rerun_completes(
    ctx: api.Context, engine: Engine, registry: str, workdir: Path, built_314: dict[str, EntryResult]
) -> None:
    specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    with CuttingProxy(registry, cut_after=1 << 20, cuts=None) as proxy:
        target = f"{proxy.address}/broken"
        with pytest.raises(EngineError, match=r"push of .*broken/python:3\.14\.7-default-trixie-amd64-quick failed"):
            # one attempt of ours (the daemon itself retries each layer 5 times)
            publish(engine, Report.load(ctx.report_path), specs, target, out=workdir / "pub-b", push_attempts=1)
        assert proxy.cut >= 1
        # nothing points at what is not there: no arch tag, no index, no moving tag
        for tag in ("3.14.7-default-trixie-amd64-quick", "3.14.7-default-trixie-quick", "3.14-quick"):
            assert manifest(registry, "broken/python", tag)[0] == 404, tag
        proxy.heal()
        res = publish(engine, Report.load(ctx.report_path), specs, target, out=workdir / "pub-b")
    assert {"3.14.7-default-trixie-amd64-quick", "3.14.7-default-trixie-quick", "3.14-quick"} <= set(res.pushed)
    assert _blobs_present(registry, "broken/python", "3.14.7-default-trixie-quick")
