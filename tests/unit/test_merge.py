"""`provision --merge`: several provision output directories (one per CI job) become one, equal to what
one provision of all their entries writes. Without Docker: the tarballs, metadata, SHA256SUMS and
manifests are written by provision itself (a fake engine serves the builder image's files, as in
test_provision.py); everything the merge reads and writes is real files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cpforge import merge as merge_mod
from cpforge.matrix import BuildSpec
from cpforge.merge import merge, metadata_name
from cpforge.provision import ProvisionError, provision
from cpforge.report import Report

from .test_cli import run
from .test_provision import FAKE_LIB, FakeEngine, make_artifact, passed, specs

BASE = "http://127.0.0.1:8999/py"
CHOSEN = (
    ("release", "3.14-default-trixie-amd64"),
    ("release", "3.14-default-bullseye-amd64"),
    ("release", "3.14-freethreaded-trixie-arm64"),
    ("release", "3.14-jit-trixie-amd64"),
    ("quick", "3.14-default-trixie-amd64"),
)


def quiet(_: str) -> None:
    pass


def engine_for_all() -> FakeEngine:
    """One builder image (cross builds on amd64) with the fake library for both triplets."""
    files: dict[str, bytes | str] = {}
    for triplet in ("x86_64-linux-gnu", "aarch64-linux-gnu"):
        files[f"/usr/lib/{triplet}/{FAKE_LIB}"] = f"{FAKE_LIB}.0.0"
        files[f"/usr/lib/{triplet}/{FAKE_LIB}.0.0"] = Path("/bin/true").read_bytes()
    return FakeEngine("sha256:builder", "linux/amd64", files)


def make_built(tmp: Path) -> tuple[FakeEngine, Report, list[BuildSpec]]:
    """Passing builds of a mix that competes for slots: two distros, a free-threaded arm64, a JIT
    variant and a quick build of the default one."""
    chosen = [specs(profile)[eid] for profile, eid in CHOSEN]
    rep = Report(tmp / "report.json")
    for s in chosen:
        rep.update(passed(s, make_artifact(tmp, s), "linux/amd64"))
    return engine_for_all(), rep, chosen


@pytest.fixture
def built(tmp_path: Path) -> tuple[FakeEngine, Report, list[BuildSpec]]:
    return make_built(tmp_path)


_PROVISIONED: dict[tuple[str, str], Path] = {}  # provision outputs made once per (base URL, job), then copied


@pytest.fixture(scope="module", autouse=True)
def _provisioned_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _PROVISIONED.clear()
    yield
    _PROVISIONED.clear()


def provisioned_job(
    tmp: Path, built: tuple[FakeEngine, Report, list[BuildSpec]], i: int, base: str, into: Path
) -> Path:
    """Job ``i``'s provision output (the entry ``built`` chose at ``i``), copied to ``into``: each is
    provisioned once per module (provision is deterministic) and copied for every test."""
    engine, rep, chosen = built
    key = (base, str(i))
    if key not in _PROVISIONED:
        made = Path(tempfile.mkdtemp(dir=tmp.parent, prefix="pristine-")) / "dist"
        provision(engine, rep, [chosen[i]], made, base, say=quiet)  # type: ignore[arg-type]
        _PROVISIONED[key] = made
    shutil.copytree(_PROVISIONED[key], into)
    return into


def provision_each(tmp: Path, built: tuple[FakeEngine, Report, list[BuildSpec]], base: str = BASE) -> list[Path]:
    """What build.yml's jobs upload: one provision output directory per entry."""
    return [provisioned_job(tmp, built, i, base, tmp / f"job-{i}" / "dist") for i in range(len(built[2]))]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: contents and permission bits, by relative path."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def manifest_files(path: Path) -> set[str]:
    return {f["filename"] for rel in json.loads(path.read_text()) for f in rel["files"]}


def sums(path: Path) -> dict[str, str]:
    return {n: d for d, n in (line.split("  ") for line in (path / "SHA256SUMS").read_text().splitlines())}


# ------------------------------------------------------------------------------------- equality


