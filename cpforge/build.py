"""The plan: verify inputs, then per entry build artifact → assemble runtime → smoke → promote.

Order of work for a plan (every check that can refuse happens before anything is built):
  1. the committed Dockerfiles of the selected entries match the templates (else: `invoke render`);
  2. every source tarball is present and matches its sha256;
  3. every base image exists (pulled or bootstrapped);
  4. per entry, possibly in parallel (--jobs):
     a. build the Dockerfile's `artifact` stage (log streamed to build/logs/<entry>.log),
     b. copy /artifact/cpython.tar out of it (the artifact everything else derives from),
     c. build the runtime image from that tarball (untagged),
     d. smoke-test it with no network; only if it passed does it get its final tags.
"""

from __future__ import annotations

import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import base as base_images
from . import diagnose, render, smoke
from .engine import Engine, context_tar
from .errors import CpforgeError, RenderError
from .lock import Lock, package_drift, packages_in, pinned_pgo_profile
from .matrix import BuildSpec, Platform
from .progress import Progress, fmt_seconds
from .report import EntryResult, Report
from .sources import Sources, sha256_file

# The artifact stage of a PGO build copies pgo/ (so the COPY never fails before a profile is pinned);
# cpforge's own context holds this note and, once pinned, the entry's profile only.
PGO_README = b"Pinned PGO profiles: see pgo/README.md in the cpforge repository.\n"


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """Where things live: the repository (templates, scripts, dockerfiles) and the output dir."""

    root: Path
    out: Path

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
    promote: bool = True  # tag images that passed (False: keep them untagged, e.g. for verify)
    lock: Lock | None = None  # --locked: installed package versions must equal the lock's
    native: bool = False  # compile on the target platform itself (a native arm64 runner), never cross


