"""Provisioning without Docker: a fake engine serves the builder image's files, everything else is real
(artifact tarballs, patchelf, the tarballs and manifests written)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cpforge import matrix as mx
from cpforge import tools
from cpforge.errors import BuildError
from cpforge.matrix import BuildSpec, Platform
from cpforge.provision import (
    SYSCONFIG_HEADER,
    ProvisionError,
    Tarball,
    compatible_platform_versions,
    deterministic_targz,
    extract_artifact,
    fill_slots,
    provision,
    relocate_pkgconfig,
    relocate_sysconfigdata,
    shadow_notes,
    slot_rank,
    tarball_name,
    uv_json,
    uv_key,
    uv_picks,
)
from cpforge.report import EntryResult, Report

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:8999/py"
FAKE_LIB = "libcpforgefake.so.1"


def specs(profile: str) -> dict[str, BuildSpec]:
    return {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand(profile)}


class FakeEngine:
    """What provision asks of an Engine, for one builder image of one platform: image_id,
    inspect_image, open_archive. Like Docker 20.10, it refuses to create a container for another
    platform than the image's; it records every platform it was asked for."""

    def __init__(self, image: str, platform: str, files: dict[str, bytes | str]) -> None:
        self.image, self.platform, self.files = image, platform, files  # str value: a symlink's target
        self.asked: list[str | None] = []

    def image_id(self, ref: str) -> str | None:
        return ref if ref == self.image else None

    def inspect_image(self, ref: str) -> dict[str, Any]:
        os_, arch = self.platform.split("/")
        return {"Id": ref, "Os": os_, "Architecture": arch}

    @contextmanager
    def open_archive(self, image: str, path: str, platform: str | None = None) -> Iterator[tarfile.TarFile]:
        self.asked.append(platform)
        if platform is not None and platform != self.platform:
            raise RuntimeError(
                f"image with reference {image} was found but does not match the specified platform: "
                f"wanted {platform}, actual: {self.platform}"
            )
        if path not in self.files:
            raise BuildError(f"{path} does not exist in image {image}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            content = self.files[path]
            info = tarfile.TarInfo(path.rsplit("/", 1)[1])
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        buf.seek(0)
        with tarfile.open(fileobj=buf, mode="r|") as tar:
            yield tar


def builder(spec: BuildSpec, platform: str) -> FakeEngine:
    """A builder image holding the library every fake interpreter needs, behind a symlink."""
    d = f"/usr/lib/{spec.platform.triplet}"
    return FakeEngine(
        "sha256:builder",
        platform,
        {f"{d}/{FAKE_LIB}": f"{FAKE_LIB}.0.0", f"{d}/{FAKE_LIB}.0.0": Path("/bin/true").read_bytes()},
    )


def make_artifact(tmp: Path, spec: BuildSpec) -> Path:
    """cpython.tar as a build leaves it: usr/local with an ELF interpreter that needs a library from
    the builder image, a script with a /usr/local shebang and sysconfig data."""
    local = tmp / f"tree-{spec.key}" / "usr" / "local"
    (local / "bin").mkdir(parents=True)
    exe = local / "bin" / f"python{spec.minor}{'t' if spec.variant.freethreaded else ''}"
    shutil.copy("/bin/true", exe)
    patchelf = tools.find("patchelf")
    assert patchelf
    subprocess.run([patchelf, "--add-needed", FAKE_LIB, str(exe)], check=True)
    (local / "bin" / "pip3").write_text(f"#!/usr/local/bin/python{spec.minor}\nimport pip\n")
    (local / "bin" / "pip3").chmod(0o755)
    (local / "bin" / "python3").symlink_to(exe.name)
    sysconfig = local / "lib" / f"python{spec.minor}" / "_sysconfigdata__linux_x86_64-linux-gnu.py"
    sysconfig.parent.mkdir(parents=True)
    sysconfig.write_text(SYSCONFIG_HEADER + "build_time_vars = {'prefix': '/usr/local', 'LIBDIR': '/usr/local/lib'}\n")
    art = tmp / f"artifact-{spec.key}.tar"
    with tarfile.open(art, "w") as tar:
        tar.add(tmp / f"tree-{spec.key}" / "usr", arcname="usr")
    return art


def passed(spec: BuildSpec, art: Path, builder_platform: str = "") -> EntryResult:
    return EntryResult.of(
        spec,
        status="passed",
        artifact_image_id="sha256:builder",
        builder_platform=builder_platform,
        artifact={"path": str(art), "sha256": hashlib.sha256(art.read_bytes()).hexdigest()},
    )


def report_for(tmp: Path, entries: list[tuple[BuildSpec, str]]) -> Report:
    rep = Report(tmp / "report.json")
    for spec, plat in entries:
        rep.update(passed(spec, make_artifact(tmp, spec), plat))
    return rep


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


# ------------------------------------------------------------------------------- builder platform


def test_native_arm64_build_is_read_with_the_platform_its_builder_ran_on(tmp_path: Path) -> None:
    spec = specs("quick")["3.14-default-trixie-arm64"]
    assert spec.build_platform.name == "linux/amd64"  # the matrix cross-compiles; this build was --native
    engine = builder(spec, "linux/arm64")
    rep = report_for(tmp_path, [(spec, "linux/arm64")])
    res = provision(engine, rep, [spec], tmp_path / "dist", BASE, say=lambda _: None)  # type: ignore[arg-type]
    assert engine.asked and set(engine.asked) == {"linux/arm64"}
    (p,) = res.tarballs
    assert p.metadata["bundled_libraries"] == [FAKE_LIB]
    assert f"lib/{FAKE_LIB}" in members(p.path)


def test_an_old_report_without_builder_platform_asks_the_image(tmp_path: Path) -> None:
    spec = specs("quick")["3.14-default-trixie-arm64"]
    engine = builder(spec, "linux/arm64")
    rep = report_for(tmp_path, [(spec, "")])
    provision(engine, rep, [spec], tmp_path / "dist", BASE, say=lambda _: None)  # type: ignore[arg-type]
    assert set(engine.asked) == {"linux/arm64"}


def test_a_cross_build_is_read_with_the_matrix_build_platform(tmp_path: Path) -> None:
    spec = specs("quick")["3.14-default-trixie-arm64"]
    engine = builder(spec, "linux/amd64")
    rep = report_for(tmp_path, [(spec, "linux/amd64")])
    provision(engine, rep, [spec], tmp_path / "dist", BASE, say=lambda _: None)  # type: ignore[arg-type]
    assert set(engine.asked) == {"linux/amd64"}


def test_the_platform_is_what_the_report_recorded_not_the_matrix(tmp_path: Path) -> None:
    # The matrix says the builder is arm64, the report says this build's builder ran on amd64.
    spec = replace(specs("quick")["3.14-default-trixie-amd64"], build_platform=Platform(name="linux/arm64"))
    engine = builder(spec, "linux/amd64")
    rep = report_for(tmp_path, [(spec, "linux/amd64")])
    provision(engine, rep, [spec], tmp_path / "dist", BASE, say=lambda _: None)  # type: ignore[arg-type]
    assert set(engine.asked) == {"linux/amd64"}


# --------------------------------------------------------------------------------- refusals


def test_a_changed_artifact_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    spec = specs("quick")["3.14-default-trixie-amd64"]
    rep = report_for(tmp_path, [(spec, "linux/amd64")])
    art = Path(rep.entries[spec.key].artifact["path"])
    with art.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ProvisionError) as err:
        provision(builder(spec, "linux/amd64"), rep, [spec], tmp_path / "dist", BASE)  # type: ignore[arg-type]
    msg = str(err.value)
    assert f"{spec.key}: artifact {art} is not the one its build recorded" in msg
    assert rep.entries[spec.key].artifact["sha256"] in msg
    assert hashlib.sha256(art.read_bytes()).hexdigest() in msg
    assert "invoke build" in (err.value.hint or "")
    assert not (tmp_path / "dist").exists()


