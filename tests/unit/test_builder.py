"""The build plan's logic with a fake engine: promotion, keep-going, --jobs, interrupts, reasons."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpforge import base as base_images
from cpforge import matrix as mx
from cpforge import render
from cpforge.build import Builder, BuildOptions, Workspace
from cpforge.errors import BaseImageError, Interrupted
from cpforge.progress import Progress
from cpforge.report import Report
from cpforge.sources import Fetched

from .fake_engine import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
SPECS = {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand("quick")}
AMD64 = [SPECS[e] for e in ("3.14-default-trixie-amd64", "3.14-freethreaded-trixie-amd64", "3.14-jit-trixie-amd64")]


class FakeSources:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def ensure(self, source: Any) -> Fetched:
        path = self.tmp / source.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really a tarball")
        return Fetched(source=source, path=path, origin="test")

    def ensure_all(self, sources: Any) -> list[Fetched]:
        return [self.ensure(s) for s in sources]


def builder(tmp_path: Path, engine: FakeEngine, **options: Any) -> Builder:
    ws = Workspace(root=ROOT, out=tmp_path / "out")
    report = Report(tmp_path / "out" / "report.json")
    progress = Progress(total=0, heartbeat=0)
    return Builder(
        engine,  # type: ignore[arg-type]
        ws,
        render.Renderer(ROOT / "templates"),
        FakeSources(tmp_path),  # type: ignore[arg-type]
        report,
        progress,
        BuildOptions(**options),
    )


def test_passed_entries_are_tagged_and_recorded(tmp_path: Path) -> None:
    engine = FakeEngine({s.id: s for s in AMD64})
    results = builder(tmp_path, engine).run(AMD64)
    assert [r.status for r in results] == ["passed"] * 3
    for spec, res in zip(AMD64, results, strict=True):
        assert all(engine.tags[t] == res.image_id for t in spec.tags)
        assert res.builder_platform == "linux/amd64" and res.reason == ""
    saved = Report.load(tmp_path / "out" / "report.json")
    assert sorted(saved.entries) == sorted(s.key for s in AMD64)


def test_a_failed_build_stops_the_rest_unless_keep_going_and_says_why(tmp_path: Path) -> None:
    ids = {s.id: s for s in AMD64}
    engine = FakeEngine(ids, fail={"3.14-default-trixie-amd64"})
    results = builder(tmp_path, engine).run(AMD64)
    assert [r.status for r in results] == ["error", "skipped", "skipped"]
    assert results[0].reason == "configure: error: no acceptable C compiler found in $PATH"
    assert results[0].problems[0] == results[0].reason  # the summary's first line
    assert "returned 1" in results[0].problems[1]  # docker's own message is kept after it
    assert not [c for c in engine.calls if c[0] == "tag"]

    engine = FakeEngine(ids, fail={"3.14-default-trixie-amd64"})
    results = builder(tmp_path / "again", engine, keep_going=True).run(AMD64)
    assert [r.status for r in results] == ["error", "passed", "passed"]


def test_jobs_bound_the_parallel_builds(tmp_path: Path) -> None:
    engine = FakeEngine({s.id: s for s in AMD64})
    builder(tmp_path, engine, jobs=2).run(AMD64)
    assert engine.max_running == 2
    engine = FakeEngine({s.id: s for s in AMD64})
    builder(tmp_path / "one", engine, jobs=1).run(AMD64)
    assert engine.max_running == 1


def signal_when(ready: Callable[[], bool], signum: int, timeout: float = 30.0) -> threading.Thread:
    """A thread that sends ``signum`` to this process once ``ready()`` (the blocked build started):
    not after a fixed delay, which a loaded machine may not meet."""

    def wait_then_signal() -> None:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=wait_then_signal, daemon=True)
    thread.start()
    return thread


def test_sigint_stops_the_running_entry_starts_no_other_and_tags_nothing(tmp_path: Path) -> None:
    blocked = "3.14-freethreaded-trixie-amd64"
    engine = FakeEngine({s.id: s for s in AMD64}, block={blocked})
    b = builder(tmp_path, engine)
    timer = signal_when(lambda: ("build", f"{blocked}:artifact") in engine.calls, signal.SIGINT)
    with pytest.raises(Interrupted) as err:
        b.run(AMD64)
    timer.join()
    assert err.value.exit_code == 130
    assert f"stopped {blocked}@quick" in str(err.value) and "1 never started" in str(err.value)
    saved = Report.load(tmp_path / "out" / "report.json").entries
    assert saved[f"{blocked}@quick"].status == "interrupted"
    assert "3.14-jit-trixie-amd64@quick" not in saved  # never started: its earlier entry is left alone
    assert ("build", "3.14-jit-trixie-amd64:artifact") not in engine.calls
    assert not [ref for kind, ref in engine.calls if kind == "tag" and blocked in ref]


def test_sigterm_is_handled_like_sigint(tmp_path: Path) -> None:
    engine = FakeEngine({s.id: s for s in AMD64[:1]}, block={AMD64[0].id})
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(Interrupted):
        builder(tmp_path, engine).run(AMD64[:1])
    timer.cancel()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored afterwards


def test_fresh_builds_reuse_only_the_build_python_stage(tmp_path: Path) -> None:
    arm = SPECS["3.14-freethreaded-trixie-arm64"]
    engine = FakeEngine({arm.id: arm})
    b = builder(tmp_path, engine, fresh=True)
    res = b.build_one(arm)
    assert res.passed, res.problems
    builds = [ref for kind, ref in engine.calls if kind == "build"]
    assert builds == [f"{arm.id}:build-python", f"{arm.id}:artifact", f"{arm.id}:runtime"]
    assert "build_python" in res.durations


def test_the_build_python_stage_names_its_newest_labelled_build_as_cache_source(tmp_path: Path) -> None:
    arm = SPECS["3.14-freethreaded-trixie-arm64"]
    engine = FakeEngine({arm.id: arm})
    first = builder(tmp_path / "a", engine).build_one(arm)
    assert first.passed, first.problems
    (made,) = [b for b in engine.builds if b["target"] == "build-python"]
    assert made["cache_from"] is None  # nothing labelled yet: any local layer
    labels = engine.labelled[0][1]
    assert labels["io.cpforge.stage"] == "build-python" and labels["io.cpforge.target-arch"] == "arm64"
    assert labels["io.cpforge.builder-arch"] == "amd64" and labels["io.cpforge.cpython.version"] == arm.version
    # another workspace (a fresh clone) on the same engine: the stage's last build is its cache source
    again = builder(tmp_path / "b", engine).build_one(arm)
    assert again.passed, again.problems
    assert engine.builds[-3]["target"] == "build-python"
    assert engine.builds[-3]["cache_from"] == [first.build_python_image_id]
    # with --no-cache, nothing is named
    builder(tmp_path / "c", engine, nocache=True).build_one(arm)
    assert engine.builds[-3]["target"] == "build-python" and engine.builds[-3]["cache_from"] is None


ARM = SPECS["3.14-freethreaded-trixie-arm64"]


def _late_arm64_base(monkeypatch: pytest.MonkeyPatch, bootstrap: Callable[..., str]) -> FakeEngine:
    """An engine that has every base but the arm64 entry's target one, which ``bootstrap`` makes."""
    engine = FakeEngine({s.id: s for s in [*AMD64[:1], ARM]})
    del engine.tags[ARM.base_image]
    monkeypatch.setattr(base_images, "bootstrap", bootstrap)
    monkeypatch.setattr(base_images, "check_emulation", lambda plat: None)
    return engine


