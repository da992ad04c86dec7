"""uv installs cpforge's interpreters: the real uv from PyPI, in a clean trixie container without a
network, reads the download-metadata.json `invoke provision` wrote, then downloads, checks, unpacks and
rewrites the tarballs it names, makes a venv with them and installs a wheel into it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cpforge.engine import Engine
from cpforge.provision import Provisioned

from .conftest import BASE_URL
from .test_provision import tiny_wheel

pytestmark = pytest.mark.integration
UV_VERSION = "0.13.9"
UV_WHEEL_PLATFORM = "manylinux_2_17_x86_64"  # glibc 2.17: runs on every base cpforge builds on
TRIXIE = "cpforge/debian:trixie-amd64"  # glibc 2.41: runs every amd64 tarball cpforge provisions
MIRROR = "file:///t/dist"  # where the container finds the files
DEFAULT_KEY = "cpython-3.14.7-linux-x86_64-gnu"
FREETHREADED_KEY = "cpython-3.14.7+freethreaded-linux-x86_64-gnu"
WHEEL = "cpforge_probe-1.0-py3-none-any.whl"

SCRIPT = r"""
set -euo pipefail
export UV_PYTHON_DOWNLOADS_JSON_URL="$MIRROR/$JSON" UV_PYTHON_INSTALL_DIR=/opt/uv-python UV_CACHE_DIR=/tmp/uv-cache
export UV_PYTHON_PREFERENCE=only-managed UV_NO_CONFIG=1 NO_COLOR=1
chmod 755 /t/uv && /t/uv --version
# the JSON's sha256 is checked: the same entries with other hashes install nothing
zeros=$(printf '0%.0s' $(seq 64))
sed "s/\"sha256\": \"[0-9a-f]*\"/\"sha256\": \"$zeros\"/g" "/t/dist/$JSON" > /tmp/wrong-hash.json
if UV_PYTHON_DOWNLOADS_JSON_URL=/tmp/wrong-hash.json UV_PYTHON_INSTALL_DIR=/tmp/refused \
    /t/uv python install "$REQUEST" > /tmp/refused.log 2>&1; then
  echo "a tarball whose hash is not the JSON's was installed"; exit 1