def git_revision(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def blank_result(spec: BuildSpec, ws: Workspace) -> EntryResult:
    """A report line for ``spec`` before anything is known about its build."""
    return EntryResult(
        key=spec.key,
        id=spec.id,
        profile=spec.profile.name,
        version=spec.version,
        variant=spec.variant.name,
        platform=spec.platform.name,
        log=str(ws.log_path(spec)),
    )


class Builder:
    def __init__(
        self,
        engine: Engine,
        ws: Workspace,
        renderer: render.Renderer,
        sources: Sources,
        report: Report,
        progress: Progress,
        options: BuildOptions,
    ) -> None:
        self.engine = engine
        self.ws = ws
        self.renderer = renderer
        self.sources = sources
        self.report = report
        self.progress = progress
        self.options = options
        self._report_lock = threading.Lock()
        self._failed = threading.Event()

    # ------------------------------------------------------------------ preflight

    def preflight(self, specs: Sequence[BuildSpec]) -> None:
        """Everything that can refuse the plan, before any image is built."""
        drift = render.check(self.ws.root, self.renderer, specs)
        drift = [d for d in drift if d in {s.dockerfile for s in specs}]
        if drift:
            raise RenderError(
                "committed Dockerfiles differ from the templates: " + ", ".join(drift),
                hint="run `invoke render` and commit the result",
            )
        self.sources.ensure_all([s.source for s in specs])
        for plat in sorted({s.platform for s in specs}, key=lambda p: p.name):
            base_images.check_emulation(plat)  # smoke tests of foreign platforms run under QEMU
        needed = {(s.distro, p) for s in specs for p in (s.platform, self._builder_platform(s))}
        for distro, plat in sorted(needed, key=lambda x: (x[0].name, x[1].name)):
            res = base_images.ensure(self.engine, distro, plat, self.ws.out / "base", self.progress.say)
            if res.how != "present":
                self.progress.say(f"✓ base {res.ref} {res.how} in {fmt_seconds(res.seconds)}")

    # ------------------------------------------------------------------ plan

    def run(self, specs: Sequence[BuildSpec]) -> list[EntryResult]:
        self.preflight(specs)
        results: list[EntryResult] = []
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures: list[tuple[BuildSpec, Future[EntryResult]]] = [
                (spec, pool.submit(self._guarded, spec)) for spec in specs
            ]
            for _spec, fut in futures:
                results.append(fut.result())
        return results

    def _guarded(self, spec: BuildSpec) -> EntryResult:
        if self._failed.is_set() and not self.options.keep_going:
            res = blank_result(spec, self.ws)
            res.status = "skipped"
            res.problems = ["not built: an earlier entry failed (use --keep-going to build the rest)"]
            res.reason = res.problems[0]
            self.progress.done(spec.key, False, "skipped (an earlier entry failed)")
            self._record(res)
            return res
        res = self.build_one(spec)
        if not res.passed:
            self._failed.set()
        return res

    def _record(self, res: EntryResult) -> None:
        with self._report_lock:
            self.report.update(res)
            self.report.save()

    # ------------------------------------------------------------------ one entry

    def build_one(self, spec: BuildSpec) -> EntryResult:
        res = blank_result(spec, self.ws)
        previous = self.report.entries.get(spec.key)
        logpath = self.ws.log_path(spec)
        logpath.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self.progress.start(spec.key, f"building artifact (log: {logpath})")
        try:
            with logpath.open("w", encoding="utf-8") as log:
                # a. artifact stage
                t = time.monotonic()
                fetched = self.sources.ensure(spec.source)
                files: dict[str, bytes | Path] = {
                    "Dockerfile": self.renderer.dockerfile(spec).encode(),
                    **{rel: self.ws.root / rel for rel in render.CONTEXT_SCRIPTS},
                    f"sources/{spec.source.filename}": fetched.path,
                }
                if spec.pgo_profile:
                    files["pgo/README.md"] = PGO_README
                    pinned = pinned_pgo_profile(self.ws.root, spec)
                    if pinned is not None:
                        files[spec.pgo_profile] = pinned
                        res.pgo_profile["pinned"] = sha256_file(pinned)
                ctx = context_tar(files)
                artifact_image = self.engine.build(
                    ctx,
                    target="artifact",
                    platform=self._builder_platform(spec).name,
                    buildargs={"BUILDER_ARCH": self._builder_platform(spec).arch},
                    nocache=self.options.nocache,
                    log=log,
                    on_line=self._watch(spec, "artifact"),
                )
                res.artifact_image_id = artifact_image
                res.durations["artifact"] = time.monotonic() - t

                # b. the artifact itself
                adir = self.ws.artifact_dir(spec)
                tarball = adir / "cpython.tar"
                packages = adir / "runtime-packages.txt"
                reuse = (
                    previous is not None
                    and previous.artifact_image_id == artifact_image
                    and tarball.exists()
                    and packages.exists()
                    and previous.artifact.get("sha256") == sha256_file(tarball)
                )
                if not reuse:
                    self.progress.step(spec.key, "copying the artifact out")
                    self.engine.copy_out(artifact_image, "/artifact/cpython.tar", tarball)
                    self.engine.copy_out(artifact_image, "/artifact/runtime-packages.txt", packages)
                res.artifact = {"path": str(tarball), "sha256": sha256_file(tarball), "bytes": tarball.stat().st_size}
                if spec.pgo:
                    profile = adir / "pgo-profile.tar.xz"
                    if not reuse or not profile.exists():
                        self.engine.copy_out(artifact_image, "/artifact/pgo-profile.tar.xz", profile)
                    res.pgo_profile.update(path=str(profile), sha256=sha256_file(profile))
                res.runtime_packages = packages.read_text().split()

                # c. runtime image from the artifact
                t = time.monotonic()
                self.progress.step(spec.key, "assembling the runtime image")
                log.write("\n=== runtime image (from cpython.tar) ===\n")
                rctx = context_tar(
                    {"Dockerfile": self.renderer.runtime_dockerfile(spec).encode(), "cpython.tar": tarball}
                )
                image = self.engine.build(
                    rctx,
                    platform=spec.platform.name,
                    nocache=self.options.nocache,
                    log=log,
                    labels={"org.opencontainers.image.revision": git_revision(self.ws.root)},
                    on_line=self._watch(spec, "runtime"),
                )
                res.image_id = image
                res.durations["runtime"] = time.monotonic() - t

            # d. locked package versions, smoke, then promote
            smoke_key = smoke.inputs_digest(spec, self.ws.scripts / "smoke.py")
            res.smoke_inputs = smoke_key
            drift = self._package_drift(spec, artifact_image, image)
            if drift:
                res.problems = drift
            elif (
                previous is not None
                and previous.passed
                and previous.image_id == image
                and previous.smoke_inputs == smoke_key
                and all(self.engine.image_id(tag) == image for tag in spec.tags)
            ):
                res.facts, res.problems, res.reused = previous.facts, [], True
                res.durations["smoke"] = 0.0
            else:
                self.progress.step(spec.key, "smoke test")
                sm = smoke.run(self.engine, image, spec, self.ws.scripts / "smoke.py", log=logpath)
                res.facts, res.problems = sm.facts, sm.problems
                res.durations["smoke"] = sm.seconds
            if res.problems:
                res.status = "failed"
                if self.options.promote:
                    for tag in spec.tags:  # a tag means "passed": drop any stale one
                        if self.engine.image_id(tag) is not None:
                            self.engine.remove_image(tag)
                # The same bytes may already be a passing image under other tags (layer cache):
                # only an image nobody else refers to is deleted.
                if not self.engine.inspect_image(image).get("RepoTags"):
                    self.engine.remove_image(image)
                res.image_id = None
            else:
                if self.options.promote:
                    for tag in spec.tags:
                        self.engine.tag(image, tag)
                    res.tags = list(spec.tags)
                res.status = "passed"
        except CpforgeError as exc:
            res.status = "error"
            res.problems = [str(exc)]
            if decisive := diagnose.decisive_line_of(logpath):
                res.problems.insert(0, decisive)
        except Exception as exc:  # noqa: BLE001 - one entry's crash must not hide the others
            res.status = "error"
            res.problems = [f"internal error: {exc!r}"]
            with logpath.open("a", encoding="utf-8") as log:
                log.write(traceback.format_exc())
        res.reason = res.problems[0].splitlines()[0] if res.problems else ""
        res.durations["total"] = time.monotonic() - t0
        self._record(res)
        self._announce(spec, res)
        return res

    def _builder_platform(self, spec: BuildSpec) -> Platform:
        return spec.platform if self.options.native else spec.build_platform

    def _package_drift(self, spec: BuildSpec, artifact_image: str, image: str) -> list[str]:
        lock = self.options.lock
        if lock is None:
            return []
        entry = lock.entries.get(spec.key, {})
        return package_drift(
            entry.get("builder_packages", {}),
            packages_in(self.engine, artifact_image, self._builder_platform(spec).name),
            "builder",
        ) + package_drift(
            entry.get("runtime_packages", {}), packages_in(self.engine, image, spec.platform.name), "runtime"
        )

    def _watch(self, spec: BuildSpec, stage: str) -> Callable[[str], None]:
        """Progress from build output: Dockerfile steps and the build script's own phase lines."""

        def on_line(line: str) -> None:
            if line.startswith("Step ") or line.startswith("[cpforge-build"):
                self.progress.step(spec.key, f"{stage}: {line.strip()[:110]}")

        return on_line

    def _announce(self, spec: BuildSpec, res: EntryResult) -> None:
        total = fmt_seconds(res.durations.get("total", 0.0))
        if res.passed:
            f = res.facts
            smoke_note = "smoke reused (no change)" if res.reused else f"smoke ok {fmt_seconds(res.durations['smoke'])}"
            self.progress.done(
                spec.key,
                True,
                f"{total}; {smoke_note}; gil_enabled={f.get('gil_enabled')} jit_built={f.get('jit_built')} "
                f"jit_enabled={f.get('jit_enabled')} → {res.tags[0] if res.tags else res.image_id}",
            )
        else:
            first = res.problems[0].splitlines()[0] if res.problems else "unknown"
            more = f" (+{len(res.problems) - 1} more)" if len(res.problems) > 1 else ""
            self.progress.done(spec.key, False, f"{res.status} after {total}: {first}{more}; log: {res.log}")


def smoke_only(
    engine: Engine, ws: Workspace, report: Report, specs: Sequence[BuildSpec], progress: Progress
) -> list[EntryResult]:
    """Re-run smoke tests on images already built (from the report, or by tag)."""
    out: list[EntryResult] = []
    for spec in specs:
        prev = report.entries.get(spec.key)
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
