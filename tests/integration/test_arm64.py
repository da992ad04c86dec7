"""linux/arm64 images cross-compiled on x86_64, proven on aarch64 code under QEMU."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from cpforge.engine import Engine
from cpforge.report import EntryResult

pytestmark = pytest.mark.integration


ENTRY = "3.14-freethreaded-trixie-arm64"


def test_arm64_entry_passes_the_same_smoke_test(
    built_arm64: dict[str, EntryResult], built_314: dict[str, EntryResult]
) -> None:
    res = built_arm64[ENTRY]
    assert res.status == "passed", (res.problems, res.log)
    f = res.facts
    assert f["machine"] == "aarch64" and f["elf_machine"] == "aarch64"
    assert f["soabi"] == "cpython-314t-aarch64-linux-gnu"
    # the same variant facts as on amd64, 3.14's own features included
    amd = built_314["freethreaded"].facts
    same = ("version", "py_gil_disabled", "gil_enabled", "gil_enabled_after_imports", "jit_built", "failed_imports")
    for key in (*same, "pyc_files", "threads_ok", "subinterpreters_ok", "tstring_ok", "zstd_ok"):
        assert f[key] == amd[key], key


def test_the_build_python_is_the_release_built_once_in_its_own_stage(built_arm64: dict[str, EntryResult]) -> None:
    """The cross build ran with a native 3.14.7 from the build-python stage (not Debian's 3.13, and not
    compiled inside the entry's artifact stage). Read from the artifact's own sysconfig, so it holds
    whether the compile ran in this session or its layer came from the cache."""
    res = built_arm64[ENTRY]
    log = Path(res.log or "").read_text()
    stage = log[log.index("AS build-python") : log.index("AS builder")]
    assert 'cpforge-build-python", "3.14.7", "arm64"]' in stage
    with tarfile.open(Path(res.artifact["path"])) as tar:
        name = next(n for n in tar.getnames() if re.fullmatch(r"usr/local/lib/python3\.14t/_sysconfigdata_.*\.py", n))
        member = tar.extractfile(name)
        assert member is not None
        sysconfigdata = member.read().decode()
    config_args = re.search(r"'CONFIG_ARGS': (.*),\n", sysconfigdata)
    assert config_args is not None
    assert "--with-build-python=/opt/cpforge-build-python/bin/python3.14" in config_args[1]
    assert "--host=aarch64-linux-gnu" in config_args[1]


def test_arm64_image_metadata_and_binary(engine: Engine, built_arm64: dict[str, EntryResult]) -> None:
    res = built_arm64[ENTRY]
    assert res.image_id is not None
    info = engine.inspect_image(res.image_id)
    assert info["Architecture"] == "arm64"
    base = engine.inspect_image("cpforge/debian:trixie-arm64")
    assert base["Architecture"] == "arm64"
    # the interpreter file itself is an aarch64 ELF (read its header inside the image, under QEMU)
    probe = (
        "import os,sys; h=open(os.path.realpath(sys.executable),'rb').read(20); "
        "print(h[:4]==b'\\x7fELF', int.from_bytes(h[18:20],'little'))"
    )
    out = engine.run(res.image_id, ["python3", "-c", probe], platform="linux/arm64")
    assert out.exit_code == 0, out.stderr
    assert out.stdout.split() == ["True", str(0xB7)]  # EM_AARCH64


def test_arm64_artifact_holds_aarch64_code(built_arm64: dict[str, EntryResult]) -> None:
    res = built_arm64[ENTRY]
    with tarfile.open(Path(res.artifact["path"])) as tar:
        member = tar.extractfile("usr/local/bin/python3.14t")
        assert member is not None
        head = member.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 0xB7
    assert "libssl3t64" in res.runtime_packages
