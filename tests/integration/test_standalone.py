"""The committed Dockerfiles stand on their own: `docker build -f dockerfiles/<entry>/Dockerfile.quick .`
from the repository root (what the README tells a user without cpforge) builds an image that passes
cpforge's smoke test, and rebuilding its runtime stage gives the same layers."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from cpforge import api, smoke
from cpforge.engine import Engine
from cpforge.report import EntryResult

from .conftest import ROOT

pytestmark = pytest.mark.integration
ENTRY = "3.14-default-trixie-amd64"
TAG = "cpforge-test/standalone:3.14-default-trixie-amd64-quick"


def _docker_build(dockerfile: str, log: Path, cache_from: str) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder, as cpforge's engine uses
    if os.environ.get("CPFORGE_TEST_ENGINE"):
        env["DOCKER_HOST"] = os.environ["CPFORGE_TEST_ENGINE"]
    with log.open("a") as out:
        # --network host: this machine forbids the default bridge (see README); a user's need not.
        # --cache-from: the entry's own chain. Without it the legacy builder follows the newest layer
        # that matches a step, which may be a sibling's copy of the shared builder stage (two entries
        # that built it at once): that chain has no compile step for this entry, so it would recompile.
        cmd = ["docker", "build", "--network", "host", "--cache-from", cache_from, "-f", dockerfile, "-t", TAG, "."]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: see {log}"


def test_the_committed_dockerfile_builds_alone_passes_smoke_and_rebuilds_to_the_same_layers(
    ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult], workdir: Path
) -> None:
    # cpforge built this entry first, so the builder and artifact stages come from the layer cache
    assert built_314["default"].passed
    (spec,) = api.plan(ctx, filters=[ENTRY], profile="quick")
    dockerfile = f"dockerfiles/{ENTRY}/Dockerfile.quick"
    log = workdir / "standalone.log"

    artifact = built_314["default"].artifact_image_id or ""
    _docker_build(dockerfile, log, artifact)
    first = engine.inspect_image(TAG)
    text = log.read_text()
    step = text.index('RUN ["/usr/local/sbin/cpforge-build", "3.14.7"')
    assert text[step:].splitlines()[1].strip() == "---> Using cache"  # cpforge's own compile layer
    result = smoke.run(engine, TAG, spec, ROOT / "scripts" / "smoke.py", log=workdir / "standalone-smoke.log")
    assert result.problems == [], result.problems
    assert result.facts["version"] == "3.14.7"

    # Removing the image removes its runtime-stage layers (the artifact stage stays cached), so the
    # second build runs the runtime stage again, later: its layers must not depend on when.
    engine.remove_image(TAG)
    time.sleep(2)
    _docker_build(dockerfile, log, artifact)
    second = engine.inspect_image(TAG)
    try:
        assert second["Id"] != first["Id"]  # a new image (built later) ...
        assert second["RootFS"]["Layers"] == first["RootFS"]["Layers"]  # ... with the same layers
    finally:
        engine.remove_image(TAG)
