"""Tag naming, credentials lookup and lock comparisons (no Docker needed)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from cpforge import matrix as mx
from cpforge import render
from cpforge.engine import RunResult
from cpforge.lock import (
    Lock,
    LockError,
    check_locked,
    current_inputs,
    drop_superseded_pgo_profiles,
    package_drift,
    pin_pgo_profile,
    stale,
    write,
)
from cpforge.matrix import BuildSpec
from cpforge.publish import arch_tags, index_tags
from cpforge.registry import Credentials, RegistryError, credentials_for, parse_reference
from cpforge.report import EntryResult, Report

ROOT = Path(__file__).resolve().parents[2]
SPECS = {s.key: s for s in mx.load(ROOT / "matrix.yaml").expand_all()}


def test_tags_for_release_and_quick() -> None:
    ft = SPECS["3.14-freethreaded-trixie-arm64@release"]
    assert arch_tags(ft) == ("3.14.7-freethreaded-trixie-arm64", ["3.14-freethreaded-trixie-arm64"])
    assert index_tags(ft) == ("3.14.7-freethreaded-trixie", ["3.14-freethreaded-trixie", "3.14-freethreaded", "3.14t"])
    quick = SPECS["3.13-default-trixie-amd64@quick"]
    assert index_tags(quick)[1][-1] == "3.13-quick"
    assert index_tags(SPECS["3.13-jit-trixie-amd64@release"])[1] == ["3.13-jit-trixie", "3.13-jit"]
    assert index_tags(SPECS["3.13-freethreaded-jit-trixie-amd64@release"])[1][-1] == "3.13t-jit"


def test_parse_reference() -> None:
    assert parse_reference("127.0.0.1:5000/platform/team") == ("127.0.0.1:5000", "platform/team")
    with pytest.raises(RegistryError):
        parse_reference("not a registry")


def test_credentials_from_docker_config_are_not_printed(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    auth = base64.b64encode(b"alice:s3cret").decode()
    cfg.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": auth}}}))
    creds = credentials_for("reg.example:5000", cfg)
    assert creds == Credentials("alice", "s3cret")
    assert "s3cret" not in repr(creds)
    assert credentials_for("other.example", cfg) is None


def test_lock_names_each_changed_input(tmp_path: Path) -> None:
    spec = SPECS["3.13-default-trixie-amd64@quick"]
    renderer = render.Renderer(ROOT / "templates")
    now = current_inputs(ROOT, renderer, spec)
    lock = Lock(tmp_path / "matrix.lock", {spec.key: {"inputs": now.as_dict()}})
    assert lock.problems(spec, now) == []
    changed = dict(now.scripts)
    changed["scripts/smoke.py"] = "0" * 64
    problems = lock.problems(spec, type(now)(now.source_sha256, now.dockerfile_sha256, changed, now.base_image))
    assert len(problems) == 1 and problems[0].startswith("scripts/smoke.py")
    assert lock.problems(SPECS["3.13-jit-trixie-amd64@quick"], now) == [
        "3.13-jit-trixie-amd64@quick is not in matrix.lock"
    ]


def test_lock_pins_the_pgo_profile_and_refuses_a_missing_or_changed_one(tmp_path: Path) -> None:
    import shutil

    release = SPECS["3.13-default-trixie-amd64@release"]
    assert release.pgo_profile == f"pgo/3.13-default-trixie-amd64.release.{release.pgo_config}.tar.xz"
    assert SPECS["3.13-default-trixie-amd64@quick"].pgo_profile is None
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", root / "scripts")
    renderer = render.Renderer(ROOT / "templates")
    built = tmp_path / "pgo-profile.tar.xz"
    built.write_bytes(b"gcda counters")
    used = {"path": str(built), "sha256": __import__("hashlib").sha256(b"gcda counters").hexdigest()}
    assert current_inputs(root, renderer, release).pgo_profile_sha256 is None
    assert pin_pgo_profile(root, release, used) is True  # first lock: pinned from the build
    assert (root / release.pgo_profile).read_bytes() == b"gcda counters"
    assert pin_pgo_profile(root, release, used) is False  # already pinned, and the build used it
    now = current_inputs(root, renderer, release)
    assert now.pgo_profile_sha256 == used["sha256"]
    lock = Lock(tmp_path / "matrix.lock", {release.key: {"inputs": now.as_dict()}})
    assert lock.problems(release, now) == []
    # one byte of the pinned profile changes: --locked names it
    (root / release.pgo_profile).write_bytes(b"gcda counterz")
    problems = lock.problems(release, current_inputs(root, renderer, release))
    assert len(problems) == 1 and problems[0].startswith(f"{release.pgo_profile}: PGO profile sha256")
    with pytest.raises(LockError, match="did not use the pinned PGO profile"):
        pin_pgo_profile(root, release, used)
    (root / release.pgo_profile).unlink()
    assert lock.problems(release, current_inputs(root, renderer, release)) == [
        f"{release.pgo_profile}: the pinned PGO profile is missing (lock: sha256 {used['sha256'][:16]}…; "
        "a changed build configuration changes its name: the build trains afresh)"
    ]
    with pytest.raises(LockError, match="left no PGO profile"):
        pin_pgo_profile(root, release, {})


def test_a_pgo_profile_is_named_for_the_build_configuration_it_was_trained_on(tmp_path: Path) -> None:
    """Training counts arcs of the code GCC compiled: a profile from other flags fails the build
    (-Werror=coverage-mismatch). So a changed configuration looks for another file and trains."""
    import dataclasses

    release = SPECS["3.13-default-trixie-amd64@release"]
    assert re.fullmatch(r"[0-9a-f]{12}", release.pgo_config)
    variants = [
        dataclasses.replace(release, profile=dataclasses.replace(release.profile, cflags_nodist=("-O2",))),
        dataclasses.replace(release, profile=dataclasses.replace(release.profile, pgo_task=("-m", "test"))),
        dataclasses.replace(release, profile=dataclasses.replace(release.profile, builtin_modules=("math",))),
        dataclasses.replace(release, source=dataclasses.replace(release.source, sha256="0" * 64)),
        SPECS["3.13-default-trixie-arm64@release"],
    ]
    names = {release.pgo_profile, *(v.pgo_profile for v in variants)}
    assert len(names) == len(variants) + 1
    assert dataclasses.replace(release, repository="other/python").pgo_profile == release.pgo_profile
    # lock, pinning a newly trained profile, drops the entry's profiles no build can use any more
    root = tmp_path / "repo"
    (root / "pgo").mkdir(parents=True)
    old = [f"pgo/{release.id}.release.tar.xz", f"pgo/{release.id}.release.0123456789ab.tar.xz"]
    keep = [
        "pgo/README.md",
        f"pgo/{release.id}.quick.0123456789ab.tar.xz",
        "pgo/3.13-default-trixie-arm64.release.tar.xz",
    ]
    for name in (*old, *keep):
        (root / name).write_bytes(b"x")
    built = tmp_path / "pgo-profile.tar.xz"
    built.write_bytes(b"gcda counters")
    used = {"path": str(built), "sha256": __import__("hashlib").sha256(b"gcda counters").hexdigest()}
    assert pin_pgo_profile(root, release, used) is True
    assert drop_superseded_pgo_profiles(root, release) == sorted(old)
    assert sorted(str(p.relative_to(root)) for p in (root / "pgo").iterdir()) == sorted([*keep, release.pgo_profile])


def test_only_locked_entries_can_be_stale(tmp_path: Path) -> None:
    spec, other = SPECS["3.13-default-trixie-amd64@quick"], SPECS["3.13-jit-trixie-amd64@quick"]
    renderer = render.Renderer(ROOT / "templates")
    inputs = current_inputs(ROOT, renderer, spec).as_dict()
    lock = Lock(tmp_path / "matrix.lock", {spec.key: {"inputs": inputs}})
    assert stale(lock, ROOT, renderer, [spec, other]) == []  # `other` is unlocked, not stale
    lock.entries[spec.key]["inputs"] = {**inputs, "base_image": "cpforge/debian:sid-amd64"}
    assert stale(lock, ROOT, renderer, [spec, other]) == [
        f"{spec.key}: base image cpforge/debian:trixie-amd64 (lock: cpforge/debian:sid-amd64)"
    ]


def test_package_drift() -> None:
    assert package_drift({"a": "1"}, {"a": "1"}, "runtime") == []
    assert package_drift({"a": "1"}, {"a": "2", "b": "1"}, "runtime") == [
        "runtime package a: lock 1, built 2",
        "runtime package b: lock absent, built 1",
    ]
# ------------------------------------------------------------------ lock: base image ids, builder platform


class LockEngine:
    """Images by ref (id -> layers); records the platform each container was asked to run on."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.layers: dict[str, list[str]] = {}
        self.runs: list[tuple[str, str]] = []

    def add(self, ref: str, image_id: str, layers: list[str]) -> None:
        self.ids[ref] = self.ids[image_id] = image_id
        self.layers[image_id] = layers

    def image_id(self, ref: str) -> str | None:
        return self.ids.get(ref)

    def inspect_image(self, ref: str) -> dict[str, object]:
        return {"Id": self.ids[ref], "RootFS": {"Layers": self.layers[self.ids[ref]]}}

    def run(self, image: str, command: list[str], platform: str | None = None) -> RunResult:
        self.runs.append((image, platform or ""))
        return RunResult(0, f"libc6={image[-4:]}\n", "")


