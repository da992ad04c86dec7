"""publish and lock against the real Docker engine and a real registry, with tiny images built
FROM the local trixie base (no CPython build): publish re-checks each image right before pushing
it and reports progress; lock records base image ids; --locked refuses a base whose id changed."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cpforge import matrix as mx
from cpforge import render
from cpforge.engine import Engine, context_tar
from cpforge.errors import CpforgeError
from cpforge.lock import Lock, LockError, check_locked, write
from cpforge.progress import Progress
from cpforge.publish import publish
from cpforge.report import EntryResult, Report

from .registries import serving_registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BASE = "cpforge/debian:trixie-amd64"  # present on the engine; only ever read, never tagged or removed
SPEC = {s.key: s for s in mx.load(ROOT / "matrix.yaml").expand_all()}["3.14-default-trixie-amd64@quick"]
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
V2 = "application/vnd.docker.distribution.manifest.v2+json"
# what publish's SBOM probe asks `python3` for: the tiny image answers it without CPython
FAKE_PYTHON = b"""#!/bin/sh
echo '{"expat": "2.7.1", "mpdecimal": "4.0.1", "sqlite": "3.46.1", "openssl": "OpenSSL 3.5.1"}'
"""


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine.connect(os.environ.get("CPFORGE_TEST_ENGINE") or None)
    if engine.image_id(BASE) is None:
        pytest.fail(f"{BASE} must be on the engine (`invoke base`)")
    return engine


@pytest.fixture(scope="module")
def made(engine: Engine) -> Iterator[list[str]]:
    """Refs this module creates; each is removed (untagged, or the image deleted) at the end."""
    refs: list[str] = []
    yield refs
    for ref in reversed(refs):
        engine.remove_image(ref)


def build_tiny(engine: Engine, made: list[str], base: str, tag: str, files: dict[str, bytes], label: str) -> str:
    copies = "".join(f"COPY {name} /{name.removesuffix('.sh')}\n" for name in sorted(files))
    dockerfile = f"FROM {base}\n{copies}LABEL io.cpforge.entry={label}\n"
    log = io.StringIO()
    image = engine.build(context_tar({"Dockerfile": dockerfile.encode(), **files}), tag=tag, log=log)
    made.append(image)
    return image


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, storing in a temp dir."""
    with serving_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def manifest(registry: str, repo: str, ref: str) -> tuple[int, dict[str, object]]:
    r = requests.get(f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": f"{LIST}, {V2}"}, timeout=10)
    return r.status_code, (r.json() if r.status_code == 200 else {})


def passed(spec: mx.BuildSpec, image: str, tags: list[str], artifact: str | None = None) -> EntryResult:
    return EntryResult.of(
        spec,
        status="passed",
        image_id=image,
        artifact_image_id=artifact,
        tags=tags,
        builder_platform=spec.platform.name,
    )


def test_publish_pushes_only_what_is_still_the_verified_image(
    engine: Engine, made: list[str], registry: str, tmp_path: Path
) -> None:
    local_tag = f"cpforge-helper/python:{SPEC.id}-quick"
    image = build_tiny(engine, made, BASE, local_tag, {"usr/local/bin/python3.sh": FAKE_PYTHON}, SPEC.id)
    made.append(local_tag)
    pushed_ref = f"{registry}/helper/python:{SPEC.version}-default-trixie-amd64-quick"
    made.append(pushed_ref)
    report = Report(tmp_path / "report.json", {SPEC.key: passed(SPEC, image, [local_tag])})
    target = f"{registry}/helper"

    # 1. a name collision: the report's tag now names another image -> refused, nothing pushed
    engine.tag(engine.image_id(BASE) or "", local_tag)
    res = publish(engine, report, [SPEC], target, out=tmp_path)
    assert res.pushed == [] and len(res.skipped) == 1
    assert f"tag {local_tag} points to image {(engine.image_id(BASE) or '')[:19]}" in res.skipped[0]
    assert f"not the report's image {image[:19]}" in res.skipped[0] and "invoke build --filter" in res.skipped[0]
    assert manifest(registry, "helper/python", f"{SPEC.version}-default-trixie-amd64-quick")[0] == 404
    assert engine.image_id(pushed_ref) is None  # not even tagged for the push

    # 2. the tag points at the verified image again -> pushed, with progress lines
    engine.tag(image, local_tag)
    stream = io.StringIO()
    with Progress(total=1, stream=stream, heartbeat=0) as progress:
        res = publish(engine, report, [SPEC], target, out=tmp_path, progress=progress)
    text = stream.getvalue()
    assert f"▶ {SPEC.key}: pushing → {pushed_ref}" in text
    assert f"✓ {SPEC.key}: pushed {pushed_ref} in " in text
    assert f"✓ {SPEC.version}-default-trixie-quick: manifest lists pushed [amd64] in " in text
    status, pushed_manifest = manifest(registry, "helper/python", f"{SPEC.version}-default-trixie-amd64-quick")
    assert status == 200 and pushed_manifest["config"]["digest"] == image  # type: ignore[index]
    for tag in (f"{SPEC.version}-default-trixie-quick", "3.14-default-trixie-quick", "3.14-quick"):
        status, body = manifest(registry, "helper/python", tag)
        assert status == 200 and [m["platform"]["architecture"] for m in body["manifests"]] == ["amd64"], tag  # type: ignore[index]
    assert json.loads(Path(res.sboms[SPEC.key]).read_text())["metadata"]["component"]["version"] == image

    # 3. again: nothing moves, and progress says so
    stream = io.StringIO()
    with Progress(total=1, stream=stream, heartbeat=0) as progress:
        again = publish(engine, report, [SPEC], target, out=tmp_path, progress=progress)
    assert again.pushed == [] and f"✓ {SPEC.key}: unchanged {pushed_ref}" in stream.getvalue()

    # 4. the image is gone from the engine -> refused
    report.entries[SPEC.key].image_id = "sha256:" + "0" * 64
    res = publish(engine, report, [SPEC], target, out=tmp_path)
    assert res.pushed == [] and "image sha256:000000000000 no longer exists on the engine" in res.skipped[0]


def test_lock_records_base_ids_and_locked_refuses_a_changed_base(
    engine: Engine, made: list[str], tmp_path: Path
) -> None:
    base_tag = "cpforge-helper/debian:lockbase-amd64"  # a second name for the real base: ours to move
    engine.tag(engine.image_id(BASE) or "", base_tag)
    made.append(base_tag)
    base_id = engine.image_id(base_tag)
    spec = dataclasses.replace(SPEC, base_image=base_tag)  # runtime and (native) builder start FROM it
    built = build_tiny(engine, made, base_tag, "cpforge-helper/python:lock-test", {"etc/built.sh": b"x\n"}, spec.id)
    made.append("cpforge-helper/python:lock-test")
    report = Report(tmp_path / "report.json", {spec.key: passed(spec, built, [], artifact=built)})
    renderer = render.Renderer(ROOT / "templates")
    lock = Lock(tmp_path / "matrix.lock")
    stream = io.StringIO()
    with Progress(total=1, stream=stream, heartbeat=0) as progress:
        assert write(lock, ROOT, renderer, report, engine, [spec], progress) == ([spec.key], [])
    assert f"✓ {spec.key}: locked in " in stream.getvalue()
    saved = json.loads(lock.path.read_text())
    assert saved["entries"][spec.key]["bases"] == {base_tag: base_id}
    assert saved["entries"][spec.key]["builder_platform"] == "linux/amd64"
    assert saved["bases"][base_tag]["image_id"] == base_id and "libc6:amd64" in saved["bases"][base_tag]["packages"]
    check_locked(Lock.load(lock.path), ROOT, renderer, [spec], engine=engine)  # unchanged: passes

    # the base moves under the lock (a re-pull, a re-bootstrap): --locked names it, both ids, the fix
    moved = build_tiny(engine, made, BASE, base_tag, {"etc/moved.sh": b"y\n"}, "moved")
    with pytest.raises(LockError) as exc:
        check_locked(Lock.load(lock.path), ROOT, renderer, [spec], engine=engine)
    text = str(exc.value)
    assert f"{spec.key}: base image {base_tag} is {moved} on this engine, but matrix.lock pins {base_id}" in text
    assert "build without --locked, then `invoke lock`" in text and exc.value.exit_code == 10
    # and lock itself refuses to record a base the build did not start FROM
    with pytest.raises(LockError, match=f"was not built FROM the {base_tag} now on the engine"):
        write(Lock.load(lock.path), ROOT, renderer, report, engine, [spec])
    assert json.loads(lock.path.read_text()) == saved  # the refused write changed nothing
    assert isinstance(exc.value, CpforgeError)
