"""Emulation preflight: a missing or wrong binfmt registration is one clear error. A bootstrap can be stopped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cpforge import base
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


def test_a_stopped_bootstrap_command_is_terminated_at_once(tmp_path: Path) -> None:
    stop_at = time.monotonic() + 0.3
    with (tmp_path / "log").open("w") as out:
        started = time.monotonic()
        assert base._run_stoppable(["sleep", "30"], out, {}, lambda: time.monotonic() > stop_at) is None
        assert time.monotonic() - started < 5
        assert base._run_stoppable(["sh", "-c", "exit 3"], out, {}, lambda: False) == 3
