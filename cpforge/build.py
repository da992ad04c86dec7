"""The plan: verify inputs, then per entry build artifact → assemble runtime → smoke → promote.

Order of work for a plan (every check that can refuse happens before anything is built; only a
bootstrap left to the background, 3., can fail later, and fails just the entries needing its base):
  1. the committed Dockerfiles of the selected entries match the templates (else: `invoke render`);
  2. every source tarball is present and matches its sha256;
  3. every base image a build starts FROM exists (pulled or bootstrapped); a cross entry's target
     base (minutes of dpkg under QEMU) is made in the background meanwhile, and its runtime stage
     waits for it;
  4. per entry, possibly in parallel (--jobs):
     a. build the Dockerfile's `artifact` stage (log streamed to build/logs/<entry>.log),
     b. copy /artifact/cpython.tar out of it (the artifact everything else derives from),
     c. build the runtime image from that tarball (untagged),
     d. smoke-test it with no network; only if it passed does it get its final tags.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import base as base_images
from . import diagnose, render, smoke
from .builders import Fleet, Holders, LateBases, Worker, ensure_bases
from .engine import STEP_LAYER, Engine, EngineAPI, context_tar
from .errors import CpforgeError, Interrupted, RenderError
from .lock import Lock, package_drift, packages_in, pinned_pgo_profile
from .matrix import BuildSpec, Distro, Platform
from .progress import Progress, fmt_seconds
from .report import EntryResult, Report
from .sources import Sources, sha256_file

if TYPE_CHECKING:
    from .scheduler import ScheduleStats

# The artifact stage of a PGO build copies pgo/ (so the COPY never fails before a profile is pinned);
# cpforge's own context holds this note and, once pinned, the entry's profile only.
PGO_README = b"Pinned PGO profiles: see pgo/README.md in the cpforge repository.\n"


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """Where things live: the repository (templates, scripts, dockerfiles) and the output dir."""

    root: Path
    out: Path
    matrix_dir: Path | None = None  # where the matrix file is: its Dockerfiles live beside it

    @property
    def dockerfiles_base(self) -> Path:
        """The directory the specs' `dockerfile` paths are relative to."""
        return self.matrix_dir or self.root

    @property
    def scripts(self) -> Path:
        return self.root / "scripts"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def artifacts(self) -> Path:
        return self.out / "artifacts"

    def log_path(self, spec: BuildSpec) -> Path:
        return self.logs / f"{spec.id}.{spec.profile.name}.log"

    def artifact_dir(self, spec: BuildSpec) -> Path:
        return self.artifacts / f"{spec.id}.{spec.profile.name}"


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    jobs: int = 1
    keep_going: bool = False
    nocache: bool = False
    # Rebuild every step of the entry itself but reuse the per-release prerequisites (the base image
    # and a cross build's build-python stage) from the cache: what `bench build` times.
    fresh: bool = False
    promote: bool = True  # tag images that passed (False: keep them untagged, e.g. for verify)
    lock: Lock | None = None  # --locked: installed package versions must equal the lock's
    native: bool = False  # compile on the target platform itself (a native arm64 runner), never cross
    retry: bool = False  # an entry whose engine was lost during its build is built again on another one


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where one attempt at an entry runs, as the scheduler decided it."""

    engine: EngineAPI
    native: bool = False  # the engine's own architecture is the entry's platform: no cross build
    ready_at: float | None = None  # when the entry could have started (monotonic): the scheduling overhead
    earlier: tuple[dict[str, Any], ...] = ()  # earlier attempts of this run, on engines that were lost
    announce: bool = False  # name the engine in progress lines (a run on several engines)


@contextlib.contextmanager
def interrupts_raise_keyboardinterrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt in the main thread) while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def git_revision(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def blank_result(spec: BuildSpec, ws: Workspace) -> EntryResult:
    """A report line for ``spec`` before anything is known about its build."""
    return EntryResult.of(spec, log=str(ws.log_path(spec)))


class Builder:
    """Builds entries: `run` a plan on the fleet (cpforge/scheduler.py decides which engine builds
    which entry), or `build_one` entry on one engine."""

    def __init__(
        self,
        engine: EngineAPI | Fleet,
        ws: Workspace,
        renderer: render.Renderer,
        sources: Sources,
        report: Report,
        progress: Progress,
        options: BuildOptions,
    ) -> None:
        self.fleet = engine if isinstance(engine, Fleet) else Fleet.single(engine, options.jobs)
        self.ws = ws
        self.renderer = renderer
        self.sources = sources
        self.report = report
        self.progress = progress
        self.options = options
        self.last_schedule: ScheduleStats | None = None  # the scheduler's numbers for the last `run`
        self._report_lock = threading.Lock()
        # Each entry's report line from before this run's first attempt at it: what a retry compares with.
        self._before: dict[str, EntryResult | None] = {}
        self._late_bases: LateBases | None = None  # bases `run` makes while the builds compile

    @property
    def engine(self) -> EngineAPI:
        """The first engine of the fleet (the only one when there is one engine for everything)."""
        live = self.fleet.live() or self.fleet.workers
        assert live[0].engine is not None
        return live[0].engine

    # ------------------------------------------------------------------ preflight

    def preflight(self, specs: Sequence[BuildSpec], late_bases: LateBases | None = None) -> None:
        """Everything that can refuse the plan, before any image is built. With ``late_bases``, the
        bases only runtime stages use are left to it (made while the builds compile), not made here."""
        drift = render.check(self.ws.dockerfiles_base, self.renderer, specs)
        drift = [d for d in drift if d in {s.dockerfile for s in specs}]
        if drift:
            raise RenderError(
                "committed Dockerfiles differ from the templates: " + ", ".join(drift),
                hint="run `invoke render` (with the same --matrix-file) and commit the result",
            )
        self.sources.ensure_all([s.source for s in specs])
        needs: dict[Worker, set[tuple[Distro, Platform]]] = {}
        late: dict[Worker, set[tuple[Distro, Platform]]] = {}
        for w in self.fleet.live():
            mine = [s for s in specs if w.serves(s.platform.name)]
            if not self.fleet.several or w.url.startswith("unix://"):  # a local engine: QEMU is this host's
                for plat in sorted({s.platform for s in mine}, key=lambda p: p.name):
                    base_images.check_emulation(plat)  # smoke tests of foreign platforms run under QEMU
            needs[w] = {(s.distro, self._builder_platform(s, self.place(s, w))) for s in mine}
            late[w] = {(s.distro, s.platform) for s in mine} - needs[w]
            if late_bases is None:
                needs[w] |= late.pop(w)
        ensure_bases(self.fleet, needs, self.ws.out / "base", self.progress.say)
        if late_bases is not None:
            late_bases.start(self.fleet, late, self.ws.out / "base", self.progress.say)

    # ------------------------------------------------------------------ plan

    def run(self, specs: Sequence[BuildSpec]) -> list[EntryResult]:
        """Build the plan on the fleet, each engine at most its job limit at a time. The first SIGINT
        or SIGTERM starts no new entry, cancels the builds and containers under way, tags nothing,
        records the running entries as `interrupted` and raises Interrupted (exit 130)."""
        from .scheduler import Scheduler

        buildable = [s for s in specs if self.fleet.serving(s.platform.name)]  # the rest: no engine left
        self._late_bases = LateBases()
        try:
            if buildable:
                self.preflight(buildable, self._late_bases)
            scheduler = Scheduler(self)
            try:
                return scheduler.run(specs)
            finally:
                self.last_schedule = scheduler.stats
        finally:
            self._late_bases.close()
            self._late_bases = None

    def place(self, spec: BuildSpec, worker: Worker | None = None, **kw: Any) -> Placement:
        """``spec`` on ``worker`` (default: the first live engine that builds its platform)."""
        if worker is None:
            worker = next((w for w in self.fleet.live() if w.serves(spec.platform.name)), self.fleet.workers[0])
        assert worker.engine is not None
        native = worker.engine.arch == spec.platform.arch
        return Placement(engine=worker.engine, native=native, announce=self.fleet.several, **kw)

    def record(self, res: EntryResult) -> None:
        with self._report_lock:
            self.report.update(res)
            self.report.save()

    # ------------------------------------------------------------------ one entry

    def build_one(self, spec: BuildSpec, place: Placement | None = None) -> EntryResult:
        """artifact stage → cpython.tar → runtime image → (locked packages) → smoke → promote, on the
        placement's engine (default: the fleet's first engine for the entry's platform)."""
        place = place or self.place(spec)
        eng = place.engine
        res = blank_result(spec, self.ws)
        res.builder_platform = self._builder_platform(spec, place).name
        res.engine, res.attempts = eng.url, list(place.earlier)
        if spec.key not in self._before:
            self._before[spec.key] = self.report.entries.get(spec.key)
        previous = self._before[spec.key]
        logpath = self.ws.log_path(spec)
        logpath.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        on = f" on {eng.url}" if place.announce else ""
        self.progress.start(spec.key, f"building artifact{on} (log: {logpath})")
        try:
            with logpath.open("w", encoding="utf-8") as log:
                artifact_image = self._artifact_stage(spec, res, log, place)
                tarball = self._take_artifact(spec, res, artifact_image, previous, eng)
                self._await_base(spec, res, eng)
                image = self._runtime_image(spec, res, tarball, log, eng)
            self._judge(spec, res, artifact_image, image, previous, place)
            self._promote_or_discard(spec, res, image, eng)
        except Interrupted as exc:
            res.status, res.problems = "interrupted", [str(exc)]
        except CpforgeError as exc:
            res.status, res.problems = "error", [str(exc)]
            if decisive := diagnose.decisive_line_of(logpath):
                res.problems.insert(0, decisive)
        except Exception as exc:  # noqa: BLE001 - one entry's crash must not hide the others
            res.status, res.problems = "error", [f"internal error: {exc!r}"]
            with logpath.open("a", encoding="utf-8") as log:
                log.write(traceback.format_exc())
        res.reason = res.problems[0].splitlines()[0] if res.problems else ""
        res.durations["total"] = time.monotonic() - t0
        self.record(res)
        self.announce(spec, res, on)
        return res

    def _await_base(self, spec: BuildSpec, res: EntryResult, eng: EngineAPI) -> None:
        """Wait until the base of the entry's runtime stage exists, if `run` left it to be made while
        the builds compile (a cross entry's target platform); the wait is the report's `base_wait`."""
        if self._late_bases is not None and eng.image_id(spec.base_image) is None:
            t = time.monotonic()
            self.progress.step(spec.key, f"waiting for its base {spec.base_image}, bootstrapped meanwhile")
            self._late_bases.wait(eng, spec.base_image)
            res.durations["base_wait"] = time.monotonic() - t

    def _context(self, spec: BuildSpec, res: EntryResult) -> IO[bytes]:
        """The artifact build's context: the Dockerfile, the scripts, the verified source, a PGO profile."""
        files: dict[str, bytes | Path] = {
            "Dockerfile": self.renderer.dockerfile(spec).encode(),
            **{rel: self.ws.root / rel for rel in render.CONTEXT_SCRIPTS},
            f"sources/{spec.source.filename}": self.sources.ensure(spec.source).path,
        }
        if spec.pgo_profile:
            files["pgo/README.md"] = PGO_README
            pinned = pinned_pgo_profile(self.ws.root, spec)
            if pinned is not None:
                files[spec.pgo_profile] = pinned
                res.pgo_profile["pinned"] = sha256_file(pinned)
        return context_tar(files)

    def _artifact_stage(self, spec: BuildSpec, res: EntryResult, log: IO[str], place: Placement) -> str:
        """Build the Dockerfile's `artifact` stage (after a cross build's build-python stage); its image id."""
        t = time.monotonic()
        eng = place.engine
        builder = self._builder_platform(spec, place)
        common: dict[str, Any] = {
            "platform": builder.name,
            "buildargs": {"BUILDER_ARCH": builder.arch},
            "nocache": self.options.nocache,
            "log": log,
        }
        prereqs: list[str] = []
        context = self._context(spec, res)
        if place.ready_at is not None:  # from "could start" to "the engine is asked to build"
            res.durations["dispatch"] = time.monotonic() - place.ready_at
        if spec.cross:
            # Built on its own first (a cache hit after the release's first cross build): its id names
            # it as a cache source below, since the artifact stage only copies from it.
            self.progress.step(spec.key, "build-python stage (one per release, shared by its cross builds)")
            res.build_python_image_id = self.build_python_stage(spec, context, eng, builder, **common)
            res.durations["build_python"] = time.monotonic() - t
            prereqs.append(res.build_python_image_id)
            context = self._context(spec, res)
        image = eng.build(
            context,
            target="artifact",
            labels=render.artifact_labels(spec),
            cache_from=self._cache_from(spec, prereqs, place),
            on_line=self._watch(spec, "artifact", res),
            **common,
        )
        res.artifact_image_id, res.partial_image_id = image, None
        res.durations["artifact"] = time.monotonic() - t - res.durations.get("build_python", 0.0)
        return image

    def build_python_stage(
        self, spec: BuildSpec, context: IO[bytes], eng: EngineAPI, builder: Platform, **common: Any
    ) -> str:
        """A cross build's `build-python` stage; its image id. Its cache source is its newest labelled
        build on the engine: without one, the engine would follow the newest copy of the builder's
        first step, which a no-cache build of another entry may have made, and compile it again."""
        labels = render.build_python_labels(spec, builder)
        last = None if self.options.nocache else eng.newest_labelled(labels)
        return eng.build(context, target="build-python", labels=labels, cache_from=[last] if last else None, **common)

    def _cache_from(self, spec: BuildSpec, prereqs: list[str], place: Placement) -> list[str] | None:
        """The images whose layers may serve as cache; None: any local layer.

        The legacy builder first takes the newest local layer that matches a step, if it lies on any
        named chain; else it walks the named images and follows the first whose history matches,
        making fresh copies of its layers. Two chains for the same steps (two entries that built a
        shared builder stage at the same time, a `--fresh` build, verify, bench) have different
        histories, so following a sibling's chain up to the compile step leads to a parent the
        entry's own compile layer does not have, and it recompiles. So an entry whose own last build
        (or the layers a stopped build committed) is on the engine names that chain only, with its
        prerequisites: a no-change rebuild then reuses every layer, whatever else the engine holds.
        When this workspace's report does not know the entry (a fresh clone, another workspace), its
        last chains are found on the engine: the newest image with its artifact labels, and its tag.
        An entry never built there names the other entries' chains, to share their builder stage. A
        fresh build names only its prerequisites and its builder's base. Only images the entry's
        engine has count (each engine has its own)."""
        if self.options.nocache:
            return None
        if self.options.fresh:
            return [spec.distro.base_image(self._builder_platform(spec, place)), *prereqs]

        def chains(rs: Iterable[EntryResult | None]) -> list[str]:
            def layers(r: EntryResult) -> tuple[str | None, ...]:
                return (r.artifact_image_id, r.image_id, r.build_python_image_id, r.partial_image_id)

            return list(dict.fromkeys(i for r in rs if r is not None for i in layers(r) if i))

        def on_engine(ids: list[str]) -> list[str]:
            return [i for i in ids if place.engine.image_id(i) is not None]

        with self._report_lock:
            # the report as it is now, and each attempted entry as it was before this run: an attempt
            # that failed (say, on an engine that was lost) must not hide the chain its retry reuses
            own = on_engine(chains([self._before.get(spec.key), self.report.entries.get(spec.key)]))
            entries = [*self.report.entries.values(), *self._before.values()]
        own = own or self._last_chains_on_engine(spec, place.engine)
        if own:
            return list(dict.fromkeys([*own, *prereqs]))
        others = on_engine(sorted(set(chains(entries)) - set(prereqs)))
        return [*prereqs, *others] if others else None

    @staticmethod
    def _last_chains_on_engine(spec: BuildSpec, eng: EngineAPI) -> list[str]:
        """The entry's newest artifact stage image and its tagged image; nothing without the former
        (a tag alone names no builder chain, and would keep the others' from being named)."""
        artifact = eng.newest_labelled(render.artifact_labels(spec))
        if artifact is None:
            return []
        return list(dict.fromkeys(i for i in [artifact, *(eng.image_id(t) for t in spec.tags[:1])] if i))

    def _take_artifact(
        self, spec: BuildSpec, res: EntryResult, artifact_image: str, previous: EntryResult | None, eng: EngineAPI
    ) -> Path:
        """Copy /artifact/cpython.tar (and its package lists, PGO profile) out, unless unchanged."""
        adir = self.ws.artifact_dir(spec)
        tarball, packages = adir / "cpython.tar", adir / "runtime-packages.txt"
        reuse = (
            previous is not None
            and previous.artifact_image_id == artifact_image
            and tarball.exists()
            and packages.exists()
            and previous.artifact.get("sha256") == sha256_file(tarball)
        )
        if not reuse:
            self.progress.step(spec.key, "copying the artifact out")
            eng.copy_out(artifact_image, "/artifact/cpython.tar", tarball)
            eng.copy_out(artifact_image, "/artifact/runtime-packages.txt", packages)
        res.artifact = {"path": str(tarball), "sha256": sha256_file(tarball), "bytes": tarball.stat().st_size}
        if spec.pgo:
            profile = adir / "pgo-profile.tar.xz"
            if not reuse or not profile.exists():
                eng.copy_out(artifact_image, "/artifact/pgo-profile.tar.xz", profile)
            res.pgo_profile.update(path=str(profile), sha256=sha256_file(profile))
        res.runtime_packages = packages.read_text().split()
        return tarball

    def _runtime_image(self, spec: BuildSpec, res: EntryResult, tarball: Path, log: IO[str], eng: EngineAPI) -> str:
        """The runtime image, assembled from the artifact (untagged)."""
        t = time.monotonic()
        self.progress.step(spec.key, "assembling the runtime image")
        log.write("\n=== runtime image (from cpython.tar) ===\n")
        ctx = context_tar({"Dockerfile": self.renderer.runtime_dockerfile(spec).encode(), "cpython.tar": tarball})
        image = eng.build(
            ctx,
            platform=spec.platform.name,
            nocache=self.options.nocache,
            cache_from=[spec.base_image] if self.options.fresh else self._cache_from(spec, [], Placement(engine=eng)),
            log=log,
            labels={"org.opencontainers.image.revision": git_revision(self.ws.root)},
            on_line=self._watch(spec, "runtime"),
        )
        res.image_id = image
        res.durations["runtime"] = time.monotonic() - t
        return image

    def _judge(
        self,
        spec: BuildSpec,
        res: EntryResult,
        artifact_image: str,
        image: str,
        previous: EntryResult | None,
        place: Placement,
    ) -> None:
        """Locked package versions, then the smoke test (or its earlier verdict on the same image), on
        the engine that built the image."""
        eng = place.engine
        smoke_key = smoke.inputs_digest(spec, self.ws.scripts / "smoke.py")
        res.smoke_inputs = smoke_key
        drift = self._package_drift(spec, artifact_image, image, place)
        if drift:
            res.problems = drift
        elif (
            previous is not None
            and previous.passed
            and previous.image_id == image
            and previous.smoke_inputs == smoke_key
            and all(eng.image_id(tag) == image for tag in spec.tags)
        ):
            res.facts, res.problems, res.reused = previous.facts, [], True
            res.durations["smoke"] = 0.0
        else:
            self.progress.step(spec.key, "smoke test")
            sm = smoke.run(eng, image, spec, self.ws.scripts / "smoke.py", log=self.ws.log_path(spec))
            res.facts, res.problems = sm.facts, sm.problems
            res.durations["smoke"] = sm.seconds

    def _promote_or_discard(self, spec: BuildSpec, res: EntryResult, image: str, eng: EngineAPI) -> None:
        """Tag an image that passed; untag and delete one that failed (a tag means "passed")."""
        if eng.cancelled:
            raise Interrupted("interrupted before tagging", hint="rerun the same command")
        if not res.problems:
            if self.options.promote:
                for tag in spec.tags:
                    eng.tag(image, tag)
                res.tags = list(spec.tags)
            res.status = "passed"
            return
        res.status = "failed"
        if self.options.promote:
            for tag in spec.tags:  # drop any stale tag
                if eng.image_id(tag) is not None:
                    eng.remove_image(tag)
        # The same bytes may already be a passing image under other tags (layer cache): only an image
        # nobody else refers to is deleted.
        if not eng.inspect_image(image).get("RepoTags"):
            eng.remove_image(image)
        res.image_id = None

    def _builder_platform(self, spec: BuildSpec, place: Placement) -> Platform:
        """Where the entry's compiler runs: its own platform on an engine of that architecture (or with
        --native), else the matrix's build-platform (a cross build, or an emulated one)."""
        return spec.platform if self.options.native or place.native else spec.build_platform

    def _package_drift(self, spec: BuildSpec, artifact_image: str, image: str, place: Placement) -> list[str]:
        lock = self.options.lock
        if lock is None:
            return []
        entry = lock.entries.get(spec.key, {})
        eng = place.engine
        return package_drift(
            entry.get("builder_packages", {}),
            packages_in(eng, artifact_image, self._builder_platform(spec, place).name),
            "builder",
        ) + package_drift(entry.get("runtime_packages", {}), packages_in(eng, image, spec.platform.name), "runtime")

    def _watch(self, spec: BuildSpec, stage: str, res: EntryResult | None = None) -> Callable[[str], None]:
        """Progress from build output: Dockerfile steps and the build script's own phase lines. With
        ``res``, the last layer a step committed is noted, for a rerun of a stopped build to go on from."""

        def on_line(line: str) -> None:
            if line.startswith("Step ") or line.startswith("[cpforge-build"):
                self.progress.step(spec.key, f"{stage}: {line.strip()[:110]}")
            elif res is not None and (layer := STEP_LAYER.match(line)):
                res.partial_image_id = layer.group(1)

        return on_line

    def announce(self, spec: BuildSpec, res: EntryResult, on: str = "") -> None:
        total = fmt_seconds(res.durations.get("total", 0.0))
        if res.passed:
            f = res.facts
            smoke_note = "smoke reused (no change)" if res.reused else f"smoke ok {fmt_seconds(res.durations['smoke'])}"
            self.progress.done(
                spec.key,
                True,
                f"{total}{on}; {smoke_note}; gil_enabled={f.get('gil_enabled')} jit_built={f.get('jit_built')} "
                f"jit_enabled={f.get('jit_enabled')} → {res.tags[0] if res.tags else res.image_id}",
            )
        else:
            first = res.problems[0].splitlines()[0] if res.problems else "unknown"
            more = f" (+{len(res.problems) - 1} more)" if len(res.problems) > 1 else ""
            self.progress.done(spec.key, False, f"{res.status} after {total}{on}: {first}{more}; log: {res.log}")


