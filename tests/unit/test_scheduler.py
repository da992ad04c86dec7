"""The scheduler on fake engines: job limits, affinity, native vs cross, engines lost mid-run (with and
without --retry), engines unreachable at the start (with and without --keep-going), and the engines
that hold each entry's images afterwards. The real engines are in tests/integration/test_fleet.py."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cpforge import matrix as mx
from cpforge import render, scheduler
from cpforge.build import Builder, BuildOptions, Workspace
from cpforge.builders import Fleet, Holders, Worker, check_coverage, declared, parse_flag
from cpforge.errors import EngineError, MatrixError, UsageError
from cpforge.progress import Progress
from cpforge.report import EntryResult, Report

from .fake_engine import FakeEngine
from .test_builder import FakeSources

ROOT = Path(__file__).resolve().parents[2]
MATRIX = mx.load(ROOT / "matrix.yaml")
SPECS = {s.id: s for s in MATRIX.expand("quick")}
NOJIT = ["3.14-default-trixie-amd64", "3.14-freethreaded-trixie-amd64"]  # share a builder stage
JIT18 = ["3.13-jit-trixie-amd64", "3.13-freethreaded-jit-trixie-amd64"]  # share another
ARM = ["3.14-default-trixie-arm64", "3.14-jit-trixie-arm64"]  # share the 3.14 build-python stage


def specs(*ids: str) -> list[mx.BuildSpec]:
    return [SPECS[i] for i in ids]


def engine(url: str, arch: str = "amd64", **kw: Any) -> FakeEngine:
    return FakeEngine(dict(SPECS), url=url, arch=arch, **kw)


def worker(eng: FakeEngine, jobs: int = 1, platforms: tuple[str, ...] = ("linux/amd64",)) -> Worker:
    return Worker(url=eng.url, platforms=frozenset(platforms), jobs=jobs, engine=eng)


def run(tmp_path: Path, workers: list[Worker], plan: list[mx.BuildSpec], **options: Any) -> tuple[Builder, str]:
    """Build ``plan`` on ``workers``; the builder (its report) and the progress output."""
    out = io.StringIO()
    progress = Progress(total=len(plan), heartbeat=0, stream=out)
    b = Builder(
        Fleet(workers),
        Workspace(root=ROOT, out=tmp_path / "out"),
        render.Renderer(ROOT / "templates"),
        FakeSources(tmp_path),  # type: ignore[arg-type]
        Report(tmp_path / "out" / "report.json"),
        progress,
        BuildOptions(**options),
    )
    b.run(plan)
    return b, out.getvalue()


def built_on(b: Builder) -> dict[str, str]:
    return {r.id: r.engine for r in b.report.entries.values()}


def tagged(eng: FakeEngine, spec: mx.BuildSpec) -> bool:
    return any(ref in eng.tags for ref in spec.tags)


# ------------------------------------------------------------------------------------ groups


def test_entries_sharing_a_builder_or_build_python_stage_form_one_group() -> None:
    plan = specs(*NOJIT, *JIT18, "3.14-jit-trixie-amd64", *ARM)
    g = dict(zip((s.id for s in plan), scheduler.affinity_groups(plan), strict=True))
    assert g[NOJIT[0]] == g[NOJIT[1]]
    assert g[JIT18[0]] == g[JIT18[1]]
    assert g[ARM[0]] == g[ARM[1]]  # different deps (jit or not), one build-python stage
    assert len({g[NOJIT[0]], g[JIT18[0]], g["3.14-jit-trixie-amd64"], g[ARM[0]]}) == 4


# ------------------------------------------------------------------------------------ scheduling


def test_each_engine_runs_at_most_its_job_limit_and_both_are_used(tmp_path: Path) -> None:
    a, b = engine("fake://a", seconds=0.2), engine("fake://b", seconds=0.2)
    plan = specs(*NOJIT, *JIT18, "3.14-jit-trixie-amd64", "3.13-default-trixie-amd64")
    builder, _ = run(tmp_path, [worker(a, jobs=2), worker(b, jobs=1)], plan)
    assert all(r.passed for r in builder.report.entries.values())
    assert a.max_running == 2 and b.max_running == 1
    assert set(built_on(builder).values()) == {"fake://a", "fake://b"}


def test_a_group_stays_on_one_engine_while_each_engine_has_its_own_work(tmp_path: Path) -> None:
    a, b = engine("fake://a"), engine("fake://b")
    builder, out = run(tmp_path, [worker(a), worker(b)], specs(NOJIT[0], JIT18[0], NOJIT[1], JIT18[1]))
    on = built_on(builder)
    assert on[NOJIT[0]] == on[NOJIT[1]] == "fake://a"  # first engine, first group
    assert on[JIT18[0]] == on[JIT18[1]] == "fake://b"
    # the builder stage of each group was built on one engine only, and each image smoke-tested there
    assert {c["entry"] for c in a.builds} == set(NOJIT) and {c["entry"] for c in b.builds} == set(JIT18)
    assert {e for kind, e in a.calls if kind == "run"} == set(NOJIT)
    assert {e for kind, e in b.calls if kind == "run"} == set(JIT18)
    assert all(tagged(a, SPECS[e]) and not tagged(b, SPECS[e]) for e in NOJIT)
    assert f"▶ {NOJIT[0]}@quick: building artifact on fake://a" in out  # progress names the engine
    assert f"{NOJIT[0]}@quick:" in out and "on fake://a;" in out


def test_a_second_slot_starts_another_group_before_a_sibling_whose_shared_stage_is_being_built(
    tmp_path: Path,
) -> None:
    a = engine("fake://a", seconds=0.2)
    builder, _ = run(tmp_path, [worker(a, jobs=2)], specs(NOJIT[0], NOJIT[1], JIT18[0]))
    assert all(r.passed for r in builder.report.entries.values())
    started = [c["entry"] for c in a.builds if c["target"] == "artifact"]
    # NOJIT[1] at once would build NOJIT[0]'s builder stage a second time, alongside it
    assert set(started[:2]) == {NOJIT[0], JIT18[0]} and started[2] == NOJIT[1]  # (the first two in either order)
    assert a.max_running == 2


def test_an_idle_engine_helps_with_a_group_whose_engine_is_busy(tmp_path: Path) -> None:
    a, b = engine("fake://a", seconds=0.2), engine("fake://b", seconds=0.2)
    plan = specs("3.14-default-trixie-amd64", "3.14-freethreaded-trixie-amd64", "3.13-default-trixie-amd64")
    builder, _ = run(tmp_path, [worker(a), worker(b)], plan)
    assert set(built_on(builder).values()) == {"fake://a", "fake://b"}  # one group, yet both engines worked
    assert builder.last_schedule is not None
    assert set(builder.last_schedule.dispatch) == {s.key for s in plan}
    assert all(0 <= v < 5 for v in builder.last_schedule.dispatch.values())
    assert builder.last_schedule.cpu_seconds > 0


def test_an_engine_of_the_platforms_architecture_builds_natively_others_cross_compile(tmp_path: Path) -> None:
    native = engine("fake://arm", arch="arm64")
    builder, _ = run(tmp_path / "n", [worker(native, platforms=("linux/arm64",))], specs(ARM[0]))
    art = next(c for c in native.builds if c["target"] == "artifact")
    assert art["platform"] == "linux/arm64" and art["buildargs"] == {"BUILDER_ARCH": "arm64"}
    assert builder.report.entries[f"{ARM[0]}@quick"].builder_platform == "linux/arm64"

    cross = engine("fake://amd", arch="amd64")
    builder, _ = run(tmp_path / "c", [worker(cross, platforms=("linux/arm64",))], specs(ARM[0]))
    art = next(c for c in cross.builds if c["target"] == "artifact")
    assert art["platform"] == "linux/amd64" and art["buildargs"] == {"BUILDER_ARCH": "amd64"}
    assert [c["target"] for c in cross.builds][:1] == ["build-python"]
    assert builder.report.entries[f"{ARM[0]}@quick"].builder_platform == "linux/amd64"


def test_each_platform_goes_only_to_its_engines(tmp_path: Path) -> None:
    amd, arm = engine("fake://amd"), engine("fake://arm", arch="arm64")
    plan = specs(NOJIT[0], ARM[0], NOJIT[1], ARM[1])
    builder, _ = run(tmp_path, [worker(amd), worker(arm, jobs=2, platforms=("linux/arm64",))], plan)
    on = built_on(builder)
    assert on[NOJIT[0]] == on[NOJIT[1]] == "fake://amd" and on[ARM[0]] == on[ARM[1]] == "fake://arm"


def test_base_images_missing_on_an_engine_are_copied_from_another(tmp_path: Path) -> None:
    a, b = engine("fake://a"), engine("fake://b")
    base = SPECS[NOJIT[0]].base_image
    del b.tags[base]
    run(tmp_path, [worker(a), worker(b)], specs(NOJIT[0], JIT18[0]))
    assert ("save", base) in a.calls and ("load", base) in b.calls
    assert b.tags[base] == a.tags[base]


# ------------------------------------------------------------------------------------ faults


def test_an_engine_lost_mid_build_marks_its_entry_tags_nothing_and_the_others_finish(tmp_path: Path) -> None:
    doomed = NOJIT[0]
    a, b = engine("fake://a", die_on={doomed}), engine("fake://b")
    plan = specs(NOJIT[0], JIT18[0], NOJIT[1], JIT18[1])
    builder, out = run(tmp_path, [worker(a), worker(b)], plan, keep_going=False)
    entries = {r.id: r for r in builder.report.entries.values()}
    lost = entries[doomed]
    assert lost.status == "error" and lost.engine == "fake://a"
    assert lost.problems[0].startswith("engine fake://a was lost during the build")
    assert "--retry" in lost.problems[0]
    assert [x["engine"] for x in lost.attempts] == ["fake://a"] and lost.attempts[0]["status"] == "lost"
    assert Path(lost.attempts[0]["log"]).name == f"{doomed}.quick.attempt1.log"
    assert Path(lost.attempts[0]["log"]).exists()
    assert not tagged(a, SPECS[doomed]) and not tagged(b, SPECS[doomed])
    # the rest finished on the other engine, including the entry queued behind the lost one
    # (an engine loss is not a failed entry: even without --keep-going nothing is skipped)
    for eid in (NOJIT[1], *JIT18):
        assert entries[eid].passed and entries[eid].engine == "fake://b", eid
    assert "✕ engine fake://a is lost" in out


def test_with_retry_a_lost_engines_entry_is_built_again_on_another_engine(tmp_path: Path) -> None:
    doomed = NOJIT[0]
    a, b = engine("fake://a", die_on={doomed}), engine("fake://b")
    builder, out = run(tmp_path, [worker(a), worker(b)], specs(NOJIT[0], JIT18[0]), retry=True)
    res = builder.report.entries[f"{doomed}@quick"]
    assert res.passed and res.engine == "fake://b" and tagged(b, SPECS[doomed]) and not tagged(a, SPECS[doomed])
    assert [(x["engine"], x["status"]) for x in res.attempts] == [("fake://a", "lost")]
    assert "engine fake://a was lost during the build" in res.attempts[0]["problem"]
    assert f"↻ {doomed}@quick: engine fake://a was lost" in out
    saved = Report.load(tmp_path / "out" / "report.json").entries[f"{doomed}@quick"]
    assert saved.engine == "fake://b" and saved.attempts[0]["engine"] == "fake://a"


def test_a_retry_reuses_the_chain_the_entrys_last_good_build_left(tmp_path: Path) -> None:
    """The lost attempt is recorded (status error, no images): the retry's cache sources must still name
    the chain of the entry's build from before the run, or the retry would recompile."""
    doomed = NOJIT[0]
    a, b = engine("fake://a", die_on={doomed}), engine("fake://b")
    b.images.add("sha256:last-good-artifact")
    before = Report(tmp_path / "out" / "report.json")
    last_good = entry(f"{doomed}@quick", "fake://a")
    last_good.id, last_good.status, last_good.artifact_image_id = doomed, "passed", "sha256:last-good-artifact"
    before.update(last_good)
    before.save()
    out = io.StringIO()
    builder = Builder(
        Fleet([worker(a), worker(b)]),
        Workspace(root=ROOT, out=tmp_path / "out"),
        render.Renderer(ROOT / "templates"),
        FakeSources(tmp_path),  # type: ignore[arg-type]
        Report.load(tmp_path / "out" / "report.json"),
        Progress(total=1, heartbeat=0, stream=out),
        BuildOptions(retry=True),
    )
    (res,) = builder.run(specs(doomed))
    assert res.passed and res.engine == "fake://b"
    (retry,) = [c for c in b.builds if c["entry"] == doomed and c["target"] == "artifact"]
    assert "sha256:last-good-artifact" in (retry["cache_from"] or [])


