"""The build report: merged under a lock so no process loses another's entries; artifacts re-hashed."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cpforge.errors import ReportError
from cpforge.fsutil import exclusive_lock
from cpforge.provision import ProvisionError
from cpforge.report import EntryResult, Report, builder_platform, open_verified_artifact, verified_artifact


def entry(key: str, status: str = "passed", **kw: Any) -> EntryResult:
    eid, _, profile = key.partition("@")
    common = {"version": "3.14.7", "variant": "default", "platform": "linux/amd64"}
    return EntryResult(key=key, id=eid, profile=profile or "quick", status=status, **common, **kw)


def on_disk(path: Path) -> dict[str, str]:
    return {e["key"]: e["status"] for e in json.loads(path.read_text())["entries"]}


def test_a_stale_copy_keeps_entries_another_process_wrote_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    seed = Report(path)
    seed.update(entry("a@quick", status="pending"))
    seed.save()
    first, second = Report.load(path), Report.load(path)  # two processes, each with its own copy
    first.update(entry("a@quick", status="passed"))
    first.update(entry("b@quick"))
    first.save()
    second.update(entry("c@quick", status="failed"))  # second still believes a is pending, b absent
    second.save()
    assert on_disk(path) == {"a@quick": "passed", "b@quick": "passed", "c@quick": "failed"}
    # and the saver's in-memory copy is refreshed to what is on disk
    assert {k: e.status for k, e in second.entries.items()} == on_disk(path)


def test_an_entry_saved_once_is_not_written_again_over_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    mine, theirs = Report(path), Report(path)
    mine.update(entry("x@quick", status="failed"))
    mine.save()
    theirs.update(entry("x@quick", status="passed"))  # rebuilt by another process later
    theirs.save()
    mine.update(entry("y@quick"))
    mine.save()  # writes only y: its old x is not an update any more
    assert on_disk(path) == {"x@quick": "passed", "y@quick": "passed"}


def test_save_writes_through_a_unique_temp_file_and_leaves_only_the_report_and_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    rep = Report(path)
    rep.update(entry("a@quick"))
    rep.save()
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json", "report.json.lock"]
    assert json.loads(path.read_text())["schema"] == 1


def test_save_refuses_to_merge_into_a_corrupt_report(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("{not json")
    rep = Report(path)
    rep.update(entry("a@quick"))
    with pytest.raises(ReportError, match=r"report\.json is not a cpforge report") as err:
        rep.save()
    assert err.value.hint == "delete it and rebuild"
    assert path.read_text() == "{not json"  # untouched


def test_the_lock_is_exclusive_while_held(tmp_path: Path) -> None:
    lock = tmp_path / "r.lock"
    with exclusive_lock(lock):
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)


def test_builder_platform_round_trips_and_old_reports_load(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    rep = Report(path)
    rep.update(entry("a@quick", builder_platform="linux/arm64"))
    rep.save()
    assert Report.load(path).entries["a@quick"].builder_platform == "linux/arm64"
    old = json.loads(path.read_text())
    del old["entries"][0]["builder_platform"]
    path.write_text(json.dumps(old))
    assert Report.load(path).entries["a@quick"].builder_platform == ""


# ---------------------------------------------------------------------------------------- artifacts


def with_artifact(tmp_path: Path, data: bytes = b"cpython bits" * 1000) -> tuple[EntryResult, Path]:
    art = tmp_path / "cpython.tar"
    art.write_bytes(data)
    return entry(
        "3.14-default-trixie-amd64@quick", artifact={"path": str(art), "sha256": hashlib.sha256(data).hexdigest()}
    ), art


def test_verified_artifact_returns_an_unchanged_artifact(tmp_path: Path) -> None:
    e, art = with_artifact(tmp_path)
    assert verified_artifact(e) == art
    with open_verified_artifact(e) as f:
        assert f.read() == art.read_bytes()  # positioned at the start after hashing


def test_a_changed_artifact_is_refused_with_path_both_hashes_and_the_fix(tmp_path: Path) -> None:
    e, art = with_artifact(tmp_path)
    with art.open("r+b") as f:
        f.seek(100)
        f.write(b"X")
    actual = hashlib.sha256(art.read_bytes()).hexdigest()
    with pytest.raises(ProvisionError) as err:  # the caller's own error class and exit code
        verified_artifact(e, ProvisionError)
    msg = str(err.value)
    assert str(art) in msg and e.artifact["sha256"] in msg and actual in msg
    assert err.value.exit_code == 13
    assert err.value.hint is not None and "invoke build --filter '3.14-default-trixie-amd64' --profile quick" in (
        err.value.hint
    )


def test_a_missing_or_unrecorded_artifact_is_refused(tmp_path: Path) -> None:
    e, art = with_artifact(tmp_path)
    art.unlink()
    with pytest.raises(ReportError, match=r"its artifact .*cpython\.tar cannot be read \(No such file or directory\)"):
        verified_artifact(e)
    with pytest.raises(ReportError, match="records no artifact"):
        verified_artifact(entry("a@quick"))


class InspectOnly:
    def __init__(self, images: dict[str, dict[str, str]]) -> None:
        self.images = images

    def image_id(self, ref: str) -> str | None:
        return ref if ref in self.images else None

    def inspect_image(self, ref: str) -> dict[str, str]:
        return self.images[ref]


def test_builder_platform_recorded_then_the_images_own_then_the_default() -> None:
    engine: Any = InspectOnly({"sha256:arm": {"Os": "linux", "Architecture": "arm64"}})
    recorded = entry("a@quick", artifact_image_id="sha256:arm", builder_platform="linux/arm64")
    assert builder_platform(recorded, engine, "linux/amd64") == "linux/arm64"
    old = entry("a@quick", artifact_image_id="sha256:arm")  # a report from before the field existed
    assert builder_platform(old, engine, "linux/amd64") == "linux/arm64"
    gone = entry("a@quick", artifact_image_id="sha256:gone")
    assert builder_platform(gone, engine, "linux/amd64") == "linux/amd64"
