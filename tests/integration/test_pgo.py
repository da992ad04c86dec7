"""The release profile's mechanics, small enough for CI: a PGO build with a shared libpython and a
static interpreter trains and exports its profile, `invoke lock` pins it, a clean rebuild from the
pinned profile gives the same bits, `--locked` refuses a changed profile, and a program embedding
libpython3.14.so runs. (The real release profile trains on the whole test suite with LTO: about
30 minutes, run by hand and in `invoke bench speed`.)"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine, context_tar
from cpforge.lock import LockError
from cpforge.progress import Progress
from cpforge.report import EntryResult, Report
from cpforge.verify import verify

from .conftest import matrix_text, repo_copy

pytestmark = pytest.mark.integration
ENTRY = "3.14-default-trixie-amd64"
PROFILE = "pgo-ci"
PROFILE_YAML = f"""  {PROFILE}:                 # the release profile's mechanics with a tiny training task, no LTO
    tag-suffix: -pgo-ci
    configure: [--enable-optimizations]
    pgo-task: [-m, test, test_json, test_float]
    shared: true
    static-interpreter: true
    frame-pointers: true
    builtin-modules: [math, _json]
  release:"""


@pytest.fixture(scope="module")
def pgo_ctx(tmp_path_factory: pytest.TempPathFactory) -> api.Context:
    """A copy of the repository whose matrix has the CI profile: lock pins profiles into its pgo/."""
    return repo_copy(tmp_path_factory.mktemp("pgo-repo"), matrix_text(**{"  release:": PROFILE_YAML}))


def _build(ctx: api.Context, engine: Engine, locked: bool = False) -> EntryResult:
    specs = api.plan(ctx, filters=[ENTRY], profile=PROFILE)
    with Progress(total=1, heartbeat=60) as progress:
        (res,) = api.build(ctx, engine, specs, BuildOptions(), progress, locked=locked)
    return res


@pytest.fixture(scope="module")
def trained(pgo_ctx: api.Context, engine: Engine) -> EntryResult:
    return _build(pgo_ctx, engine)


@pytest.fixture(scope="module")
def pinned(pgo_ctx: api.Context, engine: Engine, trained: EntryResult) -> Iterator[Path]:
    specs = api.plan(pgo_ctx, filters=[ENTRY], profile=PROFILE)
    keys, pins = api.lock(pgo_ctx, engine, specs)
    assert keys == [f"{ENTRY}@{PROFILE}"]
    assert pins == [specs[0].pgo_profile]
    assert pins[0].startswith(f"pgo/{ENTRY}.{PROFILE}.") and pins[0].endswith(".tar.xz")
    yield pgo_ctx.ws.root / pins[0]


def test_pgo_build_with_static_interpreter_passes_and_exports_its_profile(trained: EntryResult) -> None:
    assert trained.status == "passed", trained.problems
    assert trained.facts["py_enable_shared"] == 1
    assert trained.facts["libpython_mapped"] == []  # python runs without libpython.so …
    assert "/usr/local/lib/libpython3.14.so.1.0" in trained.facts["libpython_files"]  # … which is shipped
    assert trained.pgo_profile["sha256"] and "pinned" not in trained.pgo_profile
    # builtin-modules: linked in (the smoke test checked sys.builtin_module_names), no .so shipped
    assert {"math", "_json"} <= set(trained.facts["builtin_module_names"])
    assert not {"math", "_json"} & set(trained.facts["dynload_modules"])
    assert "_pickle" in trained.facts["dynload_modules"]  # what the profile does not list stays a .so
    # It trained: the exported profile holds .gcda files. (Checked on the artifact, not the build log:
    # a warm layer cache replays the build without printing it.)
    with tarfile.open(str(trained.pgo_profile["path"])) as tar:
        gcda = [m.name for m in tar.getmembers() if m.name.endswith(".gcda")]
    assert any(name.endswith("Python/ceval.gcda") for name in gcda), gcda[:5]


def test_lock_pins_the_profile_and_a_clean_rebuild_reuses_it_bit_for_bit(
    pgo_ctx: api.Context, engine: Engine, trained: EntryResult, pinned: Path
) -> None:
    assert pinned.exists()
    specs = api.plan(pgo_ctx, filters=[ENTRY], profile=PROFILE)
    with Progress(total=1, heartbeat=60) as progress:
        (res,) = verify(pgo_ctx, engine, specs, progress)
    log = (pgo_ctx.ws.out / "verify" / "logs").glob(f"{ENTRY}.{PROFILE}.log")
    text = next(log).read_text()
    assert "reusing the pinned profile" in text and "Running code to generate profile data" not in text
    assert res.error is None, res.error
    assert res.artifact_same, res.differences
    assert res.layers_same, res.differences


def test_locked_refuses_a_changed_pgo_profile(pgo_ctx: api.Context, engine: Engine, pinned: Path) -> None:
    original = pinned.read_bytes()
    before = Report.load(pgo_ctx.report_path).entries[f"{ENTRY}@{PROFILE}"].image_id
    try:
        pinned.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(LockError) as err:
            _build(pgo_ctx, engine, locked=True)
        assert f"{pinned.relative_to(pgo_ctx.ws.root)}: PGO profile sha256" in str(err.value)
        pinned.unlink()
        with pytest.raises(LockError, match="the pinned PGO profile is missing"):
            _build(pgo_ctx, engine, locked=True)
    finally:
        pinned.write_bytes(original)
    assert Report.load(pgo_ctx.report_path).entries[f"{ENTRY}@{PROFILE}"].image_id == before


EMBED_C = r"""
#include <Python.h>
int main(void) {
    Py_Initialize();
    int rc = PyRun_SimpleString("import sys, json; print('EMBED-OK', json.dumps(sys.version_info[:2]))");
    if (Py_FinalizeEx() < 0) return 120;
    return rc;
}
"""


def test_a_program_embeds_the_shipped_libpython(engine: Engine, trained: EntryResult, workdir: Path) -> None:
    assert trained.image_id
    dockerfile = (
        f"FROM {trained.image_id}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev "
        "&& rm -rf /var/lib/apt/lists/*\n"
    ).encode()
    with (workdir / "embed-gcc.log").open("w") as log:
        image = engine.build(context_tar({"Dockerfile": dockerfile}), log=log)
    script = (
        "set -e; gcc $(python3.14-config --cflags --embed) /t/embed.c -o /tmp/embed "
        "$(python3.14-config --ldflags --embed); ldd /tmp/embed | grep libpython; /tmp/embed"
    )
    res = engine.run(image, ["bash", "-c", script], files={"t/embed.c": EMBED_C.encode()})
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "libpython3.14.so.1.0 => /usr/local/lib/libpython3.14.so.1.0" in res.stdout
    assert "EMBED-OK [3, 14]" in res.stdout
