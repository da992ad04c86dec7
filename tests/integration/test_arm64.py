"""linux/arm64 images cross-compiled on x86_64, proven on aarch64 code under QEMU."""

from __future__ import annotations

import pytest

from cpforge.engine import Engine
from cpforge.report import EntryResult

pytestmark = pytest.mark.integration


def test_arm64_entry_passes_the_same_smoke_test(
    built_arm64: dict[str, EntryResult], built_313: dict[str, EntryResult]
) -> None:
    res = built_arm64["3.13-freethreaded-trixie-arm64"]
    assert res.status == "passed", (res.problems, res.log)
    f = res.facts
    assert f["machine"] == "aarch64" and f["elf_machine"] == "aarch64"
    assert f["soabi"] == "cpython-313t-aarch64-linux-gnu"
    # the same variant facts as on amd64
    amd = built_313["freethreaded"].facts
    for key in ("version", "py_gil_disabled", "gil_enabled", "jit_built", "failed_imports", "pyc_files", "threads_ok"):
        assert f[key] == amd[key], key


def test_arm64_image_metadata_and_binary(engine: Engine, built_arm64: dict[str, EntryResult]) -> None:
    res = built_arm64["3.13-freethreaded-trixie-arm64"]
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
    import tarfile
    from pathlib import Path

    res = built_arm64["3.13-freethreaded-trixie-arm64"]
    with tarfile.open(Path(res.artifact["path"])) as tar:
        member = tar.extractfile("usr/local/bin/python3.13t")
        assert member is not None
        head = member.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 0xB7
    assert "libssl3t64" in res.runtime_packages