def sha(c: str) -> str:
    return "sha256:" + c * 64


def arm64_build(native: bool) -> tuple[LockEngine, Report, BuildSpec]:
    """An arm64 entry that passed: built on an arm64 builder (--native) or cross-built on amd64."""
    spec = SPECS["3.14-default-trixie-arm64@quick"]
    engine = LockEngine()
    engine.add("cpforge/debian:trixie-arm64", sha("1"), ["L-arm"])
    engine.add("cpforge/debian:trixie-amd64", sha("2"), ["L-amd"])
    engine.add(sha("3"), sha("3"), ["L-arm", "L-runtime"])  # runtime image, FROM the arm64 base
    engine.add(sha("4"), sha("4"), ["L-arm" if native else "L-amd", "L-builder"])  # the artifact (builder) image
    res = EntryResult(
        key=spec.key,
        id=spec.id,
        profile="quick",
        version=spec.version,
        variant="default",
        platform=spec.platform.name,
        status="passed",
        image_id=sha("3"),
        artifact_image_id=sha("4"),
    )
    if native:
        res.builder_platform = "linux/arm64"  # type: ignore[attr-defined]  # report.py's new field
    return engine, Report(Path("report.json"), {spec.key: res}), spec


@pytest.mark.parametrize("native", [True, False])
def test_lock_reads_the_builder_on_the_platform_it_ran_on(tmp_path: Path, native: bool) -> None:
    engine, report, spec = arm64_build(native)
    lock = Lock(tmp_path / "matrix.lock")
    renderer = render.Renderer(ROOT / "templates")
    written, _ = write(lock, ROOT, renderer, report, engine, [spec])  # type: ignore[arg-type]
    assert written == [spec.key]
    builder = "linux/arm64" if native else "linux/amd64"
    assert (sha("4"), builder) in engine.runs  # builder packages read on the builder's own platform
    assert (sha("3"), "linux/arm64") in engine.runs
    entry = lock.entries[spec.key]
    assert entry["builder_platform"] == builder
    if native:  # one base serves both stages
        assert entry["bases"] == {"cpforge/debian:trixie-arm64": sha("1")}
    else:
        assert entry["bases"] == {"cpforge/debian:trixie-arm64": sha("1"), "cpforge/debian:trixie-amd64": sha("2")}
        assert ("cpforge/debian:trixie-amd64", "linux/amd64") in engine.runs
    assert set(json.loads(lock.path.read_text())["bases"]) == set(entry["bases"])