def test_entries_that_would_share_a_file_name_are_refused(tmp_path: Path) -> None:
    spec = specs("quick")["3.14-default-trixie-amd64"]
    twin = replace(spec, id="3.14-default-trixie2-amd64")  # another distro with the same suite
    rep = report_for(tmp_path, [(spec, ""), (twin, "")])
    with pytest.raises(ProvisionError, match=r"3\.14-default-trixie2-amd64@quick and 3\.14-default-trixie-amd64@quick"):
        provision(builder(spec, "linux/amd64"), rep, [spec, twin], tmp_path / "dist", BASE)  # type: ignore[arg-type]


def unsafe_tar(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tar:
        d = tarfile.TarInfo("usr/local/bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def regular(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (symlink("usr/local/lib/passwd", "/etc/passwd"), "is a link to an absolute path"),
        (symlink("usr/local/lib/up", "../../../../etc"), "would link to"),
        (regular("../escaped"), "would be extracted to"),
    ],
)
def test_extraction_refuses_members_that_leave_the_directory(tmp_path: Path, member: tarfile.TarInfo, why: str) -> None:
    art = unsafe_tar(tmp_path / "evil.tar", member)
    with pytest.raises(ProvisionError) as err, art.open("rb") as f:
        extract_artifact(f, tmp_path / "x", "the artifact evil.tar")
    assert "the artifact evil.tar holds an unsafe member, refused" in str(err.value)
    assert why in str(err.value)
    assert not (tmp_path / "escaped").exists()


def test_an_absolute_member_name_is_unpacked_inside_the_directory(tmp_path: Path) -> None:
    art = unsafe_tar(tmp_path / "abs.tar", regular("/tmp/cpforge-escape-probe"))
    with art.open("rb") as f:
        extract_artifact(f, tmp_path / "x", "abs.tar")
    assert (tmp_path / "x" / "tmp" / "cpforge-escape-probe").is_file()
    assert not Path("/tmp/cpforge-escape-probe").exists()


def test_an_unsafe_artifact_is_refused_by_provision(tmp_path: Path) -> None:
    spec = specs("quick")["3.14-default-trixie-amd64"]
    art = unsafe_tar(tmp_path / "evil.tar", symlink("usr/local/lib/passwd", "/etc/passwd"))
    rep = Report(tmp_path / "report.json")
    rep.update(passed(spec, art))
    with pytest.raises(ProvisionError, match=r"artifact .*evil\.tar holds an unsafe member"):
        provision(builder(spec, "linux/amd64"), rep, [spec], tmp_path / "dist", BASE)  # type: ignore[arg-type]
    assert not (tmp_path / "dist").exists()


