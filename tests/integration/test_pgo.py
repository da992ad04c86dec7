"""The release profile's mechanics, small enough for CI, on 3.14 as its release profile builds it: with
clang-19 and the tail-call interpreter. A PGO build with a shared libpython and a static interpreter
trains and exports its clang profile (code.profclangd), `invoke lock` pins it, a clean rebuild from the
pinned profile gives the same bits, `--locked` refuses a changed profile, a program embedding
libpython3.14.so runs, and a C extension builds with the system gcc, which sysconfig names (the image
has no clang), and imports, in the image and from the provisioned tarball. (The real
release profile trains on the whole test suite with LTO: about 30 minutes, run by hand and in
`invoke bench speed`. LTO is left out here: ThinLTO links libpython and python twice over, which
doubles the cost of this test on a 2-core runner; and CPython's own objects compile at -O0: what is
tested is how the profile is trained, pinned and reused, which needs no optimised code.)"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine, context_tar
from cpforge.lock import LockError
from cpforge.progress import Progress
from cpforge.provision import provision
from cpforge.report import EntryResult, Report
from cpforge.verify import verify

from .conftest import BASE_URL, matrix_text, repo_copy
from .test_provision import EXT_C, EXT_CHECK

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
    cflags-nodist: [-O0, -g0]     # after OPT's -O3 -g: mechanics need no optimised code; a third of the compile
    builtin-modules: [math, _json]
    overrides:                    # as the release profile builds 3.14: clang-19, the tail-call interpreter
      "3.14-*-trixie-*":
        compiler: clang-19
        configure: [--enable-optimizations, --with-tail-call-interp]
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
    # It trained with clang: the exported profile is llvm-profdata's merged code.profclangd, alone.
    # (Checked on the artifact, not the build log: a warm layer cache replays the build without
    # printing it.)
    with tarfile.open(str(trained.pgo_profile["path"])) as tar:
        members = tar.getmembers()
        profile = tar.extractfile(members[0])
        assert profile is not None
        data = profile.read()
    assert [m.name for m in members] == ["code.profclangd"]
    assert members[0].uid == 0 and members[0].mtime == 1785888000  # epoch-stamped, uid 0
    assert data.startswith(b"\xfflprofi\x81")  # LLVM's indexed profile magic
    assert b"_PyEval_EvalFrameDefault" in data or b"ceval.c" in data


INTERPRETER = """
import json, sys, sysconfig
v = sysconfig.get_config_var
print(json.dumps({"version": sys.version, "tail_call": v("Py_TAIL_CALL_INTERP"), "config_args": v("CONFIG_ARGS"),
                  **{k: v(k) for k in ("CC", "CXX", "LDSHARED", "AR", "CFLAGS", "LDFLAGS", "CCSHARED")}}))
"""


def test_it_is_clangs_tail_call_interpreter_and_sysconfig_names_the_system_compiler(
    engine: Engine, trained: EntryResult
) -> None:
    assert trained.image_id
    res = engine.run(trained.image_id, ["python3", "-c", INTERPRETER])
    assert res.exit_code == 0, res.stderr
    facts = json.loads(res.stdout)
    assert "Clang 19." in facts["version"], facts["version"]
    assert facts["tail_call"] == 1
    assert "'CC=clang-19'" in facts["config_args"]  # how it was built stays on record ...
    # ... but extension builds run gcc, with flags gcc knows (no LTO/PGO flags: those are *_NODIST)
    assert (facts["CC"], facts["CXX"], facts["AR"]) == ("gcc", "g++", "ar")
    assert facts["LDSHARED"].split()[:2] == ["gcc", "-shared"]
    flags = " ".join(facts[k] for k in ("CC", "CXX", "LDSHARED", "AR", "CFLAGS", "LDFLAGS", "CCSHARED"))
    assert "clang" not in flags and "llvm" not in flags and "-flto" not in flags and "profile" not in flags


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
    assert res.reproducible
    # the tagged image was not touched by the rebuild
    assert trained.tags and engine.image_id(trained.tags[0]) == trained.image_id


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


@pytest.fixture(scope="module")
def with_gcc(engine: Engine, trained: EntryResult, workdir: Path) -> str:
    """The runtime image plus what a user adds to build C code: Debian's gcc (not clang)."""
    assert trained.image_id
    dockerfile = (
        f"FROM {trained.image_id}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev "
        "&& rm -rf /var/lib/apt/lists/*\n"
    ).encode()
    with (workdir / "pgo-gcc.log").open("w") as log:
        return engine.build(context_tar({"Dockerfile": dockerfile}), log=log)