def test_lock_refuses_a_base_that_changed_after_the_build(tmp_path: Path) -> None:
    engine, report, spec = arm64_build(native=True)
    engine.add("cpforge/debian:trixie-arm64", sha("5"), ["L-new"])  # re-pulled after the build
    lock = Lock(tmp_path / "matrix.lock")
    with pytest.raises(LockError, match=r"was not built FROM the cpforge/debian:trixie-arm64 now on the engine"):
        write(lock, ROOT, render.Renderer(ROOT / "templates"), report, engine, [spec])  # type: ignore[arg-type]
    assert not lock.path.exists()


def test_locked_refuses_a_base_whose_id_differs_naming_both_ids(tmp_path: Path) -> None:
    engine, report, spec = arm64_build(native=False)
    renderer = render.Renderer(ROOT / "templates")
    lock = Lock(tmp_path / "matrix.lock")
    write(lock, ROOT, renderer, report, engine, [spec])  # type: ignore[arg-type]
    check_locked(Lock.load(lock.path), ROOT, renderer, [spec], engine=engine)  # type: ignore[arg-type]
    engine.add("cpforge/debian:trixie-amd64", sha("6"), ["L-amd2"])  # the builder base moved
    with pytest.raises(LockError) as exc:
        check_locked(Lock.load(lock.path), ROOT, renderer, [spec], engine=engine)  # type: ignore[arg-type]
    text = str(exc.value)
    assert f"{spec.key}: base image cpforge/debian:trixie-amd64 is {sha('6')} on this engine" in text
    assert f"matrix.lock pins {sha('2')}" in text and "invoke lock" in text and exc.value.exit_code == 10
    assert "cpforge/debian:trixie-arm64" not in text  # the base that did not move is not named
    del engine.ids["cpforge/debian:trixie-amd64"]
    with pytest.raises(LockError, match=r"trixie-amd64 is not on this engine.*`invoke base`"):
        check_locked(Lock.load(lock.path), ROOT, renderer, [spec], engine=engine)  # type: ignore[arg-type]