def test_a_python_without_extraction_filters_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile, "data_filter")
    with pytest.raises(ProvisionError, match="no tarfile extraction filters") as err:
        provision(FakeEngine("x", "linux/amd64", {}), Report(tmp_path / "r.json"), [], tmp_path / "d", BASE)  # type: ignore[arg-type]
    assert "3.11.4" in (err.value.hint or "")


# --------------------------------------------------------------------------------- tarballs


def test_tarball_names_keep_the_shipped_ones_and_give_every_variant_its_own() -> None:
    quick, release = specs("quick"), specs("release")
    assert tarball_name(release["3.14-default-trixie-amd64"]) == "python-3.14.7-linux-trixie-x64.tar.gz"
    assert tarball_name(quick["3.13-freethreaded-jit-trixie-arm64"]) == (
        "python-3.13.5-linux-trixie-arm64-freethreaded-jit-quick.tar.gz"
    )
    debug = replace(
        release["3.14-default-trixie-amd64"], variant=mx.Variant(name="debug", configure=("--with-pydebug",))
    )
    assert tarball_name(debug) == "python-3.14.7-linux-trixie-x64-debug.tar.gz"


def test_deterministic_targz_normalises_every_member_and_the_gzip_header(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o700)
    (root / "data").write_text("x")
    (root / "data").chmod(0o600)
    (root / "bin" / "link").symlink_to("tool")
    (root / "private").mkdir(mode=0o700)
    epoch = 1_700_000_000
    digest = deterministic_targz(root, tmp_path / "t.tar.gz", epoch)
    raw = (tmp_path / "t.tar.gz").read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest()
    assert raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"  # gzip: no FNAME, MTIME 0
    with tarfile.open(tmp_path / "t.tar.gz") as tar:
        got = [(m.name, oct(m.mode), m.uid, m.gid, m.uname, m.gname, m.mtime) for m in tar.getmembers()]
        assert tar.getmember("bin/link").linkname == "tool"
    assert got == [
        ("bin", "0o755", 0, 0, "", "", epoch),
        ("bin/link", "0o777", 0, 0, "", "", epoch),
        ("bin/tool", "0o755", 0, 0, "", "", epoch),
        ("data", "0o644", 0, 0, "", "", epoch),
        ("private", "0o755", 0, 0, "", "", epoch),
    ]
    with gzip.open(tmp_path / "t.tar.gz") as gz:
        assert gz.read(1)  # a valid gzip stream
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_mtimes_are_clamped_not_raised(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "old").write_text("x")
    os.utime(root / "old", (1_000_000, 1_000_000))
    deterministic_targz(root, tmp_path / "t.tar.gz", 1_700_000_000)
    assert members(tmp_path / "t.tar.gz")["old"].mtime == 1_000_000


# --------------------------------------------------------------------------------- the slot rule


def tb(name: str, variant: str = "default", profile: str = "release", glibc: str = "2.41", **kw: Any) -> Tarball:
    major, minor = glibc.split(".")
    arch = kw.pop("arch", "x64-freethreaded" if variant.startswith("freethreaded") else "x64")
    jit = kw.pop("jit", "jit" in variant)
    return Tarball(
        filename=name,
        version=kw.pop("version", "3.14.7"),
        arch=arch,
        glibc_min=(int(major), int(minor)),
        variant=variant,
        jit=jit,
        profile=profile,
    )


def winners(*tarballs: Tarball) -> dict[tuple[str, str], str]:
    return {(arch, runner): t.filename for (_v, arch, runner), t in fill_slots(tarballs).items()}


def test_default_before_jit_and_release_before_quick() -> None:
    default, jit = tb("default.tgz"), tb("jit.tgz", "jit")
    quick = tb("default-quick.tgz", profile="quick")
    assert winners(jit, quick, default) == {("x64", "13"): "default.tgz"}
    assert winners(jit, quick) == {("x64", "13"): "default-quick.tgz"}  # the variant outranks the profile
    assert winners(jit, tb("jit-quick.tgz", "jit", profile="quick")) == {("x64", "13"): "jit.tgz"}


def test_freethreaded_builds_have_slots_of_their_own() -> None:
    got = winners(tb("d.tgz"), tb("ft.tgz", "freethreaded"), tb("ftjit.tgz", "freethreaded-jit"))
    assert got == {("x64", "13"): "d.tgz", ("x64-freethreaded", "13"): "ft.tgz"}


def test_newest_glibc_per_runner_within_a_channel() -> None:
    got = winners(tb("bullseye.tgz", glibc="2.30"), tb("trixie.tgz", glibc="2.38"))
    assert {r: f for (_a, r), f in got.items()} == {
        "11": "bullseye.tgz",
        "12": "bullseye.tgz",
        "20.04": "bullseye.tgz",
        "22.04": "bullseye.tgz",
        "13": "trixie.tgz",
        "24.04": "trixie.tgz",
    }
    assert compatible_platform_versions("2.42") == []


def test_a_release_build_on_an_old_distro_outranks_a_quick_one_on_a_new_distro() -> None:
    got = winners(tb("trixie-quick.tgz", profile="quick"), tb("bullseye.tgz", glibc="2.31"))
    assert set(got.values()) == {"bullseye.tgz"}


