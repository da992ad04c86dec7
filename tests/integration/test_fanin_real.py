"""The CI fan-out's publishing against real things: Debian's docker-registry on 127.0.0.1, the Docker
engine with a tiny image built FROM the local trixie base (no CPython build), and build.yml's own
fan-in step run by bash with the real `invoke`. Per-entry jobs push images and write no manifest
list; the fan-in writes a group's lists only once every planned platform is in the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from cpforge import matrix as mx
from cpforge import output
from cpforge.engine import Engine
from cpforge.publish import arch_tags, index_tags, publish, publish_lists
from cpforge.registry import Registry
from cpforge.report import Report

from .registries import serving_registry
from .test_publish_lock_real import BASE, FAKE_PYTHON, build_tiny, passed
from .test_registry_real import push_small_image

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QUICK = {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand("quick")}
PLANNED = ["3.14-default-trixie-amd64", "3.14-default-trixie-arm64", "3.14-freethreaded-trixie-amd64"]
PLANNED += ["3.14-freethreaded-trixie-arm64"]
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, storing in a temp dir."""
    with serving_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(autouse=True)
def no_docker_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def listed(registry: str, repo: str, tag: str) -> dict[str, str] | None:
    """The platforms (arch → digest) a manifest list names, or None when the tag does not exist."""
    r = requests.get(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": f"{LIST}, {V2}"}, timeout=10)
    if r.status_code == 404:
        return None
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(LIST), (tag, r.status_code)
    return {m["platform"]["architecture"]: m["digest"] for m in r.json()["manifests"]}


def group_tags(spec: mx.BuildSpec) -> list[str]:
    exact, moving = index_tags(spec)
    return [exact, *moving]


# ------------------------------------------------------------------ the fan-in step of build.yml


def lists_step() -> str:
    fan_in = yaml.safe_load((ROOT / ".github/workflows/build.yml").read_text())["jobs"]["fan-in"]
    (script,) = [s["run"] for s in fan_in["steps"] if "--lists-only" in str(s.get("run", ""))]
    return str(script)


def run_lists_step(registry: str, plan: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """The step as a runner runs it (`bash -e`), with the env build.yml gives it."""
    shim = tmp / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "invoke").write_text(f'#!/bin/sh\nexec {sys.executable} -m invoke --search-root {ROOT} "$@"\n')
    (shim / "invoke").chmod(0o755)
    (tmp / "step.sh").write_text(lists_step())
    env = {
        **os.environ,
        "PATH": f"{shim}:{os.environ['PATH']}",
        "REGISTRY": f"{registry}/fanin",
        "PROFILE": "quick",
        "PLANNED": plan,
    }
    runner = tmp / "runner"
    runner.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "-e", str(tmp / "step.sh")], cwd=runner, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_fan_in_step_writes_complete_groups_only(registry: str, tmp_path: Path) -> None:
    plan = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "matrix", "--json", "--profile", "quick"]
        + [a for eid in PLANNED for a in ("--filter", eid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [e["id"] for e in json.loads(plan)["include"]] == PLANNED
    reg, repo = Registry(registry), "fanin/python"
    default, free = [QUICK[e] for e in PLANNED[:2]], [QUICK[e] for e in PLANNED[2:]]
    # what the per-entry jobs pushed: the free-threaded arm64 job failed
    pushed = {s.id: push_small_image(reg, repo, arch_tags(s)[0], s.platform.arch) for s in [*default, free[0]]}

    done = run_lists_step(registry, plan, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # EntriesFailed: one planned entry is missing
    assert f"SKIPPED   {free[1].key}: {registry}/{repo}:{arch_tags(free[1])[0]} is not in the registry" in done.stdout
    for tag in group_tags(default[0]):
        assert listed(registry, repo, tag) == {s.platform.arch: pushed[s.id].digest for s in default}, tag
    for tag in group_tags(free[0]):
        assert listed(registry, repo, tag) is None, tag  # never a list without its arm64 member

    pushed[free[1].id] = push_small_image(reg, repo, arch_tags(free[1])[0], "arm64")  # the job re-run
    done = run_lists_step(registry, plan, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for tag in group_tags(free[0]):
        assert listed(registry, repo, tag) == {s.platform.arch: pushed[s.id].digest for s in free}, tag
    assert f"unchanged {registry}/fanin/…:{group_tags(default[0])[0]}" in done.stdout


# ------------------------------------------------------------------ a per-entry job, with the real engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine.connect(os.environ.get("CPFORGE_TEST_ENGINE") or None)
    if engine.image_id(BASE) is None:
        pytest.fail(f"{BASE} must be on the engine (`invoke base`)")
    return engine


@pytest.fixture
def made(engine: Engine) -> Iterator[list[str]]:
    refs: list[str] = []
    yield refs
    for ref in reversed(refs):
        engine.remove_image(ref)


def test_images_only_pushes_the_image_and_no_list_then_the_fan_in_lists_it(
    engine: Engine, made: list[str], registry: str, tmp_path: Path
) -> None:
    spec = QUICK["3.14-default-trixie-amd64"]
    local_tag = f"cpforge-helper/python:{spec.id}-fanin"
    image = build_tiny(engine, made, BASE, local_tag, {"usr/local/bin/python3.sh": FAKE_PYTHON}, spec.id)
    made.append(local_tag)
    exact = arch_tags(spec)[0]
    made.append(f"{registry}/jobs/python:{exact}")
    report = Report(tmp_path / "report.json", {spec.key: passed(spec, image, [local_tag])})

    res = publish(engine, report, [spec], f"{registry}/jobs", out=tmp_path, lists=False)
    assert exact in res.pushed and res.deferred == [group_tags(spec)[0]]
    r = requests.get(f"http://{registry}/v2/jobs/python/manifests/{exact}", headers={"Accept": V2}, timeout=10)
    assert r.status_code == 200 and r.json()["config"]["digest"] == image
    assert set(res.sboms) == {spec.key}  # the SBOM goes with the image, not with the lists
    for tag in group_tags(spec):
        assert listed(registry, "jobs/python", tag) is None, tag
    assert any(
        line.startswith(f"  deferred  {registry}/jobs/…:{group_tags(spec)[0]}")
        for line in output.published(res, f"{registry}/jobs").lines
    )

    fan_in = publish_lists([spec], f"{registry}/jobs")
    assert set(fan_in.pushed) == set(group_tags(spec)) and fan_in.skipped == []
    for tag in group_tags(spec):
        assert listed(registry, "jobs/python", tag) == {"amd64": r.headers["Docker-Content-Digest"]}, tag
    again = publish(engine, report, [spec], f"{registry}/jobs", out=tmp_path, lists=False)
    assert again.pushed == [] and exact in again.unchanged