# What setuptools (distutils' customize_compiler) runs: sysconfig's CC CFLAGS CCSHARED to compile, its
# LDSHARED to link. (setuptools itself is not on the runtime image, and the test runs offline.)
BUILD_EXT = """
import os, shlex, subprocess, sys, sysconfig
var = lambda name: shlex.split(sysconfig.get_config_var(name) or "")
so = "cpforge_ext" + sysconfig.get_config_var("EXT_SUFFIX")
include = "-I" + sysconfig.get_paths()["include"]
for cmd in ([*var("CC"), *var("CFLAGS"), *var("CCSHARED"), include, "-c", "/t/ext.c", "-o", "ext.o"],
            [*var("LDSHARED"), "ext.o", "-o", so]):
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
sys.path.insert(0, os.getcwd())
import cpforge_ext
assert cpforge_ext.add(40, 2) == 42
print("EXT-OK", cpforge_ext.__file__)
"""


def test_a_c_extension_builds_with_sysconfigs_compiler_and_imports_in_the_runtime_image(
    engine: Engine, with_gcc: str
) -> None:
    script = (
        "set -e; if command -v clang-19 clang; then echo 'a clang is installed'; exit 1; fi; "
        "mkdir /tmp/ext && cd /tmp/ext && python3 /t/build_ext.py"
    )
    files = {"t/ext.c": EXT_C.encode(), "t/build_ext.py": BUILD_EXT.encode()}
    res = engine.run(with_gcc, ["bash", "-c", script], files=files)
    assert res.exit_code == 0, res.stdout + res.stderr
    commands = [ln for ln in res.stdout.splitlines() if ln.startswith("+ ")]
    assert [c.split()[1] for c in commands] == ["gcc", "gcc"]  # sysconfig's CC and LDSHARED: gcc
    assert "EXT-OK /tmp/ext/cpforge_ext.cpython-314-x86_64-linux-gnu.so" in res.stdout


def test_a_c_extension_builds_against_the_provisioned_tarball(
    engine: Engine, pgo_ctx: api.Context, trained: EntryResult, workdir: Path
) -> None:
    """The tarball cpforge provisions from this build, unpacked on the base image with gcc only."""
    specs = api.plan(pgo_ctx, filters=[ENTRY], profile=PROFILE)
    (tarball,) = provision(engine, Report.load(pgo_ctx.report_path), specs, workdir / "pgo-dist", BASE_URL).tarballs
    dockerfile = (
        f"FROM {specs[0].base_image}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev "
        "&& rm -rf /var/lib/apt/lists/*\n"
    ).encode()
    with (workdir / "pgo-base-gcc.log").open("w") as log:
        image = engine.build(context_tar({"Dockerfile": dockerfile}), log=log)
    files = {"t/python.tar.gz": tarball.path.read_bytes(), "t/ext.c": EXT_C.encode()}
    res = engine.run(image, ["bash", "-c", EXT_CHECK], files=files)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "EXT-OK" in res.stdout


def test_a_program_embeds_the_shipped_libpython(engine: Engine, with_gcc: str) -> None:
    image = with_gcc
    script = (
        "set -e; gcc $(python3.14-config --cflags --embed) /t/embed.c -o /tmp/embed "
        "$(python3.14-config --ldflags --embed); ldd /tmp/embed | grep libpython; /tmp/embed"
    )
    res = engine.run(image, ["bash", "-c", script], files={"t/embed.c": EMBED_C.encode()})
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "libpython3.14.so.1.0 => /usr/local/lib/libpython3.14.so.1.0" in res.stdout
    assert "EMBED-OK [3, 14]" in res.stdout