def test_a_cross_entrys_target_base_is_bootstrapped_while_it_compiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[tuple[str, str]]] = []

    def bootstrap(eng: FakeEngine, distro: mx.Distro, plat: mx.Platform, *args: Any) -> str:
        deadline = time.monotonic() + 10
        while ("build", f"{ARM.id}:artifact") not in eng.calls and time.monotonic() < deadline:
            time.sleep(0.01)  # the entry's compile starts before its target base exists
        seen.append(list(eng.calls))
        time.sleep(0.3)  # longer than the rest of its artifact stage: its runtime stage has to wait
        eng.tags[distro.base_image(plat)] = "sha256:arm64base"
        return "sha256:arm64base"

    engine = _late_arm64_base(monkeypatch, bootstrap)
    results = builder(tmp_path, engine).run([AMD64[0], ARM])
    assert [r.status for r in results] == ["passed", "passed"], [r.problems for r in results]
    (calls,) = seen
    assert ("build", f"{ARM.id}:artifact") in calls  # compiling while the base was bootstrapped ...
    assert ("build", f"{ARM.id}:runtime") not in calls  # ... and its runtime stage waited for it
    assert ("build", f"{ARM.id}:runtime") in engine.calls
    assert "base_wait" in results[1].durations and "base_wait" not in results[0].durations


def test_a_failed_late_bootstrap_fails_only_the_entries_that_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bootstrap(*args: Any) -> str:
        raise BaseImageError("mmdebstrap failed for trixie/arm64 (exit 1)", hint="check the mirror")

    engine = _late_arm64_base(monkeypatch, bootstrap)
    amd, arm = builder(tmp_path, engine, keep_going=True).run([AMD64[0], ARM])
    assert amd.status == "passed"
    assert arm.status == "error" and "mmdebstrap failed for trixie/arm64" in arm.reason
    assert ("build", f"{ARM.id}:runtime") not in engine.calls
    assert not [ref for kind, ref in engine.calls if kind == "tag" and ARM.id in ref]


def test_a_late_bootstrap_no_entry_waits_for_is_stopped_when_the_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[bool] = []

    def bootstrap(eng: FakeEngine, distro: mx.Distro, plat: mx.Platform, workdir: Path, log: Any, stop: Any) -> str:
        deadline = time.monotonic() + 10
        while not stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        stopped.append(stop())
        raise Interrupted("the bootstrap was stopped")

    engine = _late_arm64_base(monkeypatch, bootstrap)
    engine.fail.add(ARM.id)  # its compile fails: nobody waits for its base
    started = time.monotonic()
    amd, arm = builder(tmp_path, engine, keep_going=True).run([AMD64[0], ARM])
    assert time.monotonic() - started < 5
    assert (amd.status, arm.status) == ("passed", "error")
    assert stopped == [True]  # the run ended only after the bootstrap had been stopped


