"""The operations behind the Invoke tasks, callable from Python (tests, other front ends).

Each function takes typed inputs, does one job, and returns typed results; printing is left to
the caller except for progress lines, which go through a Progress object.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import base as base_images
from . import lock as lockfile
from . import matrix as mx
from . import render, selection
from .build import Builder, BuildOptions, Workspace, smoke_only
from .builders import Fleet, Holders, check_coverage, declared
from .engine import Engine, EngineAPI
from .progress import Progress
from .report import EntryResult, Report
from .selection import Choice
from .sources import Fetched, Sources

if TYPE_CHECKING:
    from .bench import BuildBench, FleetBench
    from .merge import MergeResult
    from .provision import ProvisionResult
    from .publish import PublishResult
    from .speed import SpeedResult
    from .verify import VerifyResult

ROOT = Path(__file__).resolve().parent.parent


def resolve(cwd: Path, path: str | Path) -> Path:
    """``path`` (``~`` expanded) if absolute, else relative to ``cwd``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else cwd / p


@dataclass(frozen=True, kw_only=True)
class Context:
    """What every task needs: the matrix and where things live.

    Paths rule: a path given on the command line (--matrix-file, --out, --report, --dest) is
    relative to the current directory; the defaults are in the repository: matrix.yaml, build/,
    <out>/report.json, <out>/dist."""

    matrix: mx.Matrix
    ws: Workspace
    report_path: Path
    lock_path: Path
    extra_mirrors: tuple[str, ...] = ()
    cwd: Path = field(default_factory=Path.cwd)

    @classmethod
    def create(
        cls,
        matrix_file: str | Path | None = None,
        *,
        root: Path = ROOT,
        out: str | Path | None = None,
        report: str | Path | None = None,
        mirrors: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> Context:
        here = (cwd or Path.cwd()).absolute()
        mpath = resolve(here, matrix_file) if matrix_file else root / "matrix.yaml"
        matrix = mx.load(mpath)
        # Everything a matrix file owns sits beside it and is named by it (Matrix.namespace): its
        # Dockerfiles, its lock, its default output directory. A second matrix file cannot overwrite
        # or delete what another rendered, locked or built.
        ns = f"-{matrix.namespace}" if matrix.namespace else ""
        outp = resolve(here, out) if out else mpath.parent / f"build{ns}"
        env_mirrors = tuple(x for x in os.environ.get("CPFORGE_MIRRORS", "").split(",") if x)
        return cls(
            matrix=matrix,
            ws=Workspace(root=root, out=outp, matrix_dir=mpath.parent),
            report_path=resolve(here, report) if report else outp / "report.json",
            lock_path=mpath.with_suffix(".lock"),
            extra_mirrors=(*mirrors, *env_mirrors),
            cwd=here,
        )

    def resolve(self, path: str | Path) -> Path:
        """A path from the command line: relative to the directory the command ran in."""
        return resolve(self.cwd, path)

    @property
    def renderer(self) -> render.Renderer:
        return render.Renderer(self.ws.templates)

    def sources(self, progress: Progress | None = None) -> Sources:
        cache = Path(self.matrix.cache_dir)
        if not cache.is_absolute():
            cache = self.ws.root / cache
        say = progress.say if progress else print
        return Sources(cache, (*self.extra_mirrors, *self.matrix.mirrors), say)


def plan(
    ctx: Context,
    *,
    filters: Sequence[str] = (),
    platforms: Sequence[str] = (),
    profile: str | None = None,
    whole_matrix: bool = False,
) -> list[mx.BuildSpec]:
    """The entries `build` works on: the default entry unless --matrix or a filter/platform is given."""
    choice = Choice(filters=tuple(filters), platforms=tuple(platforms), profile=profile, whole_matrix=whole_matrix)
    return select(ctx, "build", choice)


def select(ctx: Context, task: str, choice: Choice) -> list[mx.BuildSpec]:
    """The entries ``task`` works on, by cpforge's one selection rule (cpforge/selection.py)."""
    needs_report = not choice.explicit and selection.DEFAULTS[task] is selection.Default.REPORT
    report = Report.load(ctx.report_path) if needs_report else None
    return selection.select(ctx.matrix, task, choice, report)


def connect(url: str | None = None) -> Engine:
    """The Docker engine at ``url`` (default: DOCKER_HOST, else the local socket)."""
    return Engine.connect(url or None)


def fleet(
    ctx: Context,
    specs: Sequence[mx.BuildSpec],
    *,
    builders: Sequence[str] = (),
    engine_url: str = "",
    jobs: int = 1,
    keep_going: bool = False,
    say: Callable[[str], None] = print,
) -> Fleet:
    """The engines a build of ``specs`` uses: --builder flags, else --engine (one engine for
    everything), else the matrix's `builders:`, else the default engine (cpforge/builders.py). Every
    engine is reached first: one that cannot be is an EngineError (exit 5), unless ``keep_going``."""
    decls = declared(ctx.matrix, builders, engine_url)
    if not decls:
        return Fleet.single(connect(engine_url), jobs)
    check_coverage(ctx.matrix, decls, specs)
    return Fleet.connect(decls, default_jobs=jobs, keep_going=keep_going, say=say)


def holders(ctx: Context, specs: Sequence[mx.BuildSpec], engine_url: str = "") -> Holders:
    """Where each entry's images are, for the tasks after a build: the engine its build recorded
    (the report's `engine`), or with ``engine_url`` (an explicit --engine) that engine for all.
    Every engine ``specs`` need is reached now (EngineError, exit 5, naming one that cannot be)."""
    found = Holders(url=engine_url, override=bool(engine_url), connect=lambda url: connect(url))
    report = Report.load(ctx.report_path)
    for spec in specs:
        found.of(report.entries.get(spec.key))
    return found


def render_dockerfiles(ctx: Context, check: bool = False) -> list[str]:
    """Write (or, with check, only compare) every entry's Dockerfiles; return the paths that differ."""
    specs = ctx.matrix.expand_all()
    if check:
        return render.check(ctx.ws.dockerfiles_base, ctx.renderer, specs)
    return render.write(ctx.ws.dockerfiles_base, ctx.renderer, specs)


def fetch_sources(ctx: Context, specs: Sequence[mx.BuildSpec]) -> list[Fetched]:
    return ctx.sources().ensure_all([s.source for s in specs])


def ensure_bases(
    ctx: Context, engine: Engine, specs: Sequence[mx.BuildSpec], progress: Progress, force: bool = False
) -> list[base_images.BaseResult]:
    needed = {(s.distro, p) for s in specs for p in (s.platform, s.build_platform)}
    pairs = sorted(needed, key=lambda p: (p[0].name, p[1].name))
    return [
        base_images.ensure(engine, d, p, ctx.ws.out / "base", progress.say, force_bootstrap=force) for d, p in pairs
    ]


def build(
    ctx: Context,
    engine: EngineAPI | Fleet,
    specs: Sequence[mx.BuildSpec],
    options: BuildOptions,
    progress: Progress,
    locked: bool = False,
) -> list[EntryResult]:
    """Build the plan on ``engine`` (one engine for everything, or a fleet: see `fleet`). With
    ``locked``, refuse unless every input matches matrix.lock (on every engine: its base images)."""
    engines = engine if isinstance(engine, Fleet) else Fleet.single(engine, options.jobs)
    lk = lockfile.Lock.load(ctx.lock_path)
    if locked:
        mirrors = lockfile.MirrorIndex(ctx.ws.out / "cache")
        for w in engines.live():
            mine = [s for s in specs if w.serves(s.platform.name)]
            lockfile.check_locked(lk, ctx.ws.root, ctx.renderer, mine, mirrors, engine=w.engine)
        options = dataclasses.replace(options, lock=lk)
    elif ctx.lock_path.exists():
        for line in lockfile.stale(lk, ctx.ws.root, ctx.renderer, specs)[:10]:
            progress.say(f"! {ctx.lock_path.name} is stale: {line} (run `invoke lock` after this build)")
    report = Report.load(ctx.report_path)
    progress.attach_logs({s.key: ctx.ws.log_path(s) for s in specs})
    builder = Builder(engines, ctx.ws, ctx.renderer, ctx.sources(progress), report, progress, options)
    return builder.run(specs)


def lock(
    ctx: Context, engine: Engine | Holders, specs: Sequence[mx.BuildSpec], progress: Progress | None = None
) -> tuple[list[str], list[str]]:
    """Write matrix.lock from the last passing builds of ``specs``, pinning PGO profiles not yet
    pinned. Returns the keys locked and the profiles newly pinned."""
    lk = lockfile.Lock.load(ctx.lock_path)
    report = Report.load(ctx.report_path)
    return lockfile.write(lk, ctx.ws.root, ctx.renderer, report, engine, specs, progress)


def smoke(
    ctx: Context, engine: Engine | Holders, specs: Sequence[mx.BuildSpec], progress: Progress
) -> list[EntryResult]:
    report = Report.load(ctx.report_path)
    progress.attach_logs({s.key: ctx.ws.log_path(s) for s in specs})
    return smoke_only(engine, ctx.ws, report, specs, progress)


def verify(
    ctx: Context, engine: Engine | Holders, specs: Sequence[mx.BuildSpec], progress: Progress
) -> list[VerifyResult]:
    """Rebuild ``specs`` without the layer cache and compare them bit for bit with their last build."""
    from .verify import verify as run_verify

    rebuilds = dataclasses.replace(ctx.ws, out=ctx.ws.out / "verify")  # where verify's rebuilds log
    progress.attach_logs({s.key: rebuilds.log_path(s) for s in specs})
    return run_verify(ctx, engine, specs, progress)


def publish(
    ctx: Context,
    engine: Engine | Holders,
    specs: Sequence[mx.BuildSpec],
    registry: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    progress: Progress | None = None,
    lists: bool = True,
) -> PublishResult:
    """Push the images of ``specs`` that passed, with manifest lists (unless not ``lists``) and SBOMs."""
    from .publish import publish as run_publish

    report = Report.load(ctx.report_path, missing_ok=False)
    return run_publish(
        engine,
        report,
        specs,
        registry,
        out=ctx.ws.out,
        dry_run=dry_run,
        force=force,
        insecure=insecure,
        progress=progress,
        lists=lists,
    )


def publish_lists(
    specs: Sequence[mx.BuildSpec],
    registry: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    progress: Progress | None = None,
) -> PublishResult:
    """The fan-in: write the manifest lists of ``specs`` once every member is in the registry (no engine)."""
    from .publish import publish_lists as run_lists

    return run_lists(specs, registry, dry_run=dry_run, force=force, insecure=insecure, progress=progress)


def provision(
    ctx: Context,
    engine: Engine | Holders,
    specs: Sequence[mx.BuildSpec],
    dest: Path,
    base_url: str,
    say: Callable[[str], None] = print,
) -> ProvisionResult:
    """Export relocatable interpreter tarballs of ``specs`` into ``dest``."""
    from .provision import provision as run_provision

    report = Report.load(ctx.report_path, missing_ok=False)
    return run_provision(engine, report, specs, dest, base_url, say=say)


def merge_provisioned(
    sources: Sequence[Path], dest: Path, base_url: str, say: Callable[[str], None] = print
) -> MergeResult:
    """Merge provision output directories into ``dest``: one SHA256SUMS and set of manifests."""
    from .merge import merge

    return merge(sources, dest, base_url, say=say)


def bench_build(
    ctx: Context, engine: Engine, specs: Sequence[mx.BuildSpec], progress: Progress, emulate_seconds: int = 0
) -> BuildBench:
    """Clean builds of ``specs``; the arm64/amd64 ratios (build/bench/build.json)."""
    from .bench import build_ratio

    progress.attach_logs({s.key: ctx.ws.log_path(s) for s in specs})
    return build_ratio(ctx, engine, specs, progress, emulate_seconds=emulate_seconds)


def bench_fleet(
    ctx: Context, fleet: Fleet, specs: Sequence[mx.BuildSpec], progress: Progress, cached: bool = False
) -> FleetBench:
    """Matrix wall time of ``specs`` on the fleet's first engine alone, then on all its engines, and
    the scheduler's per-entry overhead (build/bench/fleet.json)."""
    from .bench import fleet_bench

    return fleet_bench(ctx, fleet, specs, progress, cached=cached)


def bench_speed(
    ctx: Context,
    engine: Engine,
    *,
    rounds: int,
    instructions: bool,
    suite: str,
    filters: Sequence[str] = (),
    version: str = "",
    say: Callable[[str], None] = print,
) -> SpeedResult:
    """Interpreter speed of one release's last builds against Debian's own (build/bench/speed*.json)."""
    from .speed import speed

    report = Report.load(ctx.report_path)
    return speed(
        engine,
        ctx.matrix,
        report,
        ctx.ws.out,
        ctx.ws.scripts,
        filters=filters,
        version=version,
        rounds=rounds,
        instructions=instructions,
        suite=suite,
        say=say,
    )
