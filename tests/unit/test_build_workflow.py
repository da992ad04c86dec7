"""build.yml's job graph (parsed, not grepped): the per-entry jobs come from `invoke matrix --json` and
push images only; ONE fan-in job, after all of them, writes the manifest lists and merges the
per-entry provision outputs. The fan-in's merge step also runs for real here (bash, the real
`invoke`), on artifacts laid out as actions/download-artifact lays them out."""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cpforge.provision import provision

from .test_merge import make_built, quiet, snapshot

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "build.yml"


def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def runs(job: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in job.get("steps", []) if "run" in step]


def needs(job: dict[str, Any]) -> set[str]:
    n = job.get("needs", [])
    return {n} if isinstance(n, str) else set(n)


def publishes(job: dict[str, Any]) -> list[str]:
    return [r for r in runs(job) if "invoke publish" in r]


def step(job: dict[str, Any], uses: str) -> dict[str, Any]:
    (found,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith(uses)]
    return found


def test_one_fan_in_job_after_every_build_job_writes_the_manifest_lists() -> None:
    jobs = workflow()["jobs"]
    builders = {name for name, job in jobs.items() if any("invoke build" in r for r in runs(job))}
    writers = {name for name, job in jobs.items() if any("--images-only" not in r for r in publishes(job))}
    assert builders == {"build"}
    assert writers == {"fan-in"}  # the only job whose publish may write manifest lists
    fan_in = jobs["fan-in"]
    (lists,) = publishes(fan_in)
    assert "--lists-only" in lists
    assert "strategy" not in fan_in  # one job, not one per entry
    assert builders | {name for name, job in jobs.items() if publishes(job)} - {"fan-in"} <= needs(fan_in)
    # it runs when some build failed (complete groups still get their lists), not when the run is cancelled
    assert "!cancelled()" in str(fan_in["if"]) and "always()" not in str(fan_in["if"])
    # every per-entry publish pushes images only
    for name, job in jobs.items():
        for r in publishes(job):
            assert name == "fan-in" or ("--images-only" in r and "--lists-only" not in r), name


def test_the_build_jobs_are_still_generated_from_the_matrix_one_runner_per_architecture() -> None:
    jobs = workflow()["jobs"]
    build = jobs["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["strategy"]["fail-fast"] is False
    assert "ubuntu-24.04-arm" in build["runs-on"] and "matrix.arch == 'arm64'" in build["runs-on"]
    assert any("invoke matrix --json" in r for r in runs(jobs["plan"]))
    assert any("--native" in r for r in runs(build))


def test_the_fan_in_merges_what_every_build_job_uploads() -> None:
    jobs = workflow()["jobs"]
    upload = step(jobs["build"], "actions/upload-artifact@")["with"]
    download = step(jobs["fan-in"], "actions/download-artifact@")["with"]
    example = (
        upload["name"]
        .replace("${{ matrix.id }}", "3.14-default-trixie-arm64")
        .replace("${{ matrix.profile }}", "release")
    )
    assert fnmatch.fnmatch(example, download["pattern"])
    assert "dist/" in upload["path"].split()
    (merge_step,) = [r for r in runs(jobs["fan-in"]) if "invoke provision" in r]
    assert f"{download['path']}/{download['pattern']}/dist" in merge_step and "--merge" in merge_step
    fan_in_upload = step(jobs["fan-in"], "actions/upload-artifact@")["with"]
    assert not fnmatch.fnmatch(fan_in_upload["name"].split("$")[0] + "release", download["pattern"])


# ------------------------------------------------------------------------- the merge step, for real


def merge_script() -> str:
    (script,) = [r for r in runs(workflow()["jobs"]["fan-in"]) if "invoke provision" in r]
    return script


def default_base_url() -> str:
    """provision's --base-url default: what the per-entry jobs and the fan-in both use."""
    spec = importlib.util.spec_from_file_location("cpforge_wf_tasks", ROOT / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(inspect.signature(module.provision.body).parameters["base_url"].default)


def run_step(script: str, cwd: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run a step's script as the runner does (`bash -e`), with `invoke` being cpforge's tasks.py."""
    shim = tmp / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "invoke").write_text(f'#!/bin/sh\nexec {sys.executable} -m invoke --search-root {ROOT} "$@"\n')
    (shim / "invoke").chmod(0o755)
    (tmp / "step.sh").write_text(script)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-e", str(tmp / "step.sh")], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_merge_step_gives_what_one_provision_of_every_entry_gives(tmp_path: Path) -> None:
    engine, rep, chosen = make_built(tmp_path)
    base = default_base_url()
    provision(engine, rep, chosen, tmp_path / "single", base, say=quiet)  # type: ignore[arg-type]
    runner = tmp_path / "runner"
    for s in chosen:  # download-artifact: artifacts/<artifact name>/ holding dist/ and build/
        where = runner / "artifacts" / f"interpreter-{s.id}-{s.profile.name}"
        provision(engine, rep, [s], where / "dist", base, say=quiet)  # type: ignore[arg-type]
        (where / "build").mkdir()
        (where / "build" / "report.json").write_text("{}")
    done = run_step(merge_script(), runner, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(chosen)} tarball(s) merged ({len(chosen)} copied" in done.stdout
    assert snapshot(runner / "dist") == snapshot(tmp_path / "single")


def test_the_merge_step_fails_clearly_when_no_job_uploaded_anything(tmp_path: Path) -> None:
    runner = tmp_path / "runner"
    (runner / "artifacts").mkdir(parents=True)
    done = run_step(merge_script(), runner, tmp_path)
    assert done.returncode == 1
    assert "::error::no build job uploaded a provisioned interpreter" in done.stdout
    assert not (runner / "dist").exists() and not (runner / "build").exists()  # no provision from a report


@pytest.mark.parametrize("name", ["build", "fan-in"])
def test_run_steps_interpolate_no_expression(name: str) -> None:
    """Values reach the scripts through env:, never through ${{ }} in the script text."""
    for r in runs(workflow()["jobs"][name]):
        assert "${{" not in r, r