def test_cache_sources_are_the_entrys_own_chain_once_it_has_one(tmp_path: Path) -> None:
    spec, other, never_built = AMD64[0], AMD64[1], AMD64[2]
    engine = FakeEngine({s.id: s for s in AMD64})
    b = builder(tmp_path, engine)
    assert b._cache_from(spec, [], b.place(spec)) is None  # nothing recorded yet: any local layer
    b.run([spec, other])
    own, sibling = b.report.entries[spec.key], b.report.entries[other.key]
    # an entry built before names its own chain only: a sibling's chain for the same builder steps
    # (built at the same time, or fresh) would be followed up to the compile step and then recompile
    assert b._cache_from(spec, [], b.place(spec)) == [own.artifact_image_id, own.image_id]
    assert b._cache_from(spec, ["sha256:prereq"], b.place(spec)) == [
        own.artifact_image_id,
        own.image_id,
        "sha256:prereq",
    ]
    assert b._cache_from(other, [], b.place(other)) == [sibling.artifact_image_id, sibling.image_id]
    # an entry never built names the prerequisites, then the chains the others recorded (their builder stage)
    recorded = {i for r in (own, sibling) for i in (r.artifact_image_id, r.image_id) if i}
    first = b._cache_from(never_built, ["sha256:prereq"], b.place(never_built)) or []
    assert first[0] == "sha256:prereq" and set(first[1:]) == recorded
    # another workspace on the same engine (a fresh clone): no report, but the engine still has the
    # entry's newest artifact stage image (by its labels) and its tagged image
    elsewhere = builder(tmp_path / "elsewhere", engine)
    assert elsewhere._cache_from(spec, [], elsewhere.place(spec)) == [own.artifact_image_id, own.image_id]
    assert elsewhere._cache_from(never_built, [], elsewhere.place(never_built)) is None
    # a tag alone (an image from before artifact stages were labelled) names no builder chain
    engine.images.discard(own.artifact_image_id or "")
    assert elsewhere._cache_from(spec, [], elsewhere.place(spec)) is None
    # only what the entry's engine holds counts: with its own chain gone, it is a first build again
    for ref in (own.image_id or "", *spec.tags):
        engine.remove_image(ref)
    assert set(b._cache_from(spec, [], b.place(spec)) or []) == {sibling.artifact_image_id, sibling.image_id}
    fresh = builder(tmp_path / "fresh", engine, fresh=True)
    assert fresh._cache_from(spec, ["sha256:prereq"], fresh.place(spec)) == [spec.base_image, "sha256:prereq"]
    assert builder(tmp_path / "nc", engine, nocache=True)._cache_from(spec, [], b.place(spec)) is None


def test_a_rerun_of_a_failed_build_goes_on_from_the_last_layer_it_committed(tmp_path: Path) -> None:
    """A build stopped in its compile step (failed, or interrupted) recorded no artifact image; the
    layers its finished steps committed are named first, so the rerun does not start the chain again
    (the legacy builder would otherwise follow only the other entries' chains)."""
    spec, other = AMD64[0], AMD64[1]
    engine = FakeEngine({s.id: s for s in AMD64}, fail={spec.id})
    b = builder(tmp_path, engine)
    b.run([other, spec])
    failed = b.report.entries[spec.key]
    assert failed.status == "error" and failed.artifact_image_id is None
    assert failed.partial_image_id is not None and engine.image_id(failed.partial_image_id)
    assert (b._cache_from(spec, [], b.place(spec)) or [])[0] == failed.partial_image_id
    passed = b.report.entries[other.key]
    assert passed.partial_image_id is None  # a built stage needs no partial chain


def test_cancel_removes_the_container_of_the_step_a_build_is_in() -> None:
    """The legacy builder's "Running in" names the container of a step under way; once its build is
    cancelled, cpforge removes it itself (and waits for it), so nothing is left running after exit 130."""
    from cpforge.engine import Engine

    class Api:
        def __init__(self) -> None:
            self.removed: list[str] = []

        def remove_container(self, cid: str, force: bool) -> None:
            assert force
            self.removed.append(cid)

    api = Api()
    engine = Engine(api, "fake://engine")  # type: ignore[arg-type]
    engine._track_step_containers("Step 8/9 : COPY a b\n ---> Running in abcdefabcdef\n")
    engine._track_step_containers("Removing intermediate container abcdefabcdef\n ---> 0123456789ab\n")
    engine._track_step_containers('Step 9/9 : RUN ["/usr/local/sbin/cpforge-build"]\n ---> Running in 0123abcd0123\n')
    engine.cancel()
    assert api.removed == ["0123abcd0123"]
