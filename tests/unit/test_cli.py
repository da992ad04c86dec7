"""The command line, without Docker: help for every task and option, one meaning per flag, bad
values refused with exit 2, the selection rule and the path rule as each task applies them, and
the exit code of a failed build. Tasks run in-process through Invoke's own Program (a fresh copy of
tasks.py each time); the two reported --help bugs also run as real `python -m invoke` processes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from invoke.collection import Collection
from invoke.program import Program

from cpforge import api, cli
from cpforge.errors import EngineError
from cpforge.provision import ProvisionResult
from cpforge.report import EntryResult, Report
from cpforge.selection import Choice

ROOT = Path(__file__).resolve().parents[2]
TASKS = ["matrix", "render", "sources", "base", "build", "smoke", "bench", "lock", "verify", "publish", "provision"]
TASKS += ["test", "lint"]


@dataclass
class Run:
    code: int
    out: str
    err: str


def collection() -> Collection:
    """A fresh tasks.py (Invoke consumes a task's help texts when it builds its parser)."""
    spec = importlib.util.spec_from_file_location("cpforge_test_tasks", ROOT / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> Run:
    code = 0
    try:
        Program(namespace=collection(), binary="invoke").run(["invoke", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return Run(code, out, err)


def real_invoke(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


# ------------------------------------------------------------------------------ help and flags


@pytest.mark.parametrize("task", TASKS)
def test_every_task_prints_help_with_text_for_every_option(task: str, capfd: pytest.CaptureFixture[str]) -> None:
    res = run(capfd, task, "--help")
    assert res.code == 0, res.err
    assert f"[--core-opts] {task} [" in res.out
    options = res.out.split("Options:", 1)[1].splitlines() if "Options:" in res.out else []
    flags = [ln for ln in options if ln.startswith("  -")]
    for line in flags:
        spec, _, text = line.strip().partition("   ")
        assert text.strip(), f"`invoke {task}`: {spec} has no help text"
    shorts = [ln.split()[0] for ln in flags if re.match(r"\s+-\w[ ,]", ln)]
    assert shorts == (["-k"] if task == "test" else []), f"`invoke {task}` has short flags: {shorts}"


def test_no_task_has_short_flags() -> None:
    """Invoke would invent -n for --no-cache in one task and --engine in another: none at all, but
    `invoke test -k EXPR` (pytest's -k, and the only option of that name)."""
    for ctx in collection().to_contexts():
        shorts = [f for f in ctx.flags if re.fullmatch(r"-\w", f)]
        assert shorts == (["-k"] if ctx.name == "test" else []), (ctx.name, sorted(ctx.flags))


def test_publish_help_prints_help_instead_of_publishing() -> None:
    proc = real_invoke("publish", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--registry=STRING" in proc.stdout and "no build report" not in proc.stdout + proc.stderr


def test_bench_help_and_the_benchmark_as_its_first_word() -> None:
    proc = real_invoke("bench", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--rounds=STRING" in proc.stdout and "unknown benchmark" not in proc.stderr
    # `bench build …` still names the benchmark; the bad value after it is what gets refused
    proc = real_invoke("bench", "build", "--emulate-seconds", "soon")
    assert proc.returncode == 64, proc.stderr
    assert "--emulate-seconds takes a whole number of at least 0, not 'soon'" in proc.stderr


def test_bench_names_its_benchmarks(capfd: pytest.CaptureFixture[str]) -> None:
    res = run(capfd, "bench", "frobnicate")
    assert res.code == 64 and "unknown benchmark 'frobnicate'" in res.err and "build, speed" in res.err
    res = run(capfd, "bench", "speed", "--help")
    assert res.code == 0 and "--suite=STRING" in res.out


# ------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    ("argv", "message", "code"),
    [
        (["build", "--jobs", "abc"], "--jobs takes a whole number of at least 1, not 'abc'", 64),
        (["build", "--jobs", "0"], "--jobs takes a whole number of at least 1, not '0'", 64),
        (["build", "--profile", "fast"], "unknown profile 'fast'", 16),
        (["build", "--platform", "linux/s390x"], "unknown platform linux/s390x", 16),
        (["build", "--filter", "4.0-*"], "no matrix entry matches", 16),
        (["smoke", "--profile", "fast"], "unknown profile 'fast'", 16),
        (["bench", "speed", "--rounds", "0"], "--rounds takes a whole number of at least 1, not '0'", 64),
        (["bench", "speed", "--suite", "all"], "unknown --suite 'all'", 64),
        (["bench", "build", "--emulate-seconds", "-5"], "--emulate-seconds takes a whole number of at least 0", 64),
        (["publish"], "publish needs --registry HOST[:PORT]/NAMESPACE", 64),
        (["verify"], "verify needs --rebuild", 64),
        (["matrix", "--matrix-file", "no-such.yaml"], "no-such.yaml", 2),
    ],
)
def test_bad_option_values_are_one_clear_error_and_no_side_effect(
    argv: list[str],
    message: str,
    code: int,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad option value is UsageError (64), a choice that selects nothing SelectionError (16), a
    missing or bad matrix MatrixError (2): each one sentence, nothing written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(api, "connect", unreachable)
    res = run(capfd, *argv, "--out", "out") if argv[0] != "matrix" else run(capfd, *argv)
    assert res.code == code, (res.code, res.err)
    assert message in res.err and "Traceback" not in res.err
    assert res.err.startswith("cpforge: error: ")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_jobs_abc_in_a_real_process_is_no_traceback() -> None:
    proc = real_invoke("build", "--jobs", "abc")
    assert proc.returncode == 64 and "Traceback" not in proc.stderr
    assert "cpforge: error: --jobs takes a whole number of at least 1, not 'abc'" in proc.stderr


def unreachable(url: str | None = None) -> Any:
    raise EngineError("test: the engine is not reached in this test")


# ------------------------------------------------------------------------------ selection per task


class Stop(Exception):
    pass


@pytest.fixture
def selected(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """Record which entries each task chose (through api.select), then stop it at the engine."""
    seen: dict[str, list[str]] = {}
    real = api.select

    def spy(ctx: api.Context, task: str, choice: Any) -> Any:
        specs = real(ctx, task, choice)
        seen[task] = [s.id for s in specs]
        return specs

    def stop(url: str | None = None) -> Any:
        raise Stop

    monkeypatch.setattr(api, "select", spy)
    monkeypatch.setattr(api, "connect", stop)
    monkeypatch.setattr(api, "fetch_sources", lambda ctx, specs: [])
    yield seen


def built(out: Path, *ids: str, profile: str = "quick") -> None:
    rep = Report(out / "report.json")
    for i in ids:
        rep.update(EntryResult(key=f"{i}@{profile}", id=i, profile=profile, version="", variant="", platform=""))
    rep.save()


CALLS = {
    "smoke": lambda c: cli.smoke(c),
    "lock": lambda c: cli.lock(c),
    "verify": lambda c: cli.verify(c, True),
    "publish": lambda c: cli.publish(c, registry="127.0.0.1:5000/x", dry_run=True, force=False, insecure=False),
    "provision": lambda c: cli.provision(c, dest="", base_url="https://example.invalid"),
    "build": lambda c: cli.build(c, jobs="1", keep_going=False, no_cache=False, native=False, locked=False),
    "base": lambda c: cli.base(c, False),
    "bench": lambda c: cli.bench(c, what="build", emulate_seconds="0", rounds="2", instructions=True, suite="core"),
    "sources": lambda c: cli.sources(c),
}


@pytest.mark.parametrize("task", sorted(CALLS))
def test_each_task_chooses_by_the_one_rule(task: str, tmp_path: Path, selected: dict[str, list[str]]) -> None:
    out = tmp_path / "out"
    built(out, "3.13-jit-trixie-amd64", "3.14-default-trixie-arm64")
    try:
        CALLS[task](cli.Common(out=str(out)))
    except Stop:
        pass
    if task in ("smoke", "lock", "verify", "publish", "provision"):
        assert selected[task] == ["3.14-default-trixie-arm64", "3.13-jit-trixie-amd64"]  # the last builds
    else:
        assert selected[task] == ["3.14-default-trixie-amd64"]  # the default entry
    selected.clear()
    try:
        CALLS[task](cli.Common(out=str(out), choice=Choice(filters=("3.13-default-trixie-*",))))
    except Stop:
        pass
    assert selected[task] == ["3.13-default-trixie-amd64", "3.13-default-trixie-arm64"]


def test_sources_matrix_means_every_entry(capfd: pytest.CaptureFixture[str], selected: dict[str, list[str]]) -> None:
    assert run(capfd, "sources").code == 0
    assert selected["sources"] == ["3.14-default-trixie-amd64"]
    assert run(capfd, "sources", "--matrix").code == 0
    assert len(selected["sources"]) == 14
    assert run(capfd, "sources", "--filter", "3.13-jit-*").code == 0
    assert selected["sources"] == ["3.13-jit-trixie-amd64", "3.13-jit-trixie-arm64"]


def test_matrix_json_lists_the_filtered_entries(capfd: pytest.CaptureFixture[str]) -> None:
    res = run(capfd, "matrix", "--json", "--filter", "*-arm64", "--profile", "release")
    assert res.code == 0, res.err
    include = json.loads(res.out)["include"]
    assert include and all(e["id"].endswith("-arm64") and e["profile"] == "release" for e in include)


# ------------------------------------------------------------------------------ paths


def test_every_path_flag_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(ROOT / "matrix.yaml", here / "m.yaml")
    monkeypatch.chdir(here)
    ctx = api.Context.create("m.yaml", out="o", report="r.json")
    assert ctx.matrix.path == str(here / "m.yaml") and ctx.lock_path == here / "m.lock"
    assert ctx.ws.out == here / "o" and ctx.report_path == here / "r.json"
    assert api.Context.create("m.yaml").ws.out == here / "build-m"  # an alternate matrix's own default
    assert ctx.resolve("dist") == here / "dist"
    # the defaults are in the repository, wherever the command runs
    ctx = api.Context.create()
    assert ctx.matrix.path == str(ROOT / "matrix.yaml") and ctx.ws.out == ROOT / "build"
    assert ctx.report_path == ROOT / "build" / "report.json"
    assert api.Context.create(out="o").report_path == here / "o" / "report.json"


def test_provision_dest_is_relative_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    built(tmp_path / "o", "3.13-jit-trixie-amd64")
    targets: list[Path] = []
    monkeypatch.setattr(api, "connect", lambda url=None: None)

    def provision(ctx: api.Context, engine: Any, specs: Any, dest: Path, url: str, say: Any) -> ProvisionResult:
        targets.append(dest)
        return ProvisionResult(
            tarballs=[], manifest=dest / "versions-manifest.json", channels={}, notes=[], uv=dest / "uv.json"
        )

    monkeypatch.setattr(api, "provision", provision)
    cli.provision(cli.Common(out="o"), dest="dist", base_url="https://example.invalid")
    cli.provision(cli.Common(out="o"), dest="", base_url="https://example.invalid")
    assert targets == [tmp_path / "dist", tmp_path / "o" / "dist"]


def test_paths_in_a_real_process_follow_the_current_directory(tmp_path: Path) -> None:
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "mine.yaml")
    proc = real_invoke("matrix", "--matrix-file", "mine.yaml", cwd=tmp_path)
    assert proc.returncode == 0 and "entries (profile quick)" in proc.stdout, proc.stderr
    proc = real_invoke("smoke", "--out", "rel", cwd=tmp_path)
    assert proc.returncode == 9 and f"no build report at {tmp_path / 'rel' / 'report.json'}" in proc.stderr
    proc = real_invoke("publish", "--registry", "127.0.0.1:1/x", "--report", "r.json", cwd=tmp_path)
    assert proc.returncode == 9 and f"no build report at {tmp_path / 'r.json'}" in proc.stderr


# ------------------------------------------------------------------------------ exit codes


def test_a_failed_build_exits_7_and_a_failed_smoke_test_8(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    class FakeEngine:
        url = "fake://"

    def fake_build(status: str) -> Any:
        def build(ctx: api.Context, engine: Any, specs: Any, options: Any, progress: Any, locked: bool) -> Any:
            return [
                EntryResult(key=s.key, id=s.id, profile="quick", version="", variant="", platform="", status=status,
                            problems=[f"{status} on purpose"]) for s in specs
            ]  # fmt: skip

        return build

    monkeypatch.setattr(api, "connect", lambda url=None: FakeEngine())
    for status, code in (("error", 7), ("failed", 8), ("passed", 0)):
        monkeypatch.setattr(api, "build", fake_build(status))
        res = run(capfd, "build", "--out", str(tmp_path))
        assert res.code == code, (status, res.err)
        assert "3.14-default-trixie-amd64" in res.out
        if code:
            assert f"{status} on purpose" in res.out and res.err.startswith("cpforge: error: 1 entry did not")
