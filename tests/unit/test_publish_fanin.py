"""The CI fan-in's half of publishing, against the in-memory registry of test_registry.py:
`publish_lists` writes a group's manifest lists only when every selected platform's per-arch exact
tag is in the registry, leaves incomplete groups as they were, never moves a listed platform without
--force, and is idempotent. (The real registry, engine and workflow step: tests/integration/test_fanin_real.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpforge import matrix as mx
from cpforge import publish as pub
from cpforge.publish import IndexGroup, Member, PublishError, arch_tags, index_body, publish_lists
from cpforge.registry import MANIFEST_LIST_V2, MANIFEST_V2

from .test_cli import run
from .test_registry import SPECS, FakeRegistry, archs

TARGET = "reg.test/platform"
REPO = "platform/python"
DEFAULT = [SPECS[f"3.14-default-trixie-{a}@quick"] for a in ("amd64", "arm64")]
FREE = [SPECS[f"3.14-freethreaded-trixie-{a}@quick"] for a in ("amd64", "arm64")]


def push(reg: FakeRegistry, spec: mx.BuildSpec, config: str = "") -> Member:
    """What a per-entry `publish --images-only` job leaves: a single-image manifest under the exact arch tag."""
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": {"digest": config or f"cfg-{spec.id}"}}
    ).encode()
    return Member(spec.platform.arch, reg.store(arch_tags(spec)[0], body, MANIFEST_V2), len(body), MANIFEST_V2)


@pytest.fixture
def reg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeRegistry:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    fake = FakeRegistry(host="reg.test")
    fake.ping = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setattr(pub, "Registry", lambda *a, **k: fake)
    return fake


def group(spec: mx.BuildSpec) -> IndexGroup:
    return IndexGroup.for_spec(REPO, spec)


def test_complete_groups_get_their_lists_and_incomplete_ones_keep_theirs(reg: FakeRegistry) -> None:
    members = {s.platform.arch: push(reg, s) for s in DEFAULT}
    free_amd = push(reg, FREE[0])  # the arm64 free-threaded job failed
    old = reg.store(group(FREE[0]).exact, index_body([free_amd]), MANIFEST_LIST_V2)  # an earlier run's list
    res = publish_lists([*DEFAULT, *FREE], TARGET)
    for tag in group(DEFAULT[0]).tags:
        assert archs(reg, tag) == {a: m.digest for a, m in members.items()}, tag
    assert set(res.pushed) == set(group(DEFAULT[0]).tags)
    assert reg.tag_map[group(FREE[0]).exact] == old  # left as it was
    assert not any(t in reg.puts for t in group(FREE[0]).tags)
    (skipped,) = res.skipped
    assert skipped.startswith(f"{FREE[1].key}: reg.test/{REPO}:{arch_tags(FREE[1])[0]} is not in the registry")
    assert "3.14.7-freethreaded-trixie-quick, 3.14-freethreaded-trixie-quick" in skipped


def test_a_list_under_a_per_arch_tag_is_not_a_member(reg: FakeRegistry) -> None:
    amd = push(reg, DEFAULT[0])
    reg.store(arch_tags(DEFAULT[1])[0], index_body([amd]), MANIFEST_LIST_V2)  # not an arm64 image
    res = publish_lists(DEFAULT, TARGET)
    assert res.pushed == [] and reg.puts == [] and len(res.skipped) == 1


def test_only_the_selected_platforms_are_required(reg: FakeRegistry) -> None:
    amd = push(reg, DEFAULT[0])
    res = publish_lists(DEFAULT[:1], TARGET)  # e.g. --platform linux/amd64
    assert res.skipped == [] and archs(reg, group(DEFAULT[0]).exact) == {"amd64": amd.digest}


def test_it_is_idempotent_and_a_dry_run_writes_nothing(reg: FakeRegistry) -> None:
    for s in DEFAULT:
        push(reg, s)
    planned = publish_lists(DEFAULT, TARGET, dry_run=True)
    assert reg.puts == [] and len(planned.planned) == len(group(DEFAULT[0]).tags)
    first = publish_lists(DEFAULT, TARGET)
    puts = list(reg.puts)
    again = publish_lists(DEFAULT, TARGET)
    assert first.pushed and again.pushed == [] and set(again.unchanged) == set(group(DEFAULT[0]).tags)
    assert reg.puts == puts


def test_a_listed_platform_is_not_moved_without_force(reg: FakeRegistry) -> None:
    old = {s.platform.arch: push(reg, s) for s in DEFAULT}
    publish_lists(DEFAULT, TARGET)
    moved = push(reg, DEFAULT[0], config="cfg-rebuilt")  # someone re-pushed amd64 with --force
    for s in FREE:
        push(reg, s)
    puts = list(reg.puts)
    with pytest.raises(PublishError, match="refusing to move exact tags") as err:
        publish_lists([*DEFAULT, *FREE], TARGET)
    assert f"lists amd64 as {old['amd64'].digest}, which is not the published" in err.value.message
    assert reg.puts == puts  # nothing written, not even the other, complete group
    publish_lists([*DEFAULT, *FREE], TARGET, force=True)
    assert archs(reg, group(DEFAULT[0]).exact) == {"amd64": moved.digest, "arm64": old["arm64"].digest}


def test_images_only_and_lists_only_exclude_each_other(capfd: pytest.CaptureFixture[str]) -> None:
    done = run(capfd, "publish", "--registry", "r.test/x", "--images-only", "--lists-only", "--filter", "3.14-*")
    assert done.code == 64 and "--images-only and --lists-only exclude each other" in done.err
