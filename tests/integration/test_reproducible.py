"""Pinned inputs (matrix.lock, --locked) and bit-for-bit rebuilds (verify --rebuild)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cpforge import api
from cpforge.build import Builder, BuildOptions
from cpforge.engine import Engine, context_tar
from cpforge.lock import Lock, LockError
from cpforge.matrix import Platform
from cpforge.progress import Progress
from cpforge.render import CONTEXT_SCRIPTS
from cpforge.report import EntryResult, Report
from cpforge.verify import verify

from .conftest import ARM64_ENTRY, ROOT

pytestmark = pytest.mark.integration
ENTRY = "3.14-default-trixie-amd64"


@pytest.fixture(scope="session")
def locked(ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult]) -> Lock:
    specs = api.plan(ctx, filters=[ENTRY], profile="quick")
    assert api.lock(ctx, engine, specs) == ([f"{ENTRY}@quick"], [])
    return Lock.load(ctx.lock_path)


def test_lock_pins_inputs_and_package_versions(locked: Lock, built_314: dict[str, EntryResult]) -> None:
    entry = locked.entries[f"{ENTRY}@quick"]
    assert entry["inputs"]["source_sha256"] == "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
    assert set(entry["inputs"]["scripts"]) == {
        "scripts/build-cpython.sh",
        "scripts/build-python.sh",
        "scripts/install-build-deps.sh",
        "scripts/smoke.py",
    }
    assert "gcc" in entry["builder_packages"] and "libssl3t64:amd64" in entry["runtime_packages"]
    assert entry["artifact_sha256"] == built_314["default"].artifact["sha256"]
    assert locked.bases["cpforge/debian:trixie-amd64"]["image_id"].startswith("sha256:")
    text = locked.path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # deterministic


def test_locked_build_of_unchanged_inputs_passes(ctx: api.Context, engine: Engine, locked: Lock) -> None:
    specs = api.plan(ctx, filters=[ENTRY], profile="quick")
    with Progress(total=1, heartbeat=0) as progress:
        (res,) = api.build(ctx, engine, specs, BuildOptions(), progress, locked=True)
    assert res.status == "passed", res.problems


def test_locked_refuses_a_changed_script_byte(tmp_path: Path, ctx: api.Context, locked: Lock) -> None:
    root = tmp_path / "repo"
    for d in ("templates", "scripts", "dockerfiles"):
        shutil.copytree(ROOT / d, root / d)
    shutil.copy(ctx.matrix.path, root / "matrix.yaml")
    shutil.copy(locked.path, root / "matrix.lock")
    script = root / "scripts" / "build-cpython.sh"
    script.write_bytes(script.read_bytes().replace(b"set -euo pipefail", b"set -euo pipefail ", 1))
    copy = api.Context.create(root / "matrix.yaml", root=root, out=tmp_path / "out")
    specs = api.plan(copy, filters=[ENTRY], profile="quick")
    with pytest.raises(LockError) as err, Progress(total=1, heartbeat=0) as progress:
        api.build(copy, Engine.connect(), specs, BuildOptions(), progress, locked=True)
    assert "scripts/build-cpython.sh" in str(err.value)
    assert not (tmp_path / "out" / "report.json").exists()


def test_locked_refuses_a_changed_package_version_via_cli(tmp_path: Path, ctx: api.Context, locked: Lock) -> None:
    shutil.copy(ctx.matrix.path, tmp_path / "matrix.yaml")
    data = json.loads(locked.path.read_text())
    data["entries"][f"{ENTRY}@quick"]["runtime_packages"]["libssl3t64:amd64"] = "0.0.1-cpforge-test"
    (tmp_path / "matrix.lock").write_text(json.dumps(data))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "invoke",
            "build",
            "--locked",
            "--filter",
            ENTRY,
            "--profile",
            "quick",
            "--matrix-file",
            str(tmp_path / "matrix.yaml"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 10, proc.stdout + proc.stderr
    assert "libssl3t64:amd64=0.0.1-cpforge-test" in proc.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def test_verify_rebuild_is_bit_for_bit(ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult]) -> None:
    specs = api.plan(ctx, filters=[ENTRY], profile="quick")
    with Progress(total=1, heartbeat=60) as progress:
        (res,) = verify(ctx, engine, specs, progress)
    assert res.error is None
    assert res.artifact_same, res.differences
    assert res.layers_same, res.differences
    assert res.reproducible
    # the tagged image was not touched by the rebuild
    assert engine.image_id(built_314["default"].tags[0]) == built_314["default"].image_id


@pytest.fixture(scope="module")
def competing_chain(ctx: api.Context, engine: Engine, workdir: Path) -> Iterator[str]:
    """A no-cache build of the default entry's builder stage: a second chain for the same builder
    steps, newer than the entry's own. Such chains arise when two entries build that stage at once
    (`--jobs 2`), or from a fresh build, verify, bench or a `--no-cache` build. (Its first step,
    `COPY install-build-deps.sh` onto the trixie base, is also a cross build's build-python stage's.)"""
    (spec,) = api.plan(ctx, filters=[ENTRY], profile="quick")
    files: dict[str, bytes | Path] = {"Dockerfile": ctx.renderer.dockerfile(spec).encode()}
    files.update({rel: ROOT / rel for rel in CONTEXT_SCRIPTS})
    files[f"sources/{spec.source.filename}"] = ROOT / "sources" / spec.source.filename
    with (workdir / "competing-chain.log").open("w") as log:
        competing = engine.build(context_tar(files), target="builder", nocache=True, log=log)
    yield competing
    engine.remove_image(competing)


def _rebuild_reuses_the_compile_layer(
    ctx: api.Context, engine: Engine, built: EntryResult, sibling_partial: str
) -> EntryResult:
    """Build the default entry in ``ctx`` with the sibling recorded there as a stopped build that
    committed ``sibling_partial``: it must come wholly from the cache, its compile step included."""
    (sibling,) = api.plan(ctx, filters=["3.14-freethreaded-trixie-amd64"], profile="quick")
    (spec,) = api.plan(ctx, filters=[ENTRY], profile="quick")
    report = Report.load(ctx.report_path)
    recorded = report.entries.get(sibling.key) or EntryResult(
        key=sibling.key,
        id=sibling.id,
        profile="quick",
        version=sibling.version,
        variant=sibling.variant.name,
        platform=sibling.platform.name,
    )
    report.update(replace(recorded, partial_image_id=sibling_partial))
    report.save()
    try:
        with Progress(total=1, heartbeat=0) as progress:
            (again,) = api.build(ctx, engine, [spec], BuildOptions(), progress)
    finally:
        report = Report.load(ctx.report_path)
        report.update(recorded)
        report.save()
    assert again.passed, again.problems
    assert again.artifact_image_id == built.artifact_image_id
    assert again.image_id == built.image_id
    text = Path(again.log or "").read_text()
    step = text.index('RUN ["/usr/local/sbin/cpforge-build", "3.14.7"')
    assert text[step:].splitlines()[1].strip() == "---> Using cache"  # not a recompile
    return again


def test_a_siblings_newer_chain_for_the_shared_builder_stage_does_not_make_a_rebuild_recompile(
    ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult], competing_chain: str
) -> None:
    """The legacy builder takes the newest layer matching a step if it lies on any chain the build
    names. With the competing chain recorded as what a stopped build of the freethreaded sibling
    committed, a no-change build of the default entry must still reuse its own layers: CI once
    recompiled it after following the sibling's newer builder stage to a parent its compile layer
    lacks."""
    again = _rebuild_reuses_the_compile_layer(ctx, engine, built_314["default"], competing_chain)
    assert again.reused  # the same image: its earlier smoke verdict stands


def test_a_fresh_workspace_finds_the_entrys_own_chain_on_the_engine(
    engine: Engine, built_314: dict[str, EntryResult], competing_chain: str, test_matrix: Path, tmp_path: Path
) -> None:
    """A fresh clone (or another workspace) on a warm engine has no report naming the entry's chain:
    cpforge finds it by the artifact stage's labels and the entry's tag. Before, such a build named
    only the chains its own report recorded (here the sibling's), and CI, whose workspace is new each
    run, recompiled entries its engine had already built."""
    elsewhere = api.Context.create(test_matrix, root=ROOT, out=tmp_path / "out")
    _rebuild_reuses_the_compile_layer(elsewhere, engine, built_314["default"], competing_chain)


def test_a_fresh_workspace_reuses_the_releases_build_python_stage(
    engine: Engine, built_arm64: dict[str, EntryResult], competing_chain: str, test_matrix: Path, tmp_path: Path
) -> None:
    """The build-python stage names its newest labelled build as its cache source. Before, it named
    none, the engine followed the newest copy of the stage's first step (`COPY install-build-deps.sh`,
    which the competing chain, or in CI the Ctrl-C test's `--no-cache` build, had just made), and the
    build python was compiled again: 4 minutes of every warm CI run."""
    elsewhere = api.Context.create(test_matrix, root=ROOT, out=tmp_path / "out")
    (spec,) = api.plan(elsewhere, filters=[ARM64_ENTRY], profile="quick")
    files: dict[str, bytes | Path] = {"Dockerfile": elsewhere.renderer.dockerfile(spec).encode()}
    files.update({rel: ROOT / rel for rel in CONTEXT_SCRIPTS})
    files[f"sources/{spec.source.filename}"] = ROOT / "sources" / spec.source.filename
    with Progress(total=1, heartbeat=0) as progress:
        builder = Builder(
            engine,
            elsewhere.ws,
            elsewhere.renderer,
            elsewhere.sources(progress),
            Report(tmp_path / "r.json"),
            progress,
            BuildOptions(),
        )
        amd64 = Platform(name="linux/amd64")
        with (tmp_path / "build-python.log").open("w") as log:
            image = builder.build_python_stage(
                spec,
                context_tar(files),
                engine,
                amd64,
                platform=amd64.name,
                buildargs={"BUILDER_ARCH": "amd64"},
                log=log,
            )
    assert image == built_arm64[ARM64_ENTRY].build_python_image_id
    text = (tmp_path / "build-python.log").read_text()
    step = text.index('RUN ["/usr/local/sbin/cpforge-build-python", "3.14.7", "arm64"]')
    assert text[step:].splitlines()[1].strip() == "---> Using cache"  # not compiled again
