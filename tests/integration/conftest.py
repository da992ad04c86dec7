"""Session fixtures for real-engine tests: every image is built once per run and shared.

These tests need a running Docker engine (see README) and reach the Debian mirror. Images are
tagged under the `cpforge-test/python` repository so they never clobber a user's own images.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine
from cpforge.progress import Progress
from cpforge.provision import Provisioned, provision
from cpforge.report import EntryResult, Report

from .fleet_engines import SSHD, SecondDockerd, Sshd

ROOT = Path(__file__).resolve().parents[2]
TEST_REPOSITORY = "cpforge-test/python"
AMD64_314 = "3.14-*-trixie-amd64"  # default, freethreaded, jit (3.14 refuses freethreaded-jit)
INERT_JIT_313 = "3.13-freethreaded-jit-trixie-amd64"  # 3.13's own difference: a JIT built in that never runs


def matrix_text(**replace: str) -> str:
    text = (ROOT / "matrix.yaml").read_text()
    text = text.replace("repository: cpforge/python", f"repository: {TEST_REPOSITORY}")
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def repo_copy(root: Path, matrix: str) -> api.Context:
    """A copy of the repository (templates, scripts, pgo/, the source cache) whose matrix.yaml is
    ``matrix``, with its own rendered Dockerfiles: for matrices that change what is built."""
    for d in ("templates", "scripts"):
        shutil.copytree(ROOT / d, root / d)
    (root / "pgo").mkdir()
    shutil.copy(ROOT / "pgo" / "README.md", root / "pgo" / "README.md")
    (root / "sources").symlink_to(ROOT / "sources", target_is_directory=True)
    (root / "matrix.yaml").write_text(matrix)
    ctx = api.Context.create(root / "matrix.yaml", root=root, out=root / "out")
    api.render_dockerfiles(ctx)
    return ctx


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
    ctx = api.Context.create(test_matrix, root=ROOT, out=workdir / "out")
    api.render_dockerfiles(ctx)  # its own dockerfiles/, beside it (the same text as the repository's)
    return ctx


INTERRUPTED_ENTRY = "3.14-jit-trixie-amd64"


@dataclass(frozen=True)
class Interruption:
    """What `invoke build` did when it got SIGINT in the middle of `make`."""

    returncode: int | None
    seconds_to_exit: float  # from the signal to the process's exit
    output: str
    report_entry: dict[str, object]  # the entry as report.json said right after the exit
    tagged: list[str]  # the entry's tags that exist afterwards
    build_containers: list[str]  # containers still running the entry's build afterwards


def start_invoke(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`invoke ARGS` from the repository root in a process group of its own, so that a test can send
    it SIGINT as a terminal's Ctrl-C does; stdout and stderr on one pipe. SIGINT is reset to default
    in it: a harness started in the background (`cmd &`, nohup) ignores SIGINT, and an ignored signal
    stays ignored in its children, which would then go on building."""
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _make_started(log: Path) -> bool:
    return log.exists() and "] make -j" in log.read_text(errors="replace")


@pytest.fixture(scope="session")
def interrupted_build(ctx: api.Context, engine: Engine, test_matrix: Path) -> Interruption:
    """`invoke build` of the 3.14 jit entry, sent SIGINT (to its process group, as a terminal's Ctrl-C
    is) once its build is in `make`. Records what happened; tests/integration/test_interrupt.py
    judges it, and `built_314` then builds the entry again from the layer cache. `--no-cache`: a warm
    engine holds the entry's chain from an earlier run, which would leave no `make` to interrupt."""
    (spec,) = api.plan(ctx, filters=[INTERRUPTED_ENTRY], profile="quick")
    for tag in spec.tags:
        engine.remove_image(tag)
    log = ctx.ws.log_path(spec)
    log.unlink(missing_ok=True)
    began = int(time.time()) - 1  # containers are told apart from other builds' by when they were made
    args = ["build", "--filter", spec.id, "--profile", "quick", "--no-cache", "--matrix-file", str(test_matrix)]
    proc = start_invoke([*args, "--out", str(ctx.ws.out)])
    deadline = time.monotonic() + 1800
    while not _make_started(log) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(10)  # well inside make: compilers are running
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    exited = time.monotonic() - sent
    entries = json.loads(ctx.report_path.read_text())["entries"] if ctx.report_path.exists() else []
    entry: dict[str, Any] = next((e for e in entries if e["key"] == spec.key), {})
    containers = [
        c["Id"]
        for c in engine.api.containers(all=True)
        if "cpforge-build 3.14.7 --enable-experimental-jit" in c["Command"] and int(c["Created"]) >= began
    ]
    return Interruption(
        returncode=proc.returncode,
        seconds_to_exit=exited,
        output=output,
        report_entry=entry,
        tagged=[t for t in spec.tags if engine.image_id(t) is not None],
        build_containers=containers,
    )


