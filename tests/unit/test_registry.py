"""Manifest-list merging under concurrent writers, credential origins, and the publish-time checks
of local images, against in-memory fakes (the real registry and servers: tests/integration)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cpforge import matrix as mx
from cpforge import publish as pub
from cpforge.publish import IndexGroup, Member, PublishError, index_body, list_members, local_problem, update_index
from cpforge.registry import MANIFEST_LIST_V2, MANIFEST_V2, RegistryError, origin
from cpforge.report import EntryResult, Report

ROOT = Path(__file__).resolve().parents[2]
SPECS = {s.key: s for s in mx.load(ROOT / "matrix.yaml").expand_all()}
REPO = "platform/python"
GROUP = IndexGroup(REPO, "3.14.7-default-trixie-", "-quick", ("3.14.7-default-trixie-quick", "3.14-default-quick"))


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass
class FakeRegistry:
    """Tags and manifests in memory; hooks run around each PUT to play another publisher."""

    host: str = "reg.test"
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, body)
    tag_map: dict[str, str] = field(default_factory=dict)
    before_put: Callable[[FakeRegistry, str], None] | None = None
    after_put: Callable[[FakeRegistry, str], None] | None = None
    puts: list[str] = field(default_factory=list)

    def store(self, tag: str, body: bytes, media_type: str) -> str:
        d = digest_of(body)
        self.manifests[d] = (media_type, body)
        self.tag_map[tag] = d
        return d

    def manifest(self, repo: str, ref: str) -> tuple[str, str, bytes] | None:
        d = ref if ref.startswith("sha256:") else self.tag_map.get(ref)
        if d is None or d not in self.manifests:
            return None
        return d, self.manifests[d][0], self.manifests[d][1]

    def tags(self, repo: str) -> list[str]:
        return sorted(self.tag_map)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        if self.before_put:
            self.before_put(self, ref)
        self.puts.append(ref)
        d = self.store(ref, body, media_type)
        if self.after_put:
            self.after_put(self, ref)
        return d


def push_image(reg: FakeRegistry, arch: str) -> Member:
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": {"digest": f"cfg-{arch}"}}).encode()
    d = reg.store(f"3.14.7-default-trixie-{arch}-quick", body, MANIFEST_V2)
    return Member(arch, d, len(body), MANIFEST_V2)


def archs(reg: FakeRegistry, tag: str) -> dict[str, str]:
    return {a: m.digest for a, m in list_members(reg.manifest(REPO, tag)).items()}


def no_pause(attempt: int) -> None:
    pass


def test_the_first_list_names_our_platform_on_every_tag() -> None:
    reg = FakeRegistry()
    amd = push_image(reg, "amd64")
    out = update_index(reg, GROUP, {"amd64": amd}, pause=no_pause)  # type: ignore[arg-type]
    assert out.pushed == GROUP.tags and out.attempts == 1 and out.archs == ("amd64",)
    for tag in GROUP.tags:
        assert archs(reg, tag) == {"amd64": amd.digest}
    again = update_index(reg, GROUP, {"amd64": amd}, pause=no_pause)  # type: ignore[arg-type]
    assert again.pushed == () and again.unchanged == GROUP.tags  # idempotent: nothing written


def test_merge_keeps_platforms_others_listed_and_published() -> None:
    reg = FakeRegistry()
    arm = push_image(reg, "arm64")
    update_index(reg, GROUP, {"arm64": arm}, pause=no_pause)  # type: ignore[arg-type]
    amd = push_image(reg, "amd64")
    out = update_index(reg, GROUP, {"amd64": amd}, pause=no_pause)  # type: ignore[arg-type]
    assert out.archs == ("amd64", "arm64")
    for tag in GROUP.tags:
        assert archs(reg, tag) == {"amd64": amd.digest, "arm64": arm.digest}


def test_a_list_overwritten_right_after_our_write_is_merged_again() -> None:
    """Another publisher read before our write and writes after it: our platform is lost once."""
    reg = FakeRegistry()
    amd, arm = push_image(reg, "amd64"), push_image(reg, "arm64")
    stale = index_body([arm])
    clobbered: list[str] = []

    def other_publisher(r: FakeRegistry, tag: str) -> None:
        if tag not in clobbered:
            clobbered.append(tag)
            r.store(tag, stale, MANIFEST_LIST_V2)  # its read predates ours: it lists arm64 only

    reg.after_put = other_publisher
    pauses: list[int] = []
    out = update_index(reg, GROUP, {"amd64": amd}, pause=pauses.append)  # type: ignore[arg-type]
    assert out.attempts == 2 and pauses == [1]
    for tag in GROUP.tags:
        assert archs(reg, tag) == {"amd64": amd.digest, "arm64": arm.digest}


def test_a_platform_published_after_our_read_is_not_dropped() -> None:
    """The case a plain read-merge-write loses although both publishers check their own platform:
    the arm64 job publishes (tag, list, check) between our read and our write, then we overwrite."""
    reg = FakeRegistry()
    amd = push_image(reg, "amd64")
    arm: list[Member] = []

    def arm64_job(r: FakeRegistry, tag: str) -> None:
        if not arm:
            arm.append(push_image(r, "arm64"))
            for t in GROUP.tags:
                r.store(t, index_body([arm[0]]), MANIFEST_LIST_V2)

    reg.before_put = arm64_job
    out = update_index(reg, GROUP, {"amd64": amd}, pause=no_pause)  # type: ignore[arg-type]
    assert out.attempts == 2
    for tag in GROUP.tags:
        assert archs(reg, tag) == {"amd64": amd.digest, "arm64": arm[0].digest}


def test_a_lost_update_that_keeps_happening_is_a_clear_error() -> None:
    reg = FakeRegistry()
    amd, arm = push_image(reg, "amd64"), push_image(reg, "arm64")
    reg.after_put = lambda r, tag: r.store(tag, index_body([arm]), MANIFEST_LIST_V2) and None
    pauses: list[int] = []
    with pytest.raises(RegistryError, match="another publisher kept overwriting") as exc:
        update_index(reg, GROUP, {"amd64": amd}, attempts=3, pause=pauses.append)  # type: ignore[arg-type]
    assert pauses == [1, 2]  # growing backoff between attempts, none after the last
    assert exc.value.exit_code == 12 and "lacks amd64" in exc.value.message and exc.value.hint


def test_a_listed_member_missing_from_the_repository_writes_nothing() -> None:
    reg = FakeRegistry()
    amd = push_image(reg, "amd64")
    ghost = Member("s390x", "sha256:" + "0" * 64, 10)
    reg.store(GROUP.exact, index_body([ghost]), MANIFEST_LIST_V2)
    with pytest.raises(PublishError, match="s390x"):
        update_index(reg, GROUP, {"amd64": amd}, pause=no_pause)  # type: ignore[arg-type]
    assert reg.puts == []


def test_dry_run_plans_and_writes_nothing() -> None:
    reg = FakeRegistry()
    amd = push_image(reg, "amd64")
    out = update_index(reg, GROUP, {"amd64": amd}, dry_run=True, pause=no_pause)  # type: ignore[arg-type]
    assert reg.puts == [] and len(out.planned) == 2 and "(amd64)" in out.planned[0]


def test_group_arch_tags() -> None:
    assert GROUP.arch_of("3.14.7-default-trixie-arm64-quick") == "arm64"
    assert GROUP.arch_of("3.14.7-default-trixie-quick") is None  # the list itself
    release = IndexGroup(REPO, "3.14.7-default-trixie-", "", ("3.14.7-default-trixie",))
    assert release.arch_of("3.14.7-default-trixie-amd64") == "amd64"
    assert release.arch_of("3.14.7-default-trixie-amd64-quick") is None  # a quick build is another group
    spec = SPECS["3.14-freethreaded-trixie-arm64@quick"]
    group = IndexGroup.for_spec(REPO, spec)
    assert group.arch_of(pub.arch_tags(spec)[0]) == "arm64" and group.exact == pub.index_tags(spec)[0]


def test_opt_in_distros_keep_their_hands_off_the_short_tags() -> None:
    bullseye = next(s for s in SPECS.values() if s.distro.opt_in and s.variant.name == "default")
    exact, moving = pub.index_tags(bullseye)
    assert exact == f"{bullseye.version}-default-bullseye{bullseye.profile.tag_suffix}"
    assert moving == [f"{bullseye.minor}-default-bullseye{bullseye.profile.tag_suffix}"]


def test_origin_is_scheme_host_and_port() -> None:
    assert origin("http://127.0.0.1:5000/v2/") == ("http", "127.0.0.1", 5000)
    assert origin("https://Reg.Example/v2/x") == origin("https://reg.example:443/other")
    assert origin("http://127.0.0.1:5000/") != origin("http://127.0.0.1:5001/")
    assert origin("http://reg.example/") != origin("https://reg.example/")


# ------------------------------------------------------------------ publish re-verifies local images


class FakeEngine:
    """Images by id and tag; ``moves`` retags a ref after it was looked up that many times."""

    def __init__(self, spec: mx.BuildSpec, image: str) -> None:
        self.refs: dict[str, str] = {image: image}
        self.info = {image: {"Architecture": spec.platform.arch, "Config": {"Labels": {"io.cpforge.entry": spec.id}}}}
        self.lookups: dict[str, int] = {}
        self.moves: dict[str, tuple[int, str | None]] = {}
        self.pushed: list[str] = []
        self.tagged: list[str] = []

    def image_id(self, ref: str) -> str | None:
        self.lookups[ref] = self.lookups.get(ref, 0) + 1
        after, target = self.moves.get(ref, (0, ""))
        if after and self.lookups[ref] > after:
            return target
        if ref.startswith("sha256:") and len(ref) < 71:  # a short id, as the engine resolves it
            return next((i for i in self.refs.values() if i.startswith(ref)), None)
        return self.refs.get(ref)

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return self.info[self.refs[ref]]

    def tag(self, image: str, ref: str) -> None:
        self.tagged.append(ref)

    def push(self, ref: str, auth: object = None, retries: int = 3) -> str:
        self.pushed.append(ref)
        return "sha256:pushed"


def passed_entry(spec: mx.BuildSpec, image: str) -> EntryResult:
    return EntryResult.of(spec, status="passed", image_id=image, tags=[f"cpforge/python:{spec.id}-quick"])


SPEC = SPECS["3.14-default-trixie-amd64@quick"]
IMAGE = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def test_local_problem_names_what_moved() -> None:
    engine = FakeEngine(SPEC, IMAGE)
    res = passed_entry(SPEC, IMAGE)
    engine.refs[res.tags[0]] = IMAGE
    assert local_problem(engine, SPEC, res) is None  # type: ignore[arg-type]
    engine.refs[res.tags[0]] = OTHER
    why = local_problem(engine, SPEC, res)  # type: ignore[arg-type]
    assert why == f"tag {res.tags[0]} points to image {OTHER[:19]}, not the report's image {IMAGE[:19]}"
    del engine.refs[res.tags[0]]
    assert "points to nothing" in str(local_problem(engine, SPEC, res))  # type: ignore[arg-type]
    res.image_id = IMAGE[:19]  # a short id that resolves to the image is not the report's id
    assert "resolves it to" in str(local_problem(engine, SPEC, res))  # type: ignore[arg-type]
    res.image_id = OTHER
    assert "no longer exists" in str(local_problem(engine, SPEC, res))  # type: ignore[arg-type]


def test_publish_skips_an_image_whose_tag_points_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(SPEC, IMAGE)
    res = passed_entry(SPEC, IMAGE)
    engine.refs[res.tags[0]] = OTHER
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    reg = FakeRegistry(host="reg.test")
    reg.ping = lambda: pytest.fail("nothing to publish: the registry is not even asked")  # type: ignore[attr-defined]
    monkeypatch.setattr(pub, "Registry", lambda *a, **k: reg)
    report = Report(tmp_path / "report.json", {SPEC.key: res})
    out = pub.publish(engine, report, [SPEC], "reg.test/platform", out=tmp_path)  # type: ignore[arg-type]
    assert out.pushed == [] and len(out.skipped) == 1 and reg.puts == []
    assert f"tag {res.tags[0]} points to image {OTHER[:19]}" in out.skipped[0]
    assert f"invoke build --filter '{SPEC.id}' --profile quick" in out.skipped[0]
    assert engine.pushed == []


def test_publish_refuses_an_image_retagged_between_the_check_and_the_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(SPEC, IMAGE)
    res = passed_entry(SPEC, IMAGE)
    engine.refs[res.tags[0]] = IMAGE
    engine.moves[res.tags[0]] = (1, OTHER)  # passes the plan's check, moved before the push
    reg = FakeRegistry(host="reg.test")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setattr(pub, "Registry", lambda *a, **k: reg)
    reg.ping = lambda: None  # type: ignore[attr-defined]
    report = Report(tmp_path / "report.json", {SPEC.key: res})
    with pytest.raises(PublishError, match="changed on the engine while publishing") as exc:
        pub.publish(engine, report, [SPEC], "reg.test/platform", out=tmp_path)  # type: ignore[arg-type]
    assert "it was not pushed" in exc.value.message and exc.value.hint and "invoke build" in exc.value.hint
    assert engine.pushed == [] and engine.tagged == [] and reg.puts == []