def test_merging_the_per_job_directories_equals_one_provision_of_all(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    engine, rep, chosen = built
    single = provision(engine, rep, chosen, tmp_path / "single", BASE, say=quiet)  # type: ignore[arg-type]
    jobs = provision_each(tmp_path, built)
    # each job's manifest offers its own build: naive concatenation would offer two files per slot
    for d in jobs:
        assert len(manifest_files(d / "versions-manifest.json")) == 1
    res = merge(list(reversed(jobs)), tmp_path / "merged", BASE, say=quiet)

    assert snapshot(tmp_path / "merged") == snapshot(tmp_path / "single")
    assert res.notes == single.notes and res.notes  # the JIT and quick builds are shadowed, and said so
    assert {c: p.relative_to(res.dest) for c, p in res.channels.items()} == {
        c: p.relative_to(tmp_path / "single") for c, p in single.channels.items()
    }
    in_main = manifest_files(res.manifest)
    assert "python-3.14.7-linux-trixie-x64-jit.tar.gz" not in in_main  # slot_rank: default before JIT
    assert "python-3.14.7-linux-trixie-x64-quick.tar.gz" not in in_main  # release before quick
    assert [m.filename for m in res.tarballs] == sorted(p.filename for p in single.tarballs)
    assert all(m.copied for m in res.tarballs)
    for m in res.tarballs:
        assert (
            sums(res.dest)[m.filename] == m.sha256 == hashlib.sha256((res.dest / m.filename).read_bytes()).hexdigest()
        )


def test_merging_in_parts_equals_merging_at_once(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    merge(jobs, tmp_path / "once", BASE, say=quiet)
    merge(jobs[:2], tmp_path / "parts", BASE, say=quiet)
    merge(jobs[2:], tmp_path / "parts", BASE, say=quiet)
    assert snapshot(tmp_path / "parts") == snapshot(tmp_path / "once")


# ------------------------------------------------------------------------------------- idempotence


def test_merging_again_changes_nothing(tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]) -> None:
    jobs = provision_each(tmp_path, built)
    dest = tmp_path / "merged"
    merge(jobs, dest, BASE, say=quiet)
    before = snapshot(dest)
    inodes = {p.name: p.stat().st_ino for p in dest.glob("*.tar.gz")}
    lines: list[str] = []
    again = merge(jobs, dest, BASE, say=lines.append)
    assert not any(m.copied for m in again.tarballs)
    assert not any("copying" in line for line in lines)
    assert snapshot(dest) == before
    assert {p.name: p.stat().st_ino for p in dest.glob("*.tar.gz")} == inodes  # not even rewritten
    # the destination among the sources, a source twice, overlapping sources: still the same set
    merge([dest, *jobs, jobs[0], dest], dest, BASE, say=quiet)
    assert snapshot(dest) == before


def test_an_interrupted_merge_is_completed_by_the_next(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    merge(jobs, tmp_path / "once", BASE, say=quiet)
    dest = tmp_path / "merged"
    copies = 0

    def stop_at_the_third_copy(line: str) -> None:
        nonlocal copies
        copies += "copying" in line
        if copies == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge(jobs, dest, BASE, say=stop_at_the_third_copy)
    assert not list(dest.glob(".*.tmp"))
    assert not (dest / "SHA256SUMS").exists()  # no manifest names what may not be complete
    merge(jobs, dest, BASE, say=quiet)
    assert snapshot(dest) == snapshot(tmp_path / "once")


# ------------------------------------------------------------------------------------- atomic writes


class Interrupting:
    """hashlib.sha256 whose second update raises KeyboardInterrupt: Ctrl-C in the middle of a copy."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.calls = 0

    def update(self, data: bytes) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        self.h.update(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def test_ctrl_c_in_the_middle_of_a_copy_leaves_neither_half_a_file_nor_a_temp_file(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = provision_each(tmp_path, built)
    dest = tmp_path / "merged"
    merge(jobs[:1], dest, BASE, say=quiet)
    before = snapshot(dest)
    monkeypatch.setattr(merge_mod, "CHUNK", 4096)  # so a copy takes several reads
    monkeypatch.setattr(merge_mod, "hashlib", SimpleNamespace(sha256=Interrupting))
    with pytest.raises(KeyboardInterrupt):
        merge(jobs, dest, BASE, say=quiet)
    assert snapshot(dest) == before  # the earlier set, whole; the new tarball not there at all
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".")) == [".versions-manifest.json.lock"]


def test_a_source_that_changes_while_it_is_copied_is_refused_and_not_written(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    victim = next(jobs[1].glob("*.tar.gz"))

    def tamper(line: str) -> None:
        if f"copying {victim.name}" in line:
            with victim.open("ab") as f:
                f.write(b"\0")

    with pytest.raises(ProvisionError, match=f"{victim} changed while it was merged") as err:
        merge(jobs, tmp_path / "merged", BASE, say=tamper)
    assert "was not written" in err.value.message
    assert not (tmp_path / "merged" / victim.name).exists()
    assert not list((tmp_path / "merged").glob(".*.tmp"))


def test_every_file_is_renamed_into_place(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file of the destination is ever opened for writing under its own name: each is a temp file
    beside it, renamed onto it (fsutil)."""
    jobs = provision_each(tmp_path, built)
    dest = tmp_path / "merged"
    renamed: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(f".{Path(dst).name}.")
        renamed.append(str(Path(dst).relative_to(dest)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    merge(jobs, dest, BASE, say=quiet)
    written = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert written == set(renamed)


# ------------------------------------------------------------------------------------- clashes


def rebuilt(tmp: Path, spec: BuildSpec, rep_dir: str) -> Path:
    """Another build of ``spec`` (one more file in its artifact), provisioned into a directory of its own:
    the same tarball name, other contents."""
    other = tmp / rep_dir
    other.mkdir()
    art = make_artifact(other, spec)
    with tarfile.open(art, "a") as tar:
        data = b"rebuilt\n"
        info = tarfile.TarInfo("usr/local/lib/rebuilt.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    rep = Report(other / "report.json")
    rep.update(passed(spec, art, "linux/amd64"))
    provision(engine_for_all(), rep, [spec], other / "dist", BASE, say=quiet)  # type: ignore[arg-type]
    return other / "dist"


def test_the_same_name_with_another_sha256_is_refused_and_nothing_is_written(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    clash = rebuilt(tmp_path, built[2][0], "again")
    name = "python-3.14.7-linux-trixie-x64.tar.gz"
    with pytest.raises(ProvisionError) as err:
        merge([*jobs, clash], tmp_path / "merged", BASE, say=quiet)
    msg = err.value.message
    assert msg.startswith("refusing to merge: the same file name stands for different files:")
    assert f"{name}: {jobs[0].absolute()} has sha256 {sums(jobs[0])[name]}, {clash} has {sums(clash)[name]}" in msg
    assert "one file name must always mean one file" in (err.value.hint or "")
    assert not (tmp_path / "merged").exists()


def test_a_destination_holding_another_file_of_that_name_is_refused_and_kept(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    dest = tmp_path / "merged"
    merge(jobs, dest, BASE, say=quiet)
    before = snapshot(dest)
    clash = rebuilt(tmp_path, built[2][0], "again")
    with pytest.raises(ProvisionError, match=f"refusing to merge into {dest}") as err:
        merge([clash], dest, BASE, say=quiet)
    assert f"{dest} already has sha256 {sums(dest)['python-3.14.7-linux-trixie-x64.tar.gz']}" in err.value.message
    assert snapshot(dest) == before


def test_the_same_tarball_with_other_metadata_is_a_clash(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    twin = tmp_path / "twin"
    shutil.copytree(jobs[0], twin)
    (meta_path,) = twin.glob("python-*.json")
    meta = json.loads(meta_path.read_text())
    meta["glibc_min"] = "2.17"  # would offer the file to runners it does not run on
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        ProvisionError, match=r"the same tarball, but .* differ in python-3\.14\.7-linux-trixie-x64\.json"
    ):
        merge([jobs[0], twin], tmp_path / "merged", BASE, say=quiet)
    assert not (tmp_path / "merged").exists()


def test_a_destination_holding_the_same_tarball_with_other_metadata_is_refused(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    jobs = provision_each(tmp_path, built)
    dest = tmp_path / "merged"
    merge(jobs, dest, BASE, say=quiet)
    meta_path = dest / "python-3.14.7-linux-trixie-x64.json"
    meta = json.loads(meta_path.read_text())
    meta["glibc_min"] = "2.17"
    meta_path.write_text(json.dumps(meta))
    before = snapshot(dest)
    with pytest.raises(ProvisionError, match=rf"the same tarball, but {dest} and .* differ in {meta_path.name}"):
        merge(jobs, dest, BASE, say=quiet)
    assert snapshot(dest) == before


# ------------------------------------------------------------------------------------- bad sources


def one_job(tmp: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]) -> tuple[Path, str]:
    return provisioned_job(tmp, built, 0, BASE, tmp / "job"), "python-3.14.7-linux-trixie-x64.tar.gz"


BREAKAGES: dict[str, tuple[Callable[[Path, str], None], str]] = {
    "truncated download": (
        lambda d, n: (d / n).write_bytes((d / n).read_bytes()[:100]),
        r"job/python-3\.14\.7-linux-trixie-x64\.tar\.gz has sha256 [0-9a-f]{64}, but .*SHA256SUMS lists",
    ),
    "tarball missing": (lambda d, n: (d / n).unlink(), r"is listed in .*SHA256SUMS but missing"),
    "metadata missing": (lambda d, n: (d / metadata_name(n)).unlink(), r"\.json is missing: the metadata of"),
    "metadata not cpforge's": (
        lambda d, n: (d / metadata_name(n)).write_text('{"format": "other"}'),
        r"is not cpforge tarball metadata",
    ),
    "no SHA256SUMS": (lambda d, n: (d / "SHA256SUMS").unlink(), r"holds no SHA256SUMS: it is not a provision output"),
    "a tarball left out of SHA256SUMS": (
        lambda d, n: (d / "SHA256SUMS").write_text(""),
        r"has metadata but is not listed in .*SHA256SUMS",
    ),
    "a path in SHA256SUMS": (
        lambda d, n: (d / "SHA256SUMS").write_text(f"{'0' * 64}  ../../etc/passwd\n"),
        r"SHA256SUMS:1: not a line provision writes",
    ),
    "not a directory": (lambda d, n: shutil.rmtree(d), r"job is not a directory"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_source_that_is_not_an_intact_provision_output_is_refused(
    breakage: str, tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]
) -> None:
    good = provision_each(tmp_path, built)[1:]
    job, name = one_job(tmp_path, built)
    damage, message = BREAKAGES[breakage]
    damage(job, name)
    with pytest.raises(ProvisionError, match=message) as err:
        merge([*good, job], tmp_path / "merged", BASE, say=quiet)
    assert err.value.message.startswith("refusing to merge:")
    assert not (tmp_path / "merged").exists()


def test_nothing_to_merge_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="nothing to merge"):
        merge([], tmp_path / "merged", BASE, say=quiet)


def test_another_base_url_is_noted(tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]]) -> None:
    jobs = provision_each(tmp_path, built, base="https://old.example/py")
    res = merge(jobs, tmp_path / "merged", BASE, say=quiet)
    assert f"5 source(s) (e.g. {jobs[0]}) were provisioned for https://old.example/py; the merged manifests " in (
        "\n".join(res.notes)
    )
    assert {rel["release_url"] for rel in json.loads(res.manifest.read_text())} == {BASE}


# ------------------------------------------------------------------------------------- command line


def test_provision_merge_on_the_command_line(
    tmp_path: Path,
    built: tuple[FakeEngine, Report, list[BuildSpec]],
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = provision_each(tmp_path, built)
    monkeypatch.chdir(tmp_path)
    args: list[str] = [a for d in jobs for a in ("--merge", str(d.relative_to(tmp_path)))]
    done = run(capfd, "provision", *args, "--dest", "all", "--base-url", BASE)
    assert done.code == 0, done.err
    assert "5 tarball(s) merged (5 copied, 0 already there); SHA256SUMS and versions-manifest.json in " in done.out
    assert f"{tmp_path / 'all'}" in done.out and "NOTE  python-3.14.7-linux-trixie-x64-jit.tar.gz" in done.out
    assert set(sums(tmp_path / "all")) == {p.name for p in (tmp_path / "all").glob("*.tar.gz")}
    again = run(capfd, "provision", *args, "--dest", "all", "--base-url", BASE)
    assert again.code == 0 and "(0 copied, 5 already there)" in again.out


@pytest.mark.parametrize("extra", [["--filter", "3.14-*"], ["--profile", "quick"], ["--engine", "unix:///x"]])
def test_provision_merge_refuses_options_that_cannot_apply(
    extra: Sequence[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    done = run(capfd, "provision", "--merge", str(tmp_path), *extra, "--dest", str(tmp_path / "out"))
    assert done.code == 64
    assert f"--merge takes every tarball of the directories it names; {extra[0]} cannot apply" in done.err
    assert not (tmp_path / "out").exists()


def test_a_clash_on_the_command_line_is_exit_13_and_names_the_files(
    tmp_path: Path, built: tuple[FakeEngine, Report, list[BuildSpec]], capfd: pytest.CaptureFixture[str]
) -> None:
    jobs = provision_each(tmp_path, built)
    clash = rebuilt(tmp_path, built[2][0], "again")
    done = run(capfd, "provision", "--merge", str(jobs[0]), "--merge", str(clash), "--dest", str(tmp_path / "o"))
    assert done.code == 13
    assert "cpforge: error: refusing to merge: the same file name stands for different files" in done.err
    assert "python-3.14.7-linux-trixie-x64.tar.gz" in done.err and "fix: one file name" in done.err
    assert "Traceback" not in done.err
