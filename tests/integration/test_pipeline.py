"""The real pipeline: matrix → Dockerfiles → CPython built in Docker → smoke-tested, tagged images."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine
from cpforge.errors import BuildError, EngineError, SourceError
from cpforge.progress import Progress
from cpforge.report import EntryResult

from .conftest import AMD64_313, ROOT, TEST_REPOSITORY, image_refs, matrix_text

pytestmark = pytest.mark.integration

MIRRORS_BLOCK = "    - https://www.python.org/ftp/python\n    - debian+http://deb.debian.org/debian\n  cache: sources"
INJECTED = 'configure: [--enable-optimizations, "--with-lto; touch /pwned"]'
EXPECTED_GIL = {"default": True, "freethreaded": False, "jit": True, "freethreaded-jit": False}


def invoke(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=3600
    )


def test_four_variants_pass_their_smoke_tests(built_313: dict[str, EntryResult]) -> None:
    assert set(built_313) == set(EXPECTED_GIL)
    for variant, res in built_313.items():
        assert res.status == "passed", (variant, res.problems, res.log)
        f = res.facts
        assert f["version"] == "3.13.5"
        assert f["gil_enabled"] is EXPECTED_GIL[variant]
        assert f["py_gil_disabled"] == (0 if EXPECTED_GIL[variant] else 1)
        assert f["jit_built"] is ("jit" in variant)
        assert f["failed_imports"] == {}
        assert f["pip_version"]
        assert f["machine"] == f["elf_machine"] == "x86_64"
        assert f["pyc_files"] == 0 and f["test_dirs"] == []
    # `yes` turns the JIT on by default for the GIL build; for free-threaded+JIT the truth is reported
    assert built_313["jit"].facts["jit_enabled"] is True
    assert built_313["jit"].facts["jit_active"] is True
    assert built_313["default"].facts["jit_enabled"] is False
    assert isinstance(built_313["freethreaded-jit"].facts["jit_enabled"], bool)


def test_python_reports_gil_state_in_each_tagged_image(engine: Engine, built_313: dict[str, EntryResult]) -> None:
    for variant, res in built_313.items():
        assert res.tags and all(t.startswith(f"{TEST_REPOSITORY}:") for t in res.tags)
        for tag in res.tags:
            assert engine.image_id(tag) == res.image_id
        out = engine.run(res.tags[0], ["python3", "-c", "import sys; print(sys._is_gil_enabled())"])
        assert out.exit_code == 0, out.stderr
        assert out.stdout.strip() == str(EXPECTED_GIL[variant])


def test_report_json_says_the_same(ctx: api.Context, built_313: dict[str, EntryResult]) -> None:
    data = json.loads(ctx.report_path.read_text())
    entries = {
        e["variant"]: e
        for e in data["entries"]
        if e["id"].startswith("3.13-") and e["id"].endswith("-amd64") and e["profile"] == "quick"
    }

    assert set(entries) >= set(EXPECTED_GIL)
    for variant, gil in EXPECTED_GIL.items():
        e = entries[variant]
        assert e["status"] == "passed"
        assert e["facts"]["gil_enabled"] is gil
        assert e["image_id"] == built_313[variant].image_id
        assert Path(e["log"]).is_file() and "cpforge-build" in Path(e["log"]).read_text()
        assert set(e["durations"]) >= {"artifact", "runtime", "smoke", "total"}


def test_artifact_is_a_deterministic_tarball(built_313: dict[str, EntryResult]) -> None:
    res = built_313["freethreaded"]
    tarball = Path(res.artifact["path"])
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == res.artifact["sha256"]
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))  # tar --sort=name: per directory
    assert {m.uid for m in members} == {0} and {m.gid for m in members} == {0}
    assert len({m.mtime for m in members}) == 1
    assert "usr/local/bin/python3.13t" in names
    assert not [n for n in names if n.endswith(".pyc") or "/test/" in n]
    assert "libssl3t64" in res.runtime_packages


def test_runtime_image_has_no_compilers(engine: Engine, built_313: dict[str, EntryResult]) -> None:
    res = built_313["jit"]
    out = engine.run(res.tags[0], ["bash", "-c", "command -v gcc clang-18 llvm-readobj-18 || echo none"])
    assert out.stdout.strip() == "none"


def test_copy_out_reads_a_file_and_names_what_is_missing(
    tmp_path: Path, engine: Engine, built_313: dict[str, EntryResult]
) -> None:
    tag = built_313["default"].tags[0]
    dest = engine.copy_out(tag, "/usr/local/share/cpforge/runtime-packages.txt", tmp_path / "pkgs.txt")
    assert "libssl3t64" in dest.read_text().split()
    with pytest.raises(BuildError, match="/nonexistent does not exist in image"):
        engine.copy_out(tag, "/nonexistent", tmp_path / "x")
    with pytest.raises(BuildError, match="image cpforge-test/no-such:image does not exist"):
        engine.copy_out("cpforge-test/no-such:image", "/etc/os-release", tmp_path / "y")
    with pytest.raises(EngineError, match="is not a regular file"):
        engine.copy_out(tag, "/usr/local/share/cpforge", tmp_path / "z")


def test_no_change_rerun_reuses_everything(ctx: api.Context, engine: Engine, built_313: dict[str, EntryResult]) -> None:
    specs = api.plan(ctx, filters=[AMD64_313], profile="quick")
    with Progress(total=len(specs), heartbeat=0) as progress:
        again = {r.variant: r for r in api.build(ctx, engine, specs, BuildOptions(), progress)}
    for variant, res in again.items():
        assert res.status == "passed"
        assert res.image_id == built_313[variant].image_id
        assert res.artifact["sha256"] == built_313[variant].artifact["sha256"]
        assert res.reused is True


def test_smoke_task_reruns_on_built_images(ctx: api.Context, engine: Engine, built_313: dict[str, EntryResult]) -> None:
    specs = api.plan(ctx, filters=["3.13-freethreaded-trixie-amd64"], profile="quick")
    with Progress(total=1, heartbeat=0) as progress:
        (res,) = api.smoke(ctx, engine, specs, progress)
    assert res.status == "passed" and res.reused is False
    assert res.facts["gil_enabled"] is False


def test_failed_smoke_is_never_tagged(workdir: Path, engine: Engine, built_313: dict[str, EntryResult]) -> None:
    # Same build (layer cache), but the matrix now requires a module this image does not ship.
    path = workdir / "strict.yaml"
    path.write_text(
        matrix_text(
            **{
                "repository: cpforge-test/python": "repository: cpforge-test/strict",
                "modules: [ssl,": "modules: [_tkinter, ssl,",
            }
        )
    )
    ctx = api.Context.create(path, root=ROOT, out=workdir / "strict-out")
    specs = api.plan(ctx, filters=["3.13-default-trixie-amd64"], profile="quick")
    with Progress(total=1, heartbeat=0) as progress:
        (res,) = api.build(ctx, engine, specs, BuildOptions(), progress)
    assert res.status == "failed"
    assert any("_tkinter" in p for p in res.problems)
    assert res.tags == [] and res.image_id is None
    assert all(engine.image_id(t) is None for t in specs[0].tags)
    # the passing image of the same content keeps its own tags
    assert engine.image_id(built_313["default"].tags[0]) == built_313["default"].image_id


def test_tampered_source_is_refused_before_any_build(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CPFORGE_MIRRORS", raising=False)  # only the tampered mirror may be tried
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good = ROOT / "sources" / "Python-3.13.5.tar.xz"
    data = bytearray(good.read_bytes() if good.exists() else b"\0" * 1024)
    data[len(data) // 2] ^= 0xFF
    (mirror / "Python-3.13.5.tar.xz").write_bytes(bytes(data))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        matrix_text(
            **{
                "repository: cpforge-test/python": "repository: cpforge-test/tampered",
                MIRRORS_BLOCK: f"    - {mirror}\n  cache: {tmp_path / 'cache'}",
            }
        )
    )
    before = image_refs(engine)
    with pytest.raises(SourceError, match="sha256 mismatch"):
        ctx = api.Context.create(matrix, root=ROOT, out=tmp_path / "out")
        specs = api.plan(ctx, filters=["3.13-default-trixie-amd64"], profile="quick")
        with Progress(total=1, heartbeat=0) as progress:
            api.build(ctx, engine, specs, BuildOptions(), progress)
    assert image_refs(engine) == before
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "cache").glob("*.tar.xz"))


def test_cli_malformed_matrix_and_injected_flag_build_nothing(tmp_path: Path, engine: Engine) -> None:
    before = image_refs(engine)
    bad = tmp_path / "bad.yaml"
    bad.write_text(matrix_text(**{"variants:": "varients:"}))
    proc = invoke("build", "--matrix", "--filter", "3.13-default-*", "--matrix-file", str(bad), "--out", str(tmp_path))
    assert proc.returncode == 2
    line = next(i for i, ln in enumerate(bad.read_text().splitlines(), 1) if ln.startswith("varients:"))
    assert f"{bad}:{line}: unknown key `varients`" in proc.stderr
    assert "did you mean `variants`?" in proc.stderr and "Traceback" not in proc.stderr

    inj = tmp_path / "inj.yaml"
    inj.write_text(matrix_text(**{"configure: [--enable-optimizations, --with-lto]": INJECTED}))
    proc = invoke("build", "--matrix", "--filter", "3.13-default-*", "--matrix-file", str(inj), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "is not a plain `--flag` or `--flag=value`" in proc.stderr
    assert image_refs(engine) == before
    assert not (tmp_path / "report.json").exists()


def test_missing_daemon_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="cannot reach the Docker daemon"):
        Engine.connect("unix:///nonexistent/docker.sock")
    proc = invoke(
        "build",
        "--filter",
        "3.13-default-trixie-amd64",
        "--engine",
        "unix:///nonexistent/docker.sock",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 5
    assert "cannot reach the Docker daemon" in proc.stderr and "dockerd" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_render_check_passes_on_main() -> None:
    proc = invoke("render", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_is_bootstrapped_with_platform_metadata(engine: Engine, built_313: dict[str, EntryResult]) -> None:
    info = engine.inspect_image("cpforge/debian:trixie-amd64")
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    runtime = engine.inspect_image(built_313["default"].image_id or "")
    labels = runtime["Config"]["Labels"]
    assert labels["io.cpforge.entry"] == "3.13-default-trixie-amd64"
    assert labels["io.cpforge.source.sha256"] == "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"
    assert labels["org.opencontainers.image.created"] == "2025-06-11T00:00:00Z"
