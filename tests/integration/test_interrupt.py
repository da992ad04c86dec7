"""Ctrl-C in the middle of `make`: the build stops within seconds, nothing is tagged, the report says
`interrupted`, no build container is left running, and a rerun continues from the layer cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpforge.report import EntryResult

from .conftest import INTERRUPTED_ENTRY, Interruption

pytestmark = pytest.mark.integration


def test_sigint_during_make_stops_the_build_tags_nothing_and_exits_130(interrupted_build: Interruption) -> None:
    out = interrupted_build.output
    assert interrupted_build.returncode == 130, out[-3000:]
    assert interrupted_build.seconds_to_exit < 30, interrupted_build.seconds_to_exit
    assert "interrupted: stopped 3.14-jit-trixie-amd64@quick" in out
    assert "nothing unproven was tagged" in out and "Traceback" not in out
    assert interrupted_build.report_entry["status"] == "interrupted"
    assert interrupted_build.tagged == []
    assert interrupted_build.build_containers == []


def test_a_rerun_continues_from_the_layer_cache(
    interrupted_build: Interruption, built_314: dict[str, EntryResult]
) -> None:
    rerun = built_314["jit"]
    assert rerun.id == INTERRUPTED_ENTRY and rerun.passed, rerun.problems
    text = Path(rerun.log or "").read_text()
    deps = text.index('cpforge-install-build-deps", "amd64", "--jit", "19"]')
    assert text[deps:].splitlines()[1].strip() == "---> Using cache", text[deps : deps + 300]
