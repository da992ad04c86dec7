"""Relocatable interpreter tarballs for CI runners, checked in clean containers and by setup-python's code."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from cpforge import api, smoke
from cpforge.engine import Engine, context_tar
from cpforge.provision import Provisioned, ProvisionError, provision
from cpforge.report import EntryResult, Report

from .conftest import BASE_URL, ROOT

pytestmark = pytest.mark.integration
QUERIES = [
    ["3.14", "x64"],
    ["3.14", "x64-freethreaded"],
    ["3.14", "arm64-freethreaded"],
    ["3.14.7", "x64"],
    ["3.12", "x64"],
]


def tiny_wheel() -> bytes:
    """A real, minimal pure-Python wheel (name cpforge_probe)."""
    buf = io.BytesIO()
    files = {
        "cpforge_probe/__init__.py": "VALUE = 42\n",
        "cpforge_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: cpforge-probe\nVersion: 1.0\n",
        "cpforge_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: cpforge\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + "cpforge_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in {**files, "cpforge_probe-1.0.dist-info/RECORD": record}.items():
            z.writestr(name, text)
    return buf.getvalue()


CHECK = r"""
set -euo pipefail
d=$(mktemp -d /opt/unpacked.XXXXXX)
tar -xzf /t/python.tar.gz -C "$d"
"$d/bin/python3" -VV
"$d/bin/python3" -B /t/smoke.py --modules "$MODULES" > /t/facts.json
"$d/bin/pip3" --version
"$d/bin/python3" -m pip install -q --no-index --no-cache-dir /t/cpforge_probe-1.0-py3-none-any.whl
"$d/bin/python3" -c 'import cpforge_probe; assert cpforge_probe.VALUE == 42'
"$d/bin/python3" -m venv /tmp/venv
/tmp/venv/bin/python -c 'import ssl, sqlite3, ctypes, sys; print("venv ok", sys.prefix)'
/tmp/venv/bin/pip --version
mv "$d" /opt/moved-again
/opt/moved-again/bin/python3 -c 'import sysconfig; print(sysconfig.get_config_var("INCLUDEPY"))'
echo ALL-OK
tail -n 1 /t/facts.json
"""


@pytest.mark.parametrize(
    "entry", ["3.14-default-trixie-amd64", "3.14-freethreaded-trixie-amd64", "3.14-default-bullseye-amd64"]
)
def test_tarball_runs_anywhere_in_a_clean_container(
    engine: Engine, ctx: api.Context, entry: str, provisioned: dict[str, Provisioned]
) -> None:
    p = provisioned[entry]
    spec = api.plan(ctx, filters=[entry], profile="quick")[0]
    # The oldest distro the tarball claims (by its glibc): the bare base image, no build deps.
    base = spec.base_image
    res = engine.run(
        base,
        ["bash", "-c", CHECK],
        files={
            "t/python.tar.gz": p.path.read_bytes(),
            "t/smoke.py": (ROOT / "scripts/smoke.py").read_bytes(),
            "t/cpforge_probe-1.0-py3-none-any.whl": tiny_wheel(),
        },
        environment={"MODULES": ",".join(spec.smoke_modules)},
        platform=spec.platform.name,
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "ALL-OK" in res.stdout and "venv ok" in res.stdout
    assert "/opt/moved-again/include/python3.14" in res.stdout  # sysconfig follows the move
    facts = json.loads(res.stdout.strip().splitlines()[-1])  # the smoke test's, run from the tarball
    assert smoke.check(spec, facts) == []


def test_metadata_and_checksums(provisioned: dict[str, Provisioned], workdir: Path) -> None:
    ft = provisioned["3.14-freethreaded-trixie-amd64"].metadata
    assert ft["python_abi_tag"] == "cp314t" and ft["python_exe"] == "bin/python3.14t"
    assert ft["facts"]["gil_enabled"] is False and ft["facts"]["py_gil_disabled"] == 1
    assert ft["source"]["sha256"] == "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
    assert "libssl.so.3" in ft["bundled_libraries"] and ft["glibc_min"].startswith("2.")
    # Built on bullseye, the tarball needs no newer glibc than Ubuntu 22.04 / Debian 11 have.
    old = provisioned["3.14-default-bullseye-amd64"].metadata
    assert tuple(map(int, old["glibc_min"].split("."))) <= (2, 31) < tuple(map(int, ft["glibc_min"].split(".")))
    sums = (workdir / "dist" / "SHA256SUMS").read_text().splitlines()
    for p in provisioned.values():
        assert f"{p.sha256}  {p.filename}" in sums
    arm = provisioned["3.14-freethreaded-trixie-arm64"]
    assert arm.filename == "python-3.14.7-linux-trixie-arm64-freethreaded-quick.tar.gz"
    assert arm.metadata["target_triple"] == "aarch64-unknown-linux-gnu"


def test_arm64_tarball_runs_under_emulation(engine: Engine, provisioned: dict[str, Provisioned]) -> None:
    p = provisioned["3.14-freethreaded-trixie-arm64"]
    res = engine.run(
        "cpforge/debian:trixie-arm64",
        [
            "bash",
            "-c",
            "d=$(mktemp -d) && tar -xzf /t/p.tgz -C $d && $d/bin/python3 -c "
            "'import platform, ssl, sqlite3, sys; print(platform.machine(), sys._is_gil_enabled())'",
        ],
        files={"t/p.tgz": p.path.read_bytes()},
        platform="linux/arm64",
    )
    assert res.exit_code == 0, res.stderr
    assert res.stdout.split() == ["aarch64", "False"]


def test_setup_python_tool_cache_resolves_the_manifest(
    provisioned: dict[str, Provisioned], workdir: Path, tmp_path: Path
) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is required for this test (the real @actions/tool-cache is used)"
    subprocess.run([npm, "init", "-y"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(
        [npm, "install", "--silent", "@actions/tool-cache@4"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    manifest = workdir / "dist" / "versions-manifest.json"

    def resolve(os_version: str) -> dict[str, str | None]:
        proc = subprocess.run(
            [
                "node",
                str(ROOT / "tests/integration/data/find_manifest.mjs"),
                str(tmp_path / "node_modules"),
                str(manifest),
                os_version,
                json.dumps(QUERIES),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))  # ::debug:: lines come first

    found = resolve("13")
    assert found["3.14 x64"] == f"{BASE_URL}/python-3.14.7-linux-trixie-x64-quick.tar.gz"
    assert found["3.14.7 x64"] == found["3.14 x64"]
    assert found["3.14 x64-freethreaded"] == f"{BASE_URL}/python-3.14.7-linux-trixie-x64-freethreaded-quick.tar.gz"
    assert found["3.14 arm64-freethreaded"] == f"{BASE_URL}/python-3.14.7-linux-trixie-arm64-freethreaded-quick.tar.gz"
    assert found["3.12 x64"] is None
    # Older runners get the bullseye build (glibc 2.31); a runner whose glibc is older than any
    # tarball of a variant needs gets nothing rather than a broken interpreter.
    old = resolve("22.04")
    assert old["3.14 x64"] == f"{BASE_URL}/python-3.14.7-linux-bullseye-x64-quick.tar.gz"
    assert old["3.14 x64-freethreaded"] is None
    assert resolve("11")["3.14 x64"] == old["3.14 x64"]


def test_unbuilt_or_failed_entry_is_refused(
    ctx: api.Context, engine: Engine, workdir: Path, built_314: dict[str, EntryResult]
) -> None:
    report = Report.load(ctx.report_path)
    report.entries["3.14-jit-trixie-amd64@quick"].status = "failed"
    specs = api.plan(ctx, filters=["3.14-jit-trixie-amd64", "3.13-default-trixie-amd64"], profile="quick")
    with pytest.raises(ProvisionError) as err:
        provision(engine, report, specs, workdir / "refused", BASE_URL)
    assert "3.14-jit-trixie-amd64@quick: smoke test failed" in str(err.value)
    assert "3.13-default-trixie-amd64@quick: not built" in str(err.value)
    assert not (workdir / "refused").exists()


EXT_CHECK = r"""
set -euo pipefail
d=$(mktemp -d /opt/unpacked.XXXXXX)
tar -xzf /t/python.tar.gz -C "$d"
var() { "$d/bin/python3" -c "import sysconfig, sys; print(sysconfig.get_config_var(sys.argv[1]))" "$1"; }
inc=$("$d/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
case "$inc" in "$d"/*) ;; *) echo "include dir $inc is not under $d"; exit 1 ;; esac
# shellcheck disable=SC2046
gcc -shared -fPIC $(var CFLAGS) -I"$inc" /t/ext.c -o "/tmp/cpforge_ext$(var EXT_SUFFIX)"
cd /tmp && "$d/bin/python3" -c 'import cpforge_ext; assert cpforge_ext.add(40, 2) == 42; print("EXT-OK")'
"""
EXT_C = r"""
#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long x, y;
    if (!PyArg_ParseTuple(args, "ll", &x, &y)) return NULL;
    return PyLong_FromLong(x + y);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "cpforge_ext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_cpforge_ext(void) { return PyModule_Create(&def); }
"""


@pytest.mark.parametrize("entry", ["3.14-default-bullseye-amd64", "3.14-freethreaded-trixie-amd64"])
def test_c_extension_builds_against_the_unpacked_tarball(
    engine: Engine, ctx: api.Context, entry: str, provisioned: dict[str, Provisioned], workdir: Path
) -> None:
    """The base image plus a compiler (nothing else): the tarball's headers and sysconfig suffice."""
    spec = api.plan(ctx, filters=[entry], profile="quick")[0]
    dockerfile = (
        f"FROM {spec.base_image}\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev "
        "&& rm -rf /var/lib/apt/lists/*\n"
    ).encode()
    with (workdir / f"gcc-{spec.distro.name}.log").open("w") as log:
        image = engine.build(context_tar({"Dockerfile": dockerfile}), platform=spec.platform.name, log=log)
    res = engine.run(
        image,
        ["bash", "-c", EXT_CHECK],
        files={"t/python.tar.gz": provisioned[entry].path.read_bytes(), "t/ext.c": EXT_C.encode()},
        platform=spec.platform.name,
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "EXT-OK" in res.stdout