def test_a_lock_from_before_per_entry_bases_pins_the_runtime_base(tmp_path: Path) -> None:
    spec = SPECS["3.14-default-trixie-amd64@quick"]
    lock = Lock(
        tmp_path / "matrix.lock",
        {spec.key: {"inputs": {"base_image": spec.base_image}}},
        {spec.base_image: {"image_id": sha("7")}},
    )
    assert lock.locked_bases_of(spec.key) == {spec.base_image: sha("7")}
    engine = LockEngine()
    engine.add(spec.base_image, sha("8"), [])
    assert lock.base_problems(spec, engine)[0].startswith(f"base image {spec.base_image} is {sha('8')}")  # type: ignore[arg-type]


def test_build_locked_compares_base_ids_before_building_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import shutil

    from cpforge import api
    from cpforge.build import BuildOptions
    from cpforge.progress import Progress

    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    ctx = api.Context.create(tmp_path / "matrix.yaml", root=ROOT, out=tmp_path / "out")
    (spec,) = api.plan(ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    inputs = current_inputs(ROOT, ctx.renderer, spec).as_dict()
    Lock(ctx.lock_path, {spec.key: {"inputs": inputs, "bases": {spec.base_image: sha("1")}}}).save()
    engine = LockEngine()
    engine.add(spec.base_image, sha("2"), [])
    monkeypatch.setattr(api, "Builder", lambda *a, **k: pytest.fail("--locked must refuse before building"))
    progress = Progress(1, stream=io.StringIO(), heartbeat=0)
    with pytest.raises(LockError) as exc:
        api.build(ctx, engine, [spec], BuildOptions(), progress, locked=True)  # type: ignore[arg-type]
    assert exc.value.message == (
        f"--locked: inputs differ from matrix.lock:\n  - {spec.key}: base image {spec.base_image} is {sha('2')} on "
        f"this engine, but matrix.lock pins {sha('1')} (fix: restore the locked base, e.g. pull it by digest or "
        "`docker load` it; or accept the new one: build without --locked, then `invoke lock`)"
    )