def test_other_variants_sit_between_default_and_jit() -> None:
    debug = tb("debug.tgz", "debug")
    assert winners(debug, tb("jit.tgz", "jit")) == {("x64", "13"): "debug.tgz"}
    assert winners(debug, tb("d.tgz")) == {("x64", "13"): "d.tgz"}
    pool = [debug, tb("j.tgz", "jit")]
    main = fill_slots(pool)
    channels = {c: fill_slots([t for t in pool if t.channel == c]) for c in {t.channel for t in pool}}
    (note,) = shadow_notes(pool, main, channels, BASE)
    assert "debug.tgz takes runner OS 13 (variant debug before JIT)" in note
    assert slot_rank(tb("a.tgz", "custom-ft", arch="x64-freethreaded"))[0] == 1


def test_the_rule_does_not_depend_on_the_order_builds_were_provisioned_in() -> None:
    pool = [
        tb("d.tgz"),
        tb("dq.tgz", profile="quick"),
        tb("j.tgz", "jit"),
        tb("b.tgz", glibc="2.31"),
        tb("bq.tgz", profile="quick", glibc="2.31"),
        tb("ft.tgz", "freethreaded"),
        tb("tie-b.tgz", glibc="2.36"),
        tb("tie-a.tgz", glibc="2.36"),
    ]
    expected = winners(*pool)
    for seed in range(20):
        random.Random(seed).shuffle(pool)
        assert winners(*pool) == expected
    assert expected[("x64", "12")] == "tie-a.tgz"  # equal rank: file name order


def test_notes_name_every_build_left_out_and_where_it_is_listed() -> None:
    default, jit, quick = tb("d.tgz"), tb("j.tgz", "jit"), tb("dq.tgz", profile="quick")
    bullseye, future = tb("b.tgz", glibc="2.31"), tb("sid.tgz", glibc="2.42")
    pool = [default, jit, quick, bullseye, future]
    main = fill_slots(pool)
    channels = {c: fill_slots([t for t in pool if t.channel == c]) for c in {t.channel for t in pool}}
    notes = {n.split(" ", 1)[0]: n for n in shadow_notes(pool, main, channels, BASE)}
    assert set(notes) == {"j.tgz", "dq.tgz", "sid.tgz"}  # b.tgz loses 13 to d.tgz by design: newer glibc
    assert notes["j.tgz"] == (
        "j.tgz is not in versions-manifest.json: d.tgz takes runner OS 13 (default before JIT); it is listed in "
        f"channels/jit-release/versions-manifest.json (setup-python: `mirror: {BASE}/channels/jit-release`)"
    )
    assert "d.tgz takes runner OS 13 (release before quick)" in notes["dq.tgz"]
    assert "channels/default-quick/versions-manifest.json" in notes["dq.tgz"]
    assert "needs glibc 2.42, newer than every runner OS" in notes["sid.tgz"]


def test_a_partly_shadowed_build_is_named_with_the_runners_it_keeps() -> None:
    jit_bookworm, default_trixie = tb("jb.tgz", "jit", glibc="2.36"), tb("dt.tgz")
    pool = [jit_bookworm, default_trixie]
    main = fill_slots(pool)
    channels = {c: fill_slots([t for t in pool if t.channel == c]) for c in {t.channel for t in pool}}
    (note,) = shadow_notes(pool, main, channels, BASE)
    assert note.startswith(
        "jb.tgz is in versions-manifest.json only for runner OS 12, 24.04: dt.tgz takes runner OS 13"
    )


def test_channels_fold_free_threading_into_the_arch() -> None:
    assert tb("a", "freethreaded").channel == "default-release"
    assert tb("a", "freethreaded-jit", profile="quick").channel == "jit-quick"
    assert tb("a", "jit").channel == "jit-release"


# --------------------------------------------------------------------------------- manifests, end to end


