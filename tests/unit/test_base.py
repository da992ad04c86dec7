"""Emulation preflight: a missing or wrong binfmt registration is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpforge.base import check_emulation, host_arch
from cpforge.errors import BaseImageError
from cpforge.matrix import Platform

FOREIGN = Platform(name="linux/arm64" if host_arch() == "amd64" else "linux/amd64")


def test_native_platform_needs_nothing(tmp_path: Path) -> None:
    check_emulation(Platform(name=f"linux/{host_arch()}"), tmp_path)


def test_missing_registration_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BaseImageError) as err:
        check_emulation(FOREIGN, tmp_path)
    assert "qemu-user-static" in str(err.value) and "update-binfmts" in str(err.value)


def test_registration_without_f_flag_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"qemu-{FOREIGN.machine}").write_text("enabled\ninterpreter /usr/bin/qemu\nflags: P\n")
    with pytest.raises(BaseImageError, match="F flag"):
        check_emulation(FOREIGN, tmp_path)
    (tmp_path / f"qemu-{FOREIGN.machine}").write_text("enabled\ninterpreter /usr/bin/qemu\nflags: PF\n")
    check_emulation(FOREIGN, tmp_path)