def smoke_only(
    engines: Engine | Holders, ws: Workspace, report: Report, specs: Sequence[BuildSpec], progress: Progress
) -> list[EntryResult]:
    """Re-run smoke tests on images already built (from the report, or by tag), each on the engine
    that holds it (the one its build recorded)."""
    holders = Holders.wrap(engines)
    out: list[EntryResult] = []
    for spec in specs:
        prev = report.entries.get(spec.key)
        engine = holders.of(prev)
        image = (prev.image_id if prev and prev.image_id else None) or engine.image_id(spec.tags[0])
        if image is None or engine.image_id(image) is None:
            res = prev or blank_result(spec, ws)
            progress.done(spec.key, False, "no built image (run `invoke build` first)")
            out.append(res)
            continue
        progress.start(spec.key, "smoke test")
        sm = smoke.run(engine, image, spec, ws.scripts / "smoke.py", log=ws.log_path(spec))
        res = prev or blank_result(spec, ws)
        res.image_id = res.image_id or image
        res.facts, res.problems, res.reused = sm.facts, sm.problems, False
        res.smoke_inputs = smoke.inputs_digest(spec, ws.scripts / "smoke.py")
        res.durations["smoke"] = sm.seconds
        res.status = "passed" if sm.passed else "failed"
        res.reason = sm.problems[0] if sm.problems else ""
        if not sm.passed:
            for tag in spec.tags:
                if engine.image_id(tag) == image:
                    engine.remove_image(tag)
            res.tags = []
        report.update(res)
        report.save()
        progress.done(spec.key, sm.passed, f"smoke {'ok' if sm.passed else 'FAILED: ' + '; '.join(sm.problems)}")
        out.append(res)
    return out