def test_provisioning_default_jit_and_quick_shadows_nothing_silently(tmp_path: Path) -> None:
    rel, quick = specs("release"), specs("quick")
    chosen = [
        rel["3.14-default-trixie-amd64"],
        rel["3.14-freethreaded-trixie-amd64"],
        rel["3.14-jit-trixie-amd64"],
        quick["3.14-default-trixie-amd64"],
    ]
    engine = builder(chosen[0], "linux/amd64")
    rep = report_for(tmp_path, [(s, "linux/amd64") for s in chosen])
    dist = tmp_path / "dist"
    # in two runs, the JIT and quick ones first: the later release run must not drop them
    first = provision(engine, rep, chosen[2:], dist, BASE, say=lambda _: None)  # type: ignore[arg-type]
    (note,) = first.notes
    assert note.startswith("python-3.14.7-linux-trixie-x64-jit.tar.gz is not in versions-manifest.json")
    assert ": python-3.14.7-linux-trixie-x64-quick.tar.gz takes runner OS" in note
    assert note.endswith(
        "(default before JIT); it is listed in channels/jit-release/versions-manifest.json "
        f"(setup-python: `mirror: {BASE}/channels/jit-release`)"
    )
    res = provision(engine, rep, chosen[:2], dist, BASE, say=lambda _: None)  # type: ignore[arg-type]
    main = json.loads((dist / "versions-manifest.json").read_text())
    in_main = {f["filename"] for rel_ in main for f in rel_["files"]}
    assert in_main == {"python-3.14.7-linux-trixie-x64.tar.gz", "python-3.14.7-linux-trixie-x64-freethreaded.tar.gz"}
    listed = {
        c: {f["filename"] for rel_ in json.loads(p.read_text()) for f in rel_["files"]} for c, p in res.channels.items()
    }
    assert listed == {
        "default-release": in_main,
        "jit-release": {"python-3.14.7-linux-trixie-x64-jit.tar.gz"},
        "default-quick": {"python-3.14.7-linux-trixie-x64-quick.tar.gz"},
    }
    shadowed = {n.split(" ", 1)[0] for n in res.notes}
    assert shadowed == {"python-3.14.7-linux-trixie-x64-jit.tar.gz", "python-3.14.7-linux-trixie-x64-quick.tar.gz"}
    sums = dict(line.split("  ")[::-1] for line in (dist / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {t for files in listed.values() for t in files}
    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest


# --------------------------------------------------------------------------------- sysconfig data, for uv too


class UvSysconfig:
    """uv's reading and rewriting of `_sysconfigdata_*.py` (crates/uv-python/src/sysconfig/: parser.rs
    and mod.rs), ported line by line: what it accepts, and what it writes after `uv python install`."""

    WS = " \t\x0c\n\r"

    def __init__(self, text: str) -> None:
        self.s, self.i = text, 0

    def bump(self) -> str:
        if self.i >= len(self.s):
            raise ValueError("Unexpected end of file")
        self.i += 1
        return self.s[self.i - 1]

    def first(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else "\0"

    def eat_ws(self) -> None:
        while self.first() in self.WS and self.i < len(self.s):
            self.i += 1

    def string(self, quote: str) -> str:
        out = ""
        while (c := self.bump()) != quote:
            if c == "\\":
                c = self.bump()
                if c not in "\\'\"":
                    raise ValueError(f"Unrecognized escape sequence: {c}")
            out += c
        return out

    def parse(self) -> dict[str, str | int]:
        if not self.s.startswith(SYSCONFIG_HEADER):
            raise ValueError("`_sysconfigdata_` is missing a header comment")
        self.i = len(SYSCONFIG_HEADER)
        if not self.s.startswith("build_time_vars", self.i):
            raise ValueError("`_sysconfigdata_` is missing an assignment to `build_time_vars`")
        self.i += len("build_time_vars")
        self.eat_ws()
        if self.bump() != "=":
            raise ValueError("`_sysconfigdata_` is missing an assignment to `build_time_vars`")
        self.eat_ws()
        if self.bump() != "{":
            raise ValueError("Missing opening brace")
        data: dict[str, str | int] = {}
        while (c := self.bump()) != "}":
            if c in self.WS:
                continue
            if c not in "'\"":
                raise ValueError(f"Unexpected character: {c}")
            key = self.string(c)
            self.eat_ws()
            self.i += self.first() == ":"
            self.eat_ws()
            data[key] = self.value()
            self.eat_ws()
            self.i += self.first() == ","
            self.eat_ws()
        return data

    def value(self) -> str | int:
        c = self.first()
        if c in "'\"":
            out = ""
            while True:
                c = self.bump()
                if c in "'\"":
                    out += self.string(c)
                elif c not in self.WS:
                    raise ValueError(f"Unexpected character: {c}")
                if self.first() in ",}":
                    return out
        sign = -1 if c == "-" else 1
        self.i += c == "-"
        digits = ""
        while self.first().isdigit():
            digits += self.bump()
        if not digits:
            raise ValueError(f"Unexpected character: {c}")
        value = sign * int(digits)
        assert -(2**31) <= value < 2**31, "uv parses i32"
        return value

    @staticmethod
    def patch(data: dict[str, str | int], real_prefix: str) -> dict[str, str | int]:
        def word(w: str) -> str:
            if not w.startswith("/install"):
                return w
            rest = w[len("/install") :]
            return real_prefix if not rest else f"{real_prefix}/{rest[1:]}"

        out = {k: " ".join(word(w) for w in v.split()) if isinstance(v, str) else v for k, v in data.items()}
        return {**out, "PYTHON_BUILD_STANDALONE": 1}


CPYTHON_SYSCONFIG = {
    "ABIFLAGS": "t",
    "BINDIR": "/usr/local/bin",
    "BOOTSTRAP_HEADERS": "\\",
    "CONFIG_ARGS": "'--prefix=/usr/local' '--with-ensurepip=install'",
    "DESTDIRS": "/usr/local /usr/local/lib /usr/local/lib/python3.14t",
    "INCLUDEPY": "/usr/local/include/python3.14t",
    "INSTALL": "/usr/bin/install -c",
    "LIBDIR": "/usr/local/lib",
    "LIBPC": "/usr/local/lib/pkgconfig",
    "LOCALMODLIBS": "",
    "MULTIARCH_CPPFLAGS": '-DMULTIARCH=\\"x86_64-linux-gnu\\"',
    "Py_GIL_DISABLED": 1,
    "SIZEOF_WCHAR_T": 4,
    "WITH_DOC_STRINGS": -1,
    "prefix": "/usr/local",
    "srcdir": "/usr/src/python/Python-3.14.7/build-with-a-long-name-that-makes-pprint-split-the-string",
}


def cpython_sysconfigdata(path: Path, data: dict[str, Any] = CPYTHON_SYSCONFIG) -> Path:
    """The file as CPython's `make install` writes it (pprint: long values split into several literals)."""
    import pprint

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SYSCONFIG_HEADER + "build_time_vars = " + pprint.pformat(data, width=60) + "\n")
    return path


def test_sysconfigdata_is_what_uv_parses_with_its_prefix_placeholder(tmp_path: Path) -> None:
    path = cpython_sysconfigdata(tmp_path / "lib" / "python3.14t" / "_sysconfigdata_t_linux_x86_64-linux-gnu.py")
    assert "'\n" in path.read_text() or "' '" in path.read_text()  # the split literals uv must join
    relocate_sysconfigdata(path)
    literal = UvSysconfig(path.read_text()).parse()
    # every word that starts with the prefix starts with python-build-standalone's /install instead
    assert literal["DESTDIRS"] == "/install /install/lib /install/lib/python3.14t"
    assert literal["INCLUDEPY"] == "/install/include/python3.14t" and literal["prefix"] == "/install"
    # and nothing else changed: not a word that merely contains it, not /usr/bin/install
    unchanged = {
        k: v
        for k, v in CPYTHON_SYSCONFIG.items()
        if k not in ("BINDIR", "DESTDIRS", "INCLUDEPY", "LIBDIR", "LIBPC", "prefix")
    }
    assert {k: literal[k] for k in unchanged} == unchanged
    # what uv writes after installing it into /root/.local/share/uv/python/cpython-3.14.7+freethreaded-…
    real = "/opt/uv/cpython-3.14.7+freethreaded-linux-x86_64-gnu"
    patched = UvSysconfig.patch(literal, real)
    assert patched["INCLUDEPY"] == f"{real}/include/python3.14t" and patched["prefix"] == real
    assert patched["INSTALL"] == "/usr/bin/install -c"
    assert patched["CONFIG_ARGS"] == CPYTHON_SYSCONFIG["CONFIG_ARGS"]


def run_sysconfigdata(path: Path) -> dict[str, Any]:
    ns: dict[str, Any] = {"__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), ns)  # as `import _sysconfigdata_…` runs it
    return dict(ns["build_time_vars"])


def test_sysconfigdata_follows_the_tree_wherever_it_is_unpacked(tmp_path: Path) -> None:
    path = cpython_sysconfigdata(tmp_path / "a" / "lib" / "python3.14t" / "_sysconfigdata_t_linux_x86_64-linux-gnu.py")
    relocate_sysconfigdata(path)
    once = path.read_bytes()
    relocate_sysconfigdata(path)  # idempotent
    assert path.read_bytes() == once
    moved = tmp_path / "moved to" / "b"
    moved.parent.mkdir()
    (tmp_path / "a").rename(moved)
    got = run_sysconfigdata(moved / "lib" / "python3.14t" / path.name)
    assert got["prefix"] == str(moved) and got["INCLUDEPY"] == f"{moved}/include/python3.14t"
    assert got["DESTDIRS"] == f"{moved} {moved}/lib {moved}/lib/python3.14t"
    assert got["INSTALL"] == "/usr/bin/install -c" and got["BOOTSTRAP_HEADERS"] == "\\"
    assert got["CONFIG_ARGS"] == CPYTHON_SYSCONFIG["CONFIG_ARGS"] and got["Py_GIL_DISABLED"] == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("build_time_vars = {'prefix': '/usr/local'}\n", "does not start with '# system configuration"),
        (SYSCONFIG_HEADER + "_vars = {}\nbuild_time_vars = _vars\n", "not one assignment to build_time_vars"),
        (SYSCONFIG_HEADER + "build_time_vars = {'X': 1.5}\n", "printable strings and 32-bit integers"),
        (SYSCONFIG_HEADER + "build_time_vars = {'X': 'a\\tb'}\n", "printable strings and 32-bit integers"),
        (SYSCONFIG_HEADER + "build_time_vars = {'X': 2**40}\n", "malformed node"),
        (SYSCONFIG_HEADER + "build_time_vars = {\n", "was never closed"),
    ],
)
def test_sysconfigdata_uv_could_not_read_is_refused_naming_the_file(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "_sysconfigdata__linux_x86_64-linux-gnu.py"
    path.write_text(text)
    with pytest.raises(ProvisionError) as err:
        relocate_sysconfigdata(path, what="3.14-default-trixie-amd64@quick: lib/python3.14/x.py")
    assert str(err.value).startswith("3.14-default-trixie-amd64@quick: lib/python3.14/x.py is not sysconfig data")
    assert why in str(err.value)
    assert path.read_text() == text  # left as it was


def test_sysconfigdata_already_under_the_placeholder_is_refused(tmp_path: Path) -> None:
    path = cpython_sysconfigdata(tmp_path / "_sysconfigdata__linux_x86_64-linux-gnu.py", {"LIBDIR": "/install/lib"})
    with pytest.raises(ProvisionError, match="LIBDIR already hold paths under /install"):
        relocate_sysconfigdata(path)


def test_pkgconfig_files_find_the_tree_they_lie_in(tmp_path: Path) -> None:
    pc = tmp_path / "python-3.14.pc"
    pc.write_text("prefix=/usr/local\nexec_prefix=${prefix}\nlibdir=${exec_prefix}/lib\nCflags: -I${prefix}/include\n")
    relocate_pkgconfig(pc)
    assert pc.read_text().splitlines()[:2] == ["prefix=${pcfiledir}/../..", "exec_prefix=${prefix}"]
    other = tmp_path / "other.pc"
    other.write_text("prefix=/opt/elsewhere\n")
    relocate_pkgconfig(other)
    assert other.read_text() == "prefix=/opt/elsewhere\n"


# --------------------------------------------------------------------------------- uv's download list


def test_uv_entries_have_python_build_standalones_shape() -> None:
    default, ft = tb("python-3.14.7-linux-trixie-x64.tar.gz"), tb("ft.tar.gz", "freethreaded")
    arm = tb("arm.tar.gz", "freethreaded", arch="arm64-freethreaded", version="3.15.0rc2")
    sums = {"python-3.14.7-linux-trixie-x64.tar.gz": "a" * 64, "ft.tar.gz": "b" * 64, "arm.tar.gz": "c" * 64}
    got = uv_json([default, ft, arm], sums, BASE + "/")
    assert got["cpython-3.14.7-linux-x86_64-gnu"] == {
        "name": "cpython",
        "arch": {"family": "x86_64", "variant": None},
        "os": "linux",
        "libc": "gnu",
        "major": 3,
        "minor": 14,
        "patch": 7,
        "prerelease": "",
        "url": f"{BASE}/python-3.14.7-linux-trixie-x64.tar.gz",
        "sha256": "a" * 64,
        "variant": None,
        "build": "cpforge.aaaaaaaaaaaa",
    }
    free = got["cpython-3.14.7+freethreaded-linux-x86_64-gnu"]
    assert (free["variant"], free["sha256"], free["url"]) == ("freethreaded", "b" * 64, f"{BASE}/ft.tar.gz")
    pre = got["cpython-3.15.0rc2+freethreaded-linux-aarch64-gnu"]
    assert (pre["arch"]["family"], pre["patch"], pre["prerelease"], pre["variant"]) == (
        "aarch64",
        0,
        "rc2",
        "freethreaded",
    )
    assert len(got) == 3


def test_a_version_uv_cannot_read_is_a_clear_error() -> None:
    with pytest.raises(ProvisionError, match=r"x\.tar\.gz: version '3\.14' is not a CPython version uv understands"):
        uv_json([tb("x.tar.gz", version="3.14")], {"x.tar.gz": "0" * 64}, BASE)


def picked(slots: Any, runner: str | None = None) -> dict[str, str]:
    return {uv_key(t): t.filename for t in uv_picks(slots, runner)}


def test_uv_lists_one_build_per_key_by_the_manifests_slot_rule() -> None:
    pool = [
        tb("trixie.tgz", glibc="2.41"),
        tb("bullseye.tgz", glibc="2.31"),
        tb("trixie-quick.tgz", profile="quick", glibc="2.41"),
        tb("jit.tgz", "jit", glibc="2.41"),
        tb("ft.tgz", "freethreaded", glibc="2.41"),
        tb("ft-jit.tgz", "freethreaded-jit", glibc="2.41"),
        tb("sid.tgz", glibc="2.99"),  # no runner runs it: in no manifest, in no uv JSON
    ]
    slots = fill_slots(pool)
    # no host named: the build versions-manifest.json gives the oldest runner, which runs everywhere listed
    assert picked(slots) == {
        "cpython-3.14.7-linux-x86_64-gnu": "bullseye.tgz",
        "cpython-3.14.7+freethreaded-linux-x86_64-gnu": "ft.tgz",
    }
    # a runner OS: exactly what versions-manifest.json gives it
    assert picked(slots, "13") == {
        "cpython-3.14.7-linux-x86_64-gnu": "trixie.tgz",
        "cpython-3.14.7+freethreaded-linux-x86_64-gnu": "ft.tgz",
    }
    assert picked(slots, "22.04") == {"cpython-3.14.7-linux-x86_64-gnu": "bullseye.tgz"}
    for runner in ("11", "12", "13", "20.04", "22.04", "24.04"):
        from_manifest = {t.filename for (_v, _a, r), t in slots.items() if r == runner}
        assert set(picked(slots, runner).values()) == from_manifest
    # the JIT channel's own JSON offers its JIT build under CPython's plain name
    jit_slots = fill_slots([t for t in pool if t.channel == "jit-release"])
    assert picked(jit_slots) == {
        "cpython-3.14.7-linux-x86_64-gnu": "jit.tgz",
        "cpython-3.14.7+freethreaded-linux-x86_64-gnu": "ft-jit.tgz",
    }


def test_uv_picks_do_not_depend_on_the_order_builds_were_provisioned_in() -> None:
    pool = [
        tb("b.tgz", glibc="2.31"),
        tb("bq.tgz", profile="quick", glibc="2.31"),
        tb("t.tgz"),
        tb("tie-b.tgz", glibc="2.31"),
    ]
    expected = picked(fill_slots(pool))
    for seed in range(10):
        random.Random(seed).shuffle(pool)
        assert picked(fill_slots(pool)) == expected == {"cpython-3.14.7-linux-x86_64-gnu": "b.tgz"}


def test_provision_writes_uv_json_beside_every_manifest(tmp_path: Path) -> None:
    rel, quick = specs("release"), specs("quick")
    chosen = [rel["3.14-default-trixie-amd64"], rel["3.14-freethreaded-trixie-amd64"], quick["3.14-jit-trixie-amd64"]]
    rep = report_for(tmp_path, [(s, "linux/amd64") for s in chosen])
    dist = tmp_path / "dist"
    said: list[str] = []
    res = provision(builder(chosen[0], "linux/amd64"), rep, chosen, dist, BASE, say=said.append)  # type: ignore[arg-type]
    assert res.uv == dist / "download-metadata.json"
    assert f"uv: UV_PYTHON_DOWNLOADS_JSON_URL={BASE}/download-metadata.json" in said[-1]
    sums = {
        name: digest for digest, name in (line.split("  ") for line in (dist / "SHA256SUMS").read_text().splitlines())
    }
    main = json.loads(res.uv.read_text())
    assert {k: (e["url"], e["sha256"], e["variant"]) for k, e in main.items()} == {
        "cpython-3.14.7-linux-x86_64-gnu": (
            f"{BASE}/python-3.14.7-linux-trixie-x64.tar.gz",
            sums["python-3.14.7-linux-trixie-x64.tar.gz"],
            None,
        ),
        "cpython-3.14.7+freethreaded-linux-x86_64-gnu": (
            f"{BASE}/python-3.14.7-linux-trixie-x64-freethreaded.tar.gz",
            sums["python-3.14.7-linux-trixie-x64-freethreaded.tar.gz"],
            "freethreaded",
        ),
    }
    for p in res.tarballs:
        assert hashlib.sha256(p.path.read_bytes()).hexdigest() == sums[p.filename]
    jit = json.loads((dist / "channels" / "jit-quick" / "download-metadata.json").read_text())
    assert [e["url"] for e in jit.values()] == [f"{BASE}/python-3.14.7-linux-trixie-x64-jit-quick.tar.gz"]
    per_os = {p.parent.name: json.loads(p.read_text()) for p in (dist / "uv").glob("*/download-metadata.json")}
    assert set(per_os) == {"debian-11", "debian-12", "debian-13", "ubuntu-20.04", "ubuntu-22.04", "ubuntu-24.04"}
    glibc = tuple(int(x) for x in res.tarballs[0].metadata["glibc_min"].split("."))
    for name, listed in per_os.items():  # the fake interpreter needs the host's glibc: the runners that have it
        runs = compatible_platform_versions(f"{glibc[0]}.{glibc[1]}")
        assert (listed == main) if name.split("-")[1] in runs else (listed == {})
    # a channel whose builds are gone loses its uv JSON too
    (dist / "python-3.14.7-linux-trixie-x64-jit-quick.tar.gz").unlink()
    provision(builder(chosen[0], "linux/amd64"), rep, chosen[:1], dist, BASE, say=lambda _: None)  # type: ignore[arg-type]
    assert not (dist / "channels" / "jit-quick").exists()


def test_uv_json_is_the_same_bytes_whatever_order_it_was_provisioned_in(tmp_path: Path) -> None:
    rel = specs("release")
    chosen = [rel["3.14-default-trixie-amd64"], rel["3.14-freethreaded-trixie-amd64"]]
    rep = report_for(tmp_path, [(s, "linux/amd64") for s in chosen])
    engine = builder(chosen[0], "linux/amd64")
    a, b = tmp_path / "a", tmp_path / "b"
    provision(engine, rep, chosen, a, BASE, say=lambda _: None)  # type: ignore[arg-type]
    provision(engine, rep, chosen[::-1], b, BASE, say=lambda _: None)  # type: ignore[arg-type]
    for rel_path in ("download-metadata.json", "uv/debian-13/download-metadata.json", "SHA256SUMS"):
        assert (a / rel_path).read_bytes() == (b / rel_path).read_bytes()


def test_a_version_uv_cannot_read_leaves_every_manifest_as_it_was(tmp_path: Path) -> None:
    rel = specs("release")
    spec = rel["3.14-default-trixie-amd64"]
    rep = report_for(tmp_path, [(spec, "linux/amd64")])
    dist = tmp_path / "dist"
    engine = builder(spec, "linux/amd64")
    first = provision(engine, rep, [spec], dist, BASE, say=lambda _: None)  # type: ignore[arg-type]
    before = {p: p.read_bytes() for p in dist.rglob("*.json")}
    # a tarball whose metadata says a version uv has no name for (written by hand, or a future format)
    (p,) = first.tarballs
    shutil.copy(p.path, dist / "python-3.14-linux-trixie-x64-odd.tar.gz")
    (dist / "python-3.14-linux-trixie-x64-odd.json").write_text(json.dumps({**p.metadata, "version": "3.14"}))
    with pytest.raises(ProvisionError, match=r"python-3\.14-linux-trixie-x64-odd\.tar\.gz: version '3\.14'"):
        provision(engine, rep, [spec], dist, BASE, say=lambda _: None)  # type: ignore[arg-type]
    assert {p: p.read_bytes() for p in dist.rglob("*.json") if "odd" not in p.name} == before
