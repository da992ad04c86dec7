"""Session fixtures for real-engine tests: every image is built once per run and shared.

These tests need a running Docker engine (see README) and reach the Debian mirror. Images are
tagged under the `cpforge-test/python` repository so they never clobber a user's own images.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine
from cpforge.progress import Progress
from cpforge.report import EntryResult

ROOT = Path(__file__).resolve().parents[2]
TEST_REPOSITORY = "cpforge-test/python"
AMD64_313 = "3.13-*-amd64"


def matrix_text(**replace: str) -> str:
    text = (ROOT / "matrix.yaml").read_text()
    text = text.replace("repository: cpforge/python", f"repository: {TEST_REPOSITORY}")
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine.connect(os.environ.get("CPFORGE_TEST_ENGINE") or None)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cpforge")


@pytest.fixture(scope="session")
def test_matrix(workdir: Path) -> Path:
    path = workdir / "matrix.yaml"
    path.write_text(matrix_text())
    return path


@pytest.fixture(scope="session")
def ctx(test_matrix: Path, workdir: Path) -> api.Context:
    return api.Context.create(test_matrix, root=ROOT, out=workdir / "out")


@pytest.fixture(scope="session")
def built_313(ctx: api.Context, engine: Engine) -> Iterator[dict[str, EntryResult]]:
    """All four 3.13 variants for linux/amd64, quick profile: built, smoke-tested, tagged."""
    specs = api.plan(ctx, filters=[AMD64_313], profile="quick")
    assert len(specs) == 4
    with Progress(total=len(specs), heartbeat=60) as progress:
        results = api.build(ctx, engine, specs, BuildOptions(jobs=1, keep_going=True), progress)
    yield {r.variant: r for r in results}


def image_refs(engine: Engine) -> set[str]:
    """Every image id and tag the engine has: to prove a refused run left nothing behind."""
    refs: set[str] = set()
    for img in engine.api.images(all=True):
        refs.add(img["Id"])
        refs.update(img.get("RepoTags") or [])
    return refs


ARM64_ENTRIES = ["3.13-freethreaded-trixie-arm64"]
BULLSEYE_ENTRY = "3.13-default-bullseye-amd64"


@pytest.fixture(scope="session")
def built_bullseye(ctx: api.Context, engine: Engine) -> EntryResult:
    """3.13 default on Debian bullseye (glibc 2.31): the portable build CI runners are provisioned from."""
    specs = api.plan(ctx, filters=[BULLSEYE_ENTRY], profile="quick")
    with Progress(total=len(specs), heartbeat=60) as progress:
        (result,) = api.build(ctx, engine, specs, BuildOptions(jobs=1, keep_going=True), progress)
    return result


@pytest.fixture(scope="session")
def built_arm64(ctx: api.Context, engine: Engine) -> dict[str, EntryResult]:
    """3.13 free-threaded for linux/arm64: cross-compiled on amd64, smoke-tested under QEMU."""
    specs = api.plan(ctx, filters=ARM64_ENTRIES, profile="quick")
    with Progress(total=len(specs), heartbeat=60) as progress:
        results = api.build(ctx, engine, specs, BuildOptions(jobs=1, keep_going=True), progress)
    return {r.id: r for r in results}