def build(ctx: api.Context, engine: Engine, filters: list[str], jobs: int = 1) -> list[EntryResult]:
    specs = api.plan(ctx, filters=filters, profile="quick")
    with Progress(total=len(specs), heartbeat=60) as progress:
        return api.build(ctx, engine, specs, BuildOptions(jobs=jobs, keep_going=True), progress)


ARM64_ENTRY = "3.14-freethreaded-trixie-arm64"
BULLSEYE_ENTRY = "3.14-default-bullseye-amd64"
QUICK_BUILDS = [AMD64_314, ARM64_ENTRY, BULLSEYE_ENTRY, INERT_JIT_313]  # what `built_quick` builds


@pytest.fixture(scope="session")
def built_quick(ctx: api.Context, engine: Engine, interrupted_build: object) -> dict[str, EntryResult]:
    """Every quick-profile entry the suite shares, built, smoke-tested and tagged in one `invoke build
    --jobs 2`, as a user's `--matrix` run is: one entry's single-core phases (base bootstrap, build
    deps, configure, install, smoke test, the arm64 one under QEMU) overlap another's make. (After
    `interrupted_build` stopped the 3.14 jit entry's first build mid-make: this build of it continues
    from the layer cache.) Entry id → its result."""
    results = build(ctx, engine, QUICK_BUILDS, jobs=2)
    assert len(results) == 6, [r.key for r in results]
    return {r.id: r for r in results}


@pytest.fixture(scope="session")
def built_314(built_quick: dict[str, EntryResult]) -> dict[str, EntryResult]:
    """CPython 3.14 for linux/amd64 on trixie: default, freethreaded and jit. Variant → its result."""
    return {r.variant: r for r in built_quick.values() if fnmatch.fnmatch(r.id, AMD64_314)}


@pytest.fixture(scope="session")
def built_313(built_quick: dict[str, EntryResult]) -> EntryResult:
    """3.13's free-threaded + JIT build: it compiles the JIT in but never runs it."""
    return built_quick[INERT_JIT_313]


def image_refs(engine: Engine) -> set[str]:
    """Every image id and tag the engine has: to prove a refused run left nothing behind."""
    refs: set[str] = set()
    for img in engine.api.images(all=True):
        refs.add(img["Id"])
        refs.update(img.get("RepoTags") or [])
    return refs


@pytest.fixture(scope="session")
def built_bullseye(built_quick: dict[str, EntryResult]) -> EntryResult:
    """3.14 default on Debian bullseye (glibc 2.31): the portable build CI runners are provisioned from."""
    return built_quick[BULLSEYE_ENTRY]


@pytest.fixture(scope="session")
def built_arm64(built_quick: dict[str, EntryResult]) -> dict[str, EntryResult]:
    """3.14 free-threaded for linux/arm64: cross-compiled on amd64 (its build python from the release's
    build-python stage), smoke-tested under QEMU. Entry id → its result."""
    return {ARM64_ENTRY: built_quick[ARM64_ENTRY]}


PROVISIONED = [  # what `provisioned` makes tarballs of
    "3.14-default-trixie-amd64",
    "3.14-freethreaded-trixie-amd64",
    "3.14-freethreaded-trixie-arm64",
    "3.14-default-bullseye-amd64",
]
BASE_URL = "http://127.0.0.1:8999/py"  # where `provisioned`'s manifests say the tarballs are


@pytest.fixture(scope="session")
def provisioned(
    ctx: api.Context,
    engine: Engine,
    built_314: dict[str, EntryResult],
    built_arm64: dict[str, EntryResult],
    built_bullseye: EntryResult,
    workdir: Path,
) -> dict[str, Provisioned]:
    """`invoke provision` of PROVISIONED into workdir/dist, with BASE_URL: entry id → its tarball."""
    specs = api.plan(ctx, filters=PROVISIONED, profile="quick")
    done = provision(engine, Report.load(ctx.report_path), specs, workdir / "dist", BASE_URL).tarballs
    return {p.key.split("@")[0]: p for p in done}


# ------------------------------------------------------------------------------------ fleet engines


@pytest.fixture(scope="session")
def second_dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondDockerd]:
    """A second Docker engine on this machine, started here (its own data-root, exec-root, pidfile,
    unix socket, and a TLS tcp:// endpoint on 127.0.0.1); stopped, and its directories removed, after."""
    assert shutil.which("dockerd"), "dockerd is required (apt-get install docker.io)"
    daemon = SecondDockerd(tmp_path_factory.mktemp("dockerd2"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(daemon.data, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """Debian's sshd on 127.0.0.1 (a free port, its own host key, config and one client key), through
    which ssh://USER@127.0.0.1:PORT reaches this machine's main engine; its HOME holds the client's ~/.ssh."""
    assert SSHD.exists(), "sshd is required: apt-get install openssh-server (./dev setup --for test)"
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