fi
grep -i "hash mismatch" /tmp/refused.log
start=$(date +%s%N)
/t/uv python install "$REQUEST"
echo "INSTALL_MS $(( ($(date +%s%N) - start) / 1000000 ))"
py=$(/t/uv python find "$REQUEST")
"$py" - <<'EOF'
import glob, json, os, sys, sysconfig
home = os.path.join("/opt/uv-python", os.environ["KEY"])
data = glob.glob(os.path.join(home, "lib", "python3.14*", "_sysconfigdata_*.py"))
include = sysconfig.get_config_var("INCLUDEPY")
print("FACTS " + json.dumps({
    "executable": sys.executable,
    "version": sys.version.split()[0],
    "gil": sys._is_gil_enabled(),
    "Py_GIL_DISABLED": sysconfig.get_config_var("Py_GIL_DISABLED"),
    "PYTHON_BUILD_STANDALONE": sysconfig.get_config_var("PYTHON_BUILD_STANDALONE"),
    "include": include,
    "Python.h": os.path.isfile(os.path.join(include, "Python.h")),
    "sysconfig_paths_include": sysconfig.get_paths()["include"],
    "sysconfigdata": [open(p).read() for p in data],
    "built_from": json.load(open(os.path.join(home, "PYTHON.json")))["entry"],
    "BUILD": open(os.path.join(home, "BUILD")).read().strip(),
}))
EOF
/t/uv venv --python "$REQUEST" /tmp/venv
/t/uv pip install --python /tmp/venv/bin/python --no-index --offline "/t/$WHEEL"
/tmp/venv/bin/python - <<'EOF'
import cpforge_probe, json, ssl, sqlite3, sys
venv = {"probe": cpforge_probe.VALUE, "gil": sys._is_gil_enabled(), "prefix": sys.prefix, "base": sys.base_prefix}
print("VENV " + json.dumps(venv))
EOF
"""


@dataclass(frozen=True)
class UvRun:
    """What happened in the container."""

    entry: dict[str, Any]  # the JSON's entry for the requested interpreter, as provision wrote it
    facts: dict[str, Any]  # the interpreter uv installed, about itself
    venv: dict[str, Any]  # the venv uv made with it, after `uv pip install` of the wheel
    install_ms: int  # `uv python install` alone
    output: str


def download_uv(dest: Path) -> bytes:
    """The uv binary from its PyPI wheel (a manylinux build: runs in the container as it is)."""
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", UV_WHEEL_PLATFORM]
    subprocess.run(
        [*pip, f"uv=={UV_VERSION}", "-d", str(dest)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dest.glob(f"uv-{UV_VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.read(f"uv-{UV_VERSION}.data/scripts/uv")


@pytest.fixture(scope="module")
def uv_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return download_uv(tmp_path_factory.mktemp("uv"))


def run_uv(
    engine: Engine, dist: Path, json_path: str, request: str, key: str, uv: bytes, base_url: str = BASE_URL
) -> UvRun:
    """`uv python install <request>`, `uv venv` and `uv pip install` in a clean trixie container, with
    the uv JSON provision wrote at ``json_path`` in ``dist``. Its URLs say ``base_url``; the container
    has the files at `MIRROR` instead, so that prefix, and nothing else, is swapped."""
    entries = json.loads((dist / json_path).read_text())
    entry = entries[key]
    assert entry["url"].startswith(f"{base_url}/"), entry["url"]
    filename = entry["url"].removeprefix(f"{base_url}/")
    moved = {k: {**e, "url": MIRROR + e["url"].removeprefix(base_url)} for k, e in entries.items()}
    res = engine.run(
        TRIXIE,
        ["bash", "-c", SCRIPT],
        files={
            "t/uv": uv,
            f"t/dist/{json_path}": json.dumps(moved).encode(),
            f"t/dist/{filename}": (dist / filename).read_bytes(),
            f"t/{WHEEL}": tiny_wheel(),
        },
        environment={"MIRROR": MIRROR, "JSON": json_path, "REQUEST": request, "KEY": key, "WHEEL": WHEEL},
        timeout=600,
    )
    output = res.stdout + res.stderr
    assert res.exit_code == 0, output
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in res.stdout.splitlines() if " " in line}
    return UvRun(entry, json.loads(lines["FACTS"]), json.loads(lines["VENV"]), int(lines["INSTALL_MS"]), output)


def check_installed(run: UvRun, freethreaded: bool, built_from: str, tarball: Provisioned) -> None:
    """The interpreter uv installed is the tarball the JSON names, relocated to where uv put it."""
    t = "t" if freethreaded else ""
    home = f"/opt/uv-python/{DEFAULT_KEY if not freethreaded else FREETHREADED_KEY}"
    assert run.entry["url"] == f"{BASE_URL}/{tarball.filename}" and run.entry["sha256"] == tarball.sha256
    assert run.entry["variant"] == ("freethreaded" if freethreaded else None)
    facts = run.facts
    assert facts["built_from"] == built_from and facts["BUILD"] == run.entry["build"]
    assert facts["version"] == "3.14.7" and facts["executable"].endswith(f"/bin/python3.14{t}")
    assert facts["gil"] is not freethreaded and facts["Py_GIL_DISABLED"] == (1 if freethreaded else 0)
    # uv parsed cpforge's sysconfig data and rewrote it for its install directory
    (data,) = facts["sysconfigdata"]
    assert data.startswith("# system configuration generated and used by the sysconfig module\nbuild_time_vars = {")
    assert "_cpforge_prefix" not in data and facts["PYTHON_BUILD_STANDALONE"] == 1
    assert facts["include"] == f"{home}/include/python3.14{t}" and facts["Python.h"]
    assert "/install/" not in data and "/usr/local/include" not in data
    venv = run.venv
    assert venv["probe"] == 42 and venv["gil"] is not freethreaded
    assert venv["prefix"] == "/tmp/venv" and venv["base"].startswith("/opt/uv-python/cpython-3.14")


def test_provision_writes_uv_json_with_the_slot_rules_picks(provisioned: dict[str, Provisioned], workdir: Path) -> None:
    dist = workdir / "dist"
    main = json.loads((dist / "download-metadata.json").read_text())
    assert set(main) == {DEFAULT_KEY, FREETHREADED_KEY, "cpython-3.14.7+freethreaded-linux-aarch64-gnu"}
    # uv cannot tell hosts apart by glibc: the default JSON gives the build that runs on the most
    # runners (bullseye's); a runner OS's own JSON gives what versions-manifest.json gives it
    assert main[DEFAULT_KEY]["url"] == f"{BASE_URL}/{provisioned['3.14-default-bullseye-amd64'].filename}"
    trixie = json.loads((dist / "uv/debian-13/download-metadata.json").read_text())
    assert trixie[DEFAULT_KEY]["url"] == f"{BASE_URL}/{provisioned['3.14-default-trixie-amd64'].filename}"
    older = json.loads((dist / "uv/ubuntu-22.04/download-metadata.json").read_text())
    assert set(older) == {DEFAULT_KEY} and older[DEFAULT_KEY] == main[DEFAULT_KEY]
    for entries in (main, trixie, older):
        for key, e in entries.items():
            p = next(p for p in provisioned.values() if e["url"] == f"{BASE_URL}/{p.filename}")
            assert e["sha256"] == p.sha256 and e["build"] == f"cpforge.{p.sha256[:12]}", key


@pytest.mark.parametrize(
    ("json_path", "request_", "key", "built_from"),
    [
        ("download-metadata.json", "3.14", DEFAULT_KEY, "3.14-default-bullseye-amd64"),
        ("download-metadata.json", "3.14t", FREETHREADED_KEY, "3.14-freethreaded-trixie-amd64"),
        ("uv/debian-13/download-metadata.json", "3.14", DEFAULT_KEY, "3.14-default-trixie-amd64"),
    ],
)
def test_uv_installs_and_uses_the_provisioned_interpreter(
    engine: Engine,
    provisioned: dict[str, Provisioned],
    workdir: Path,
    uv_binary: bytes,
    json_path: str,
    request_: str,
    key: str,
    built_from: str,
) -> None:
    run = run_uv(engine, workdir / "dist", json_path, request_, key, uv_binary)
    print(f"uv {UV_VERSION}: `uv python install {request_}` ({built_from}) took {run.install_ms} ms")
    check_installed(run, key == FREETHREADED_KEY, built_from, provisioned[built_from])