def test_retry_needs_another_engine_of_the_same_platform(tmp_path: Path) -> None:
    doomed = NOJIT[0]
    a = engine("fake://a", die_on={doomed})
    builder, _ = run(tmp_path, [worker(a)], specs(*NOJIT), retry=True)
    entries = {r.id: r for r in builder.report.entries.values()}
    assert entries[doomed].status == "error" and "lost during the build" in entries[doomed].problems[0]
    assert entries[NOJIT[1]].status == "error"
    assert entries[NOJIT[1]].problems[0].startswith("not built: no engine for linux/amd64 is left (fake://a:")


def test_an_engine_that_stops_answering_is_taken_out_by_the_pings(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(scheduler, "PROBE_EVERY", 0.05)
    monkeypatch.setattr(scheduler, "PROBE_TIMEOUT", 0.01)
    hung = NOJIT[0]
    a, b = engine("fake://a", block={hung}), engine("fake://b")
    threading.Thread(target=lambda: (time.sleep(0.5), setattr(a, "dead", True)), daemon=True).start()
    builder, _ = run(tmp_path, [worker(a), worker(b)], specs(hung, JIT18[0]), retry=True)
    res = builder.report.entries[f"{hung}@quick"]
    assert res.passed and res.engine == "fake://b"
    assert "answered none of 2 pings" in res.attempts[0]["problem"]


def test_a_ping_that_hangs_counts_as_missed(tmp_path: Path, monkeypatch: Any) -> None:
    """An engine whose host went silent: its ping never returns; the run goes on without it."""
    for name, value in (("PROBE_EVERY", 0.05), ("PROBE_TIMEOUT", 0.01), ("PROBE_GRACE", 0.1)):
        monkeypatch.setattr(scheduler, name, value)
    hung = NOJIT[0]
    a, b = engine("fake://a", block={hung}), engine("fake://b")
    silent = threading.Event()
    monkeypatch.setattr(a, "alive", lambda timeout=10.0: silent.wait())  # never answers (until the end)
    try:
        builder, _ = run(tmp_path, [worker(a), worker(b)], specs(hung, JIT18[0]), retry=True)
    finally:
        silent.set()
    res = builder.report.entries[f"{hung}@quick"]
    assert res.passed and res.engine == "fake://b" and "answered none of 2 pings" in res.attempts[0]["problem"]


def test_an_unreachable_engine_at_start_is_exit_5_naming_it_unless_keep_going(tmp_path: Path) -> None:
    good = engine("fake://good")
    decls = [
        mx.BuilderEngine(platform="linux/amd64", url="ssh://ci@gone", where="matrix.yaml:40"),
        mx.BuilderEngine(platform="linux/amd64", url="fake://good", jobs=2, where="matrix.yaml:41"),
        mx.BuilderEngine(platform="linux/arm64", url="ssh://ci@gone", where="matrix.yaml:43"),
    ]

    def connect(url: str) -> FakeEngine:
        if url == "fake://good":
            return good
        raise EngineError(f"cannot reach the Docker daemon at {url} (SSHException)")

    with pytest.raises(EngineError) as err:
        Fleet.connect(decls, connect=connect)  # type: ignore[arg-type]
    assert err.value.exit_code == 5
    assert "builder ssh://ci@gone (linux/amd64, linux/arm64; declared at matrix.yaml:40)" in str(err.value)
    assert "--keep-going" in str(err.value)

    said: list[str] = []
    fleet = Fleet.connect(decls, keep_going=True, say=said.append, connect=connect)  # type: ignore[arg-type]
    assert [w.url for w in fleet.live()] == ["fake://good"] and fleet.live()[0].jobs == 2
    assert "cannot be reached; building without it (--keep-going)" in said[0]
    b = Builder(
        fleet,
        Workspace(root=ROOT, out=tmp_path / "out"),
        render.Renderer(ROOT / "templates"),
        FakeSources(tmp_path),  # type: ignore[arg-type]
        Report(tmp_path / "out" / "report.json"),
        Progress(total=0, heartbeat=0, stream=io.StringIO()),
        BuildOptions(keep_going=True),
    )
    results = {r.id: r for r in b.run(specs(NOJIT[0], ARM[0]))}
    assert results[NOJIT[0]].passed and results[NOJIT[0]].engine == "fake://good"
    assert results[ARM[0]].status == "error"
    assert "no engine for linux/arm64 is left (ssh://ci@gone: unreachable at the start" in results[ARM[0]].reason


# ------------------------------------------------------------------------------------ declaring


def test_builder_flags() -> None:
    d = parse_flag("linux/arm64=ssh://ci@arm1.example.com:2222,jobs=3")
    assert (d.platform, d.url, d.jobs) == ("linux/arm64", "ssh://ci@arm1.example.com:2222", 3)
    assert parse_flag("linux/amd64=unix:///var/run/docker.sock").jobs is None
    for bad, says in {
        "linux/amd64": "is not PLATFORM=URL",
        "linux/s390x=unix:///x.sock": "unknown platform",
        "linux/amd64=http://host": "not an engine URL",
        "linux/amd64=ssh://ci:secret@host": "password",
        "linux/amd64=tcp://host:2376,jobs=0": "unknown option",
        "linux/amd64=tcp://host:2376,cpus=2": "unknown option",
    }.items():
        with pytest.raises(UsageError, match=says) as err:
            parse_flag(bad)
        assert err.value.exit_code == 64
    with pytest.raises(UsageError, match="both name engines"):
        declared(MATRIX, ["linux/amd64=unix:///x.sock"], "unix:///y.sock")
    with pytest.raises(UsageError, match="one job limit"):
        declared(MATRIX, ["linux/amd64=tcp://h:1,jobs=2", "linux/arm64=tcp://h:1,jobs=3"], "")
    flags = declared(MATRIX, ["linux/amd64=unix:///x.sock"], "")
    with pytest.raises(UsageError, match="no --builder for linux/arm64"):
        check_coverage(MATRIX, flags, specs(NOJIT[0], ARM[0]))
    check_coverage(MATRIX, flags, specs(NOJIT[0]))
    assert declared(MATRIX, [], "unix:///y.sock") == [] and declared(MATRIX, [], "") == []


BUILDERS = """
builders:
  linux/amd64:
    - url: unix:///var/run/docker.sock
      jobs: 2
    - {url: "ssh://ci@build-1.example.com:2222"}
  linux/arm64:
    - url: tcp://arm-1.example.com:2376
      jobs: 4
    - url: unix:///var/run/docker.sock
"""


def matrix_with(section: str) -> str:
    return (ROOT / "matrix.yaml").read_text(encoding="utf-8") + section


def test_the_builders_section_loads_with_where_each_engine_was_declared() -> None:
    text = matrix_with(BUILDERS)
    m = mx.loads(text, "m.yaml")
    line = text.splitlines().index("builders:") + 1
    assert [(b.platform, b.url, b.jobs) for b in m.builders] == [
        ("linux/amd64", "unix:///var/run/docker.sock", 2),
        ("linux/amd64", "ssh://ci@build-1.example.com:2222", None),
        ("linux/arm64", "tcp://arm-1.example.com:2376", 4),
        ("linux/arm64", "unix:///var/run/docker.sock", None),
    ]
    assert m.builders[0].where == f"m.yaml:{line + 2}"
    assert declared(m, [], "") == list(m.builders)
    assert declared(m, ["linux/amd64=unix:///x.sock"], "")[0].url == "unix:///x.sock"  # flags replace it
    assert declared(m, [], "unix:///y.sock") == []  # --engine: one engine for everything


TWICE = BUILDERS.rstrip("\n") + "  # marker\n"  # the socket's second entry, under linux/arm64


@pytest.mark.parametrize(
    ("section", "says", "marker"),
    [
        (BUILDERS.replace("jobs: 4", "jobs: 0"), "jobs must be a whole number", "jobs: 0"),
        (BUILDERS.replace("tcp://arm-1.example.com:2376", "ftp://arm-1"), "url 'ftp://arm-1' is not valid", "ftp://"),
        (BUILDERS.replace("ssh://ci@build-1", "ssh://ci:pw@build-1"), "may not hold a password", "pw@"),
        (BUILDERS.replace("  linux/arm64:", "  linux/arm46:"), "unknown platform", "linux/arm46"),
        (TWICE + "      jobs: 3\n", "has jobs 3 here and jobs 2 on line", "# marker"),
        (TWICE + "    - url: unix:///var/run/docker.sock\n", "listed twice for linux/arm64", "# marker"),
        (BUILDERS.replace("jobs: 4", "job: 4"), "unknown key `job`", "job: 4"),
        ("builders:\n  linux/amd64: []\n", "builders of linux/amd64 is empty", "[]"),
    ],
)
def test_a_bad_builders_section_names_its_line(section: str, says: str, marker: str) -> None:
    text = matrix_with(section)
    with pytest.raises(MatrixError, match=says) as err:
        mx.loads(text, "m.yaml")
    assert err.value.exit_code == 2
    marked = text.index(marker, text.index("builders:"))
    first = text.count("\n", 0, marked) + 1
    assert err.value.line in (first, first + 1 if marker == "# marker" else first)


def test_one_engine_may_build_several_platforms_with_one_job_limit() -> None:
    m = mx.loads(matrix_with(BUILDERS))
    fleet = Fleet.connect(m.builders, connect=lambda url: engine(url))  # type: ignore[arg-type,return-value]
    socket = next(w for w in fleet.workers if w.url == "unix:///var/run/docker.sock")
    assert socket.platforms == {"linux/amd64", "linux/arm64"} and socket.jobs == 2
    assert [w.jobs for w in fleet.workers] == [2, 1, 4]


def test_the_builders_section_without_the_needed_platform_is_a_matrix_error() -> None:
    text = matrix_with("builders:\n  linux/amd64:\n    - url: unix:///var/run/docker.sock\n")
    m = mx.loads(text, "m.yaml")
    with pytest.raises(MatrixError, match="no engine for linux/arm64") as err:
        check_coverage(m, declared(m, [], ""), specs(ARM[0]))
    assert err.value.line == text.splitlines().index("    - url: unix:///var/run/docker.sock") + 1


def test_the_schema_accepts_and_refuses_builders_as_the_loader_does() -> None:
    from .test_schema import schema_errors

    assert schema_errors(matrix_with(BUILDERS)) == []
    assert schema_errors(matrix_with(BUILDERS.replace("jobs: 4", "jobs: 0"))) != []
    assert schema_errors(matrix_with(BUILDERS.replace("tcp://arm-1", "http://arm-1"))) != []
    assert schema_errors(matrix_with(BUILDERS.replace("  linux/arm64:", "  linux/arm46:"))) != []


# ------------------------------------------------------------------------------------ afterwards


def entry(key: str, built_on: str) -> EntryResult:
    return EntryResult(key=key, id=key, profile="quick", version="3.14.7", variant="d", platform="p", engine=built_on)


def test_holders_find_each_entrys_engine_by_the_url_its_build_recorded() -> None:
    reached: list[str | None] = []

    def connect(url: str | None) -> Any:
        reached.append(url)
        if url == "ssh://ci@gone":
            raise EngineError("cannot reach the Docker daemon at ssh://ci@gone (SSHException)")
        return type("E", (), {"url": url or "unix:///var/run/docker.sock"})()

    h = Holders(connect=connect)
    assert h.of(entry("a", "ssh://ci@arm1")).url == "ssh://ci@arm1"
    assert h.of(entry("b", "ssh://ci@arm1")).url == "ssh://ci@arm1"  # reached once
    assert h.of(entry("c", "")).url == "unix:///var/run/docker.sock"  # an older report: the default engine
    assert reached == ["ssh://ci@arm1", None]
    with pytest.raises(EngineError, match="x was built on ssh://ci@gone, which holds its images") as err:
        h.of(entry("x", "ssh://ci@gone"))
    assert "--engine" in str(err.value.hint)
    forced = Holders(url="tcp://127.0.0.1:2375", override=True, connect=connect)
    assert forced.of(entry("a", "ssh://ci@arm1")).url == "tcp://127.0.0.1:2375"  # --engine: one for everything


# ------------------------------------------------------------------------------------ the command line


def invoke(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )


def test_a_bad_builder_flag_is_exit_64_before_anything_is_read(tmp_path: Path) -> None:
    proc = invoke("build", "--builder", "linux/amd64=http://host", "--matrix-file", str(tmp_path / "none.yaml"))
    assert proc.returncode == 64, proc.stderr
    assert "--builder 'linux/amd64=http://host': not an engine URL" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreachable_builder_is_exit_5_naming_it_and_keep_going_builds_without_it(tmp_path: Path) -> None:
    gone = "unix:///nonexistent/second.sock"
    args = ("build", "--out", str(tmp_path), "--builder", f"linux/amd64={gone},jobs=2")
    proc = invoke(*args)
    assert proc.returncode == 5, proc.stderr
    assert f"builder {gone} (linux/amd64; declared at --builder) cannot be reached" in proc.stderr
    assert "--keep-going" in proc.stderr and not (tmp_path / "report.json").exists()
    proc = invoke(*args, "--keep-going")  # no engine is left for the entry: it is not built, and says why
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "not built: no engine for linux/amd64 is left" in proc.stdout
    assert f"1 entry not built: engine {gone} was lost (unreachable at the start" in proc.stderr
    assert "--engine and --builder" in invoke(*args, "--engine", gone).stderr


def test_ctrl_c_on_a_fleet_stops_every_engines_builds_and_tags_nothing(tmp_path: Path) -> None:
    import signal

    from cpforge.errors import Interrupted

    from .test_builder import signal_when

    a, b = engine("fake://a", block={NOJIT[0]}), engine("fake://b", block={JIT18[0]})
    both = lambda: sum(1 for x in (*a.calls, *b.calls) if x[0] == "build" and x[1].endswith(":artifact")) == 2  # noqa: E731
    sender = signal_when(both, signal.SIGINT)
    with pytest.raises(Interrupted) as err:
        run(tmp_path, [worker(a), worker(b)], specs(NOJIT[0], JIT18[0], NOJIT[1]))
    sender.join()
    assert err.value.exit_code == 130 and "1 never started" in str(err.value)
    assert a.cancelled and b.cancelled
    saved = Report.load(tmp_path / "out" / "report.json").entries
    assert {saved[f"{e}@quick"].status for e in (NOJIT[0], JIT18[0])} == {"interrupted"}
    assert not [c for c in (*a.calls, *b.calls) if c[0] == "tag"]


# ------------------------------------------------------------------------------------ bench build --builder


def test_bench_on_a_fleet_times_one_engine_then_all_with_every_entrys_recorded_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from cpforge import api
    from cpforge.bench import fleet_bench, fleet_lines

    ctx = api.Context.create(ROOT / "matrix.yaml", root=ROOT, out=tmp_path / "out")
    monkeypatch.setattr(api.Context, "sources", lambda self, progress=None: FakeSources(tmp_path))
    plan = specs(*NOJIT, JIT18[0])
    recorded = Report(ctx.report_path)
    for s in plan:
        last = entry(s.key, "")
        last.id, last.status, last.artifact_image_id = s.id, "passed", f"sha256:chain-of-{s.id}"
        recorded.update(last)
    recorded.save()
    a, b = engine("fake://a"), engine("fake://b")
    for eng in (a, b):
        eng.images.update(f"sha256:chain-of-{s.id}" for s in plan)
    fleet = Fleet([worker(a), worker(b)])
    progress = Progress(total=len(plan), heartbeat=0, stream=io.StringIO())
    bench = fleet_bench(ctx, fleet, plan, progress, cached=True)
    assert [len(r["engines"]) for r in bench.runs] == [1, 2]
    assert all(r["passed"] == len(plan) for r in bench.runs)
    assert set(bench.runs[0]["built_on"].values()) == {"fake://a"}
    assert set(bench.runs[1]["built_on"].values()) == {"fake://a", "fake://b"}
    assert all(r["dispatch_max_seconds"] is not None and r["scheduler_cpu_seconds"] > 0 for r in bench.runs)
    assert "share the CPUs of 1 host(s) (buildhost)" in bench.note
    # every entry, not only the first, named its own recorded chain first (else it would recompile)
    for eng in (a, b):
        for build in (x for x in eng.builds if x["target"] == "artifact"):
            assert (build["cache_from"] or [""])[0] == f"sha256:chain-of-{build['entry']}", build
    assert Report.load(ctx.report_path).entries.keys() == {s.key for s in plan}  # the build report is untouched
    assert json.loads((ctx.ws.out / "bench" / "fleet.json").read_text())["cached"] is True
    lines = fleet_lines(bench, ctx.ws.out)
    assert lines[1].startswith("  run 1: 1 engine(s): matrix wall time") and "note: the engines share" in lines[-2]


def test_a_build_that_failed_only_because_its_engine_was_lost_ends_with_exit_5(tmp_path: Path) -> None:
    from cpforge.cli import engines_lost

    doomed = NOJIT[0]
    a = engine("fake://a", die_on={doomed})
    builder, _ = run(tmp_path, [worker(a)], specs(*NOJIT))
    results = list(builder.report.entries.values())
    err = engines_lost(builder.fleet, results)
    assert err is not None and err.exit_code == 5
    assert str(err).startswith("2 entries not built: engine fake://a was lost (it stopped answering")
    # a failure of the build itself is not blamed on the engine
    results[0].reason = "configure: error: no acceptable C compiler found in $PATH"
    assert engines_lost(builder.fleet, results) is None
