"""The real pipeline: matrix → Dockerfiles → CPython built in Docker → smoke-tested, tagged images."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine
from cpforge.errors import BuildError, EngineError, SourceError
from cpforge.progress import Progress
from cpforge.report import EntryResult, Report

from .conftest import AMD64_314, ROOT, TEST_REPOSITORY, image_refs, matrix_text, repo_copy

pytestmark = pytest.mark.integration

MIRRORS_BLOCK = "    - https://www.python.org/ftp/python\n    - debian+http://deb.debian.org/debian\n  cache: sources"
EXPECTED_GIL = {"default": True, "freethreaded": False, "jit": True}
VERSION = "3.14.7"


def test_three_314_variants_pass_their_smoke_tests(built_314: dict[str, EntryResult]) -> None:
    assert set(built_314) == set(EXPECTED_GIL)
    for variant, res in built_314.items():
        assert res.status == "passed", (variant, res.problems, res.log)
        f = res.facts
        assert f["version"] == VERSION
        assert f["gil_enabled"] is EXPECTED_GIL[variant]
        assert f["gil_enabled_after_imports"] is EXPECTED_GIL[variant]  # no shipped extension re-enables it
        assert f["py_gil_disabled"] == (0 if EXPECTED_GIL[variant] else 1)
        assert f["jit_built"] is (variant == "jit") and f["jit_evidence"] == "sys._jit"
        assert f["failed_imports"] == {} and f["extension_modules"] > 40
        assert f["pip_version"]
        assert f["machine"] == f["elf_machine"] == "x86_64"
        assert f["pyc_files"] == 0 and f["test_dirs"] == []
        # 3.14's own features, run for real in every image
        assert f["subinterpreters_ok"] is True and f["tstring_ok"] is True and f["zstd_ok"] is True
    # `yes` turns the JIT on by default: available, enabled and active in a hot loop; PYTHON_JIT=0 turns it off
    jit = built_314["jit"].facts
    assert (jit["jit_enabled"], jit["jit_active"]) == (True, True)
    assert (jit["jit_enabled_with_python_jit_0"], jit["jit_active_with_python_jit_0"]) == (False, False)
    assert built_314["default"].facts["jit_enabled"] is False


def test_313_free_threaded_jit_reports_that_its_jit_never_runs(built_313: EntryResult) -> None:
    assert built_313.status == "passed", (built_313.problems, built_313.log)
    f = built_313.facts
    assert f["version"] == "3.13.5" and f["jit_evidence"] == "PY_CORE_CFLAGS"
    assert f["jit_built"] is True and f["gil_enabled"] is False
    assert (f["tier2_executors"], f["jit_enabled"], f["jit_active"]) == (0, False, False)
    assert f["subinterpreters_ok"] is None and f["tstring_ok"] is None  # 3.14 features: not in 3.13


def test_python_reports_gil_state_in_each_tagged_image(engine: Engine, built_314: dict[str, EntryResult]) -> None:
    for variant, res in built_314.items():
        assert res.tags and all(t.startswith(f"{TEST_REPOSITORY}:") for t in res.tags)
        for tag in res.tags:
            assert engine.image_id(tag) == res.image_id
        out = engine.run(res.tags[0], ["python3", "-c", "import sys; print(sys._is_gil_enabled())"])
        assert out.exit_code == 0, out.stderr
        assert out.stdout.strip() == str(EXPECTED_GIL[variant])


def test_report_json_says_the_same(ctx: api.Context, built_314: dict[str, EntryResult]) -> None:
    data = json.loads(ctx.report_path.read_text())
    entries = {
        e["variant"]: e
        for e in data["entries"]
        if e["id"].startswith("3.14-") and e["id"].endswith("-trixie-amd64") and e["profile"] == "quick"
    }

    assert set(entries) >= set(EXPECTED_GIL)
    for variant, gil in EXPECTED_GIL.items():
        e = entries[variant]
        assert e["status"] == "passed"
        assert e["facts"]["gil_enabled"] is gil
        assert e["facts"]["zstd_ok"] is True
        assert e["image_id"] == built_314[variant].image_id
        assert e["builder_platform"] == "linux/amd64" and e["reason"] == ""
        assert Path(e["log"]).is_file() and "cpforge-build" in Path(e["log"]).read_text()
        assert set(e["durations"]) >= {"artifact", "runtime", "smoke", "total"}


def test_artifact_is_a_deterministic_tarball(built_314: dict[str, EntryResult]) -> None:
    res = built_314["freethreaded"]
    tarball = Path(res.artifact["path"])
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == res.artifact["sha256"]
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))  # tar --sort=name: per directory
    assert {m.uid for m in members} == {0} and {m.gid for m in members} == {0}
    assert len({m.mtime for m in members}) == 1
    assert "usr/local/bin/python3.14t" in names
    assert not [n for n in names if n.endswith(".pyc") or "/test/" in n]
    assert "libssl3t64" in res.runtime_packages


def test_runtime_image_has_no_compilers(engine: Engine, built_314: dict[str, EntryResult]) -> None:
    res = built_314["jit"]
    out = engine.run(res.tags[0], ["bash", "-c", "command -v gcc clang-19 llvm-readobj-19 || echo none"])
    assert out.stdout.strip() == "none"


def test_copy_out_reads_a_file_and_names_what_is_missing(
    tmp_path: Path, engine: Engine, built_314: dict[str, EntryResult]
) -> None:
    tag = built_314["default"].tags[0]
    dest = engine.copy_out(tag, "/usr/local/share/cpforge/runtime-packages.txt", tmp_path / "pkgs.txt")
    assert "libssl3t64" in dest.read_text().split()
    with pytest.raises(BuildError, match="/nonexistent does not exist in image"):
        engine.copy_out(tag, "/nonexistent", tmp_path / "x")
    with pytest.raises(BuildError, match="image cpforge-test/no-such:image does not exist"):
        engine.copy_out("cpforge-test/no-such:image", "/etc/os-release", tmp_path / "y")
    with pytest.raises(EngineError, match="is not a regular file"):
        engine.copy_out(tag, "/usr/local/share/cpforge", tmp_path / "z")


def test_no_change_rerun_reuses_everything(ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult]) -> None:
    specs = api.plan(ctx, filters=[AMD64_314], profile="quick")
    with Progress(total=len(specs), heartbeat=0) as progress:
        again = {r.variant: r for r in api.build(ctx, engine, specs, BuildOptions(), progress)}
    for variant, res in again.items():
        assert res.status == "passed"
        assert res.image_id == built_314[variant].image_id
        assert res.artifact["sha256"] == built_314[variant].artifact["sha256"]
        assert res.reused is True


def test_smoke_task_reruns_on_built_images(ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult]) -> None:
    specs = api.plan(ctx, filters=["3.14-freethreaded-trixie-amd64"], profile="quick")
    with Progress(total=1, heartbeat=0) as progress:
        (res,) = api.smoke(ctx, engine, specs, progress)
    assert res.status == "passed" and res.reused is False
    assert res.facts["gil_enabled"] is False


def test_failed_smoke_is_never_tagged(
    ctx: api.Context, workdir: Path, engine: Engine, built_314: dict[str, EntryResult]
) -> None:
    # The same build (its report's chains, so every layer comes from the cache: the same image), but
    # the matrix now requires a module this image does not ship.
    path = workdir / "strict.yaml"
    path.write_text(
        matrix_text(
            **{
                "repository: cpforge-test/python": "repository: cpforge-test/strict",
                "modules: [ssl,": "modules: [_tkinter, ssl,",
            }
        )
    )
    strict = api.Context.create(path, root=ROOT, out=workdir / "strict-out")
    strict.ws.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(ctx.report_path, strict.report_path)
    api.render_dockerfiles(strict)  # strict.yaml's own dockerfiles-strict/
    specs = api.plan(strict, filters=["3.14-default-trixie-amd64"], profile="quick")
    with Progress(total=1, heartbeat=0) as progress:
        (res,) = api.build(strict, engine, specs, BuildOptions(), progress)
    assert res.status == "failed"
    assert any("_tkinter" in p for p in res.problems)
    assert res.reason.startswith("stdlib extension modules import") and "_tkinter" in res.reason
    assert res.tags == [] and res.image_id is None
    assert all(engine.image_id(t) is None for t in specs[0].tags)
    # the passing image of the same content (the same image) keeps its own tags
    assert res.artifact_image_id == built_314["default"].artifact_image_id
    assert engine.image_id(built_314["default"].tags[0]) == built_314["default"].image_id


def test_a_failed_build_names_the_configure_error_in_report_and_summary(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine, built_314: dict[str, EntryResult]
) -> None:
    """A real build that configure refuses (an option 3.14.7 does not know): the progress line and the
    report give configure's own line, not only docker's "returned a non-zero code"."""
    bad = "  default: {configure: [--with-cpforge-no-such-option]}"
    # its own repository: built_314's image of this entry keeps the default tags
    own = {"  default: {}": bad, "repository: cpforge-test/python": "repository: cpforge-test/badflag"}
    ctx = repo_copy(tmp_path_factory.mktemp("badflag"), matrix_text(**own))
    specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    assert specs[0].tags and all(t.startswith("cpforge-test/badflag:") for t in specs[0].tags)
    lines = io.StringIO()
    with Progress(total=1, heartbeat=0, stream=lines) as progress:
        (res,) = api.build(ctx, engine, specs, BuildOptions(), progress)
    reason = "configure: error: unrecognized options: --with-cpforge-no-such-option"
    assert res.status == "error" and res.reason == reason and res.problems[0] == reason
    assert "returned a non-zero code" in res.problems[1]
    assert "✕ 3.14-default-trixie-amd64@quick: error after" in lines.getvalue()
    assert reason in lines.getvalue().splitlines()[-1]
    entry = Report.load(ctx.report_path).entries["3.14-default-trixie-amd64@quick"]
    assert entry.reason == reason and entry.image_id is None
    assert all(engine.image_id(t) is None for t in specs[0].tags)


def test_tampered_source_is_refused_before_any_build(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CPFORGE_MIRRORS", raising=False)  # only the tampered mirror may be tried
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good = ROOT / "sources" / f"Python-{VERSION}.tar.xz"
    data = bytearray(good.read_bytes() if good.exists() else b"\0" * 1024)
    data[len(data) // 2] ^= 0xFF
    (mirror / f"Python-{VERSION}.tar.xz").write_bytes(bytes(data))
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
        api.render_dockerfiles(ctx)
        specs = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
        with Progress(total=1, heartbeat=0) as progress:
            api.build(ctx, engine, specs, BuildOptions(), progress)
    assert image_refs(engine) == before
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "cache").glob("*.tar.xz"))


def test_base_image_is_bootstrapped_with_platform_metadata(engine: Engine, built_314: dict[str, EntryResult]) -> None:
    info = engine.inspect_image("cpforge/debian:trixie-amd64")
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    runtime = engine.inspect_image(built_314["default"].image_id or "")
    labels = runtime["Config"]["Labels"]
    assert labels["io.cpforge.entry"] == "3.14-default-trixie-amd64"
    assert labels["io.cpforge.source.sha256"] == "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
    assert labels["org.opencontainers.image.created"] == "2026-08-05T00:00:00Z"
