"""verify re-hashes the original artifacts before it rebuilds anything."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from cpforge import api
from cpforge.progress import Progress
from cpforge.report import EntryResult, Report
from cpforge.verify import VerifyError, verify

ROOT = Path(__file__).resolve().parents[2]


class NoEngine:
    """Any call means verify went further than it may with a changed artifact."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"verify used the engine ({name}) before checking the artifacts")


def test_a_changed_original_artifact_stops_verify_before_any_rebuild(tmp_path: Path) -> None:
    ctx = api.Context.create(ROOT / "matrix.yaml", root=ROOT, out=tmp_path / "out")
    (spec,) = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    art = tmp_path / "cpython.tar"
    art.write_bytes(b"original bits")
    recorded = hashlib.sha256(b"original bits").hexdigest()
    rep = Report(ctx.report_path)
    rep.update(
        EntryResult(
            key=spec.key,
            id=spec.id,
            profile="quick",
            version=spec.version,
            variant="default",
            platform="linux/amd64",
            status="passed",
            image_id="sha256:image",
            artifact={"path": str(art), "sha256": recorded},
        )
    )
    rep.save()
    art.write_bytes(b"changed bits")
    with Progress(total=1) as progress, pytest.raises(VerifyError) as err:
        verify(ctx, NoEngine(), [spec], progress)  # type: ignore[arg-type]
    assert err.value.exit_code == 11
    assert str(art) in str(err.value) and recorded in str(err.value)
    assert hashlib.sha256(b"changed bits").hexdigest() in str(err.value)
