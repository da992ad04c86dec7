"""The operations behind the Invoke tasks, callable from Python (tests, other front ends).

Each function takes typed inputs, does one job, and returns typed results; printing is left to
the caller except for progress lines, which go through a Progress object.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import base as base_images
from . import lock as lockfile
from . import matrix as mx
from . import render
from .build import Builder, BuildOptions, Workspace, smoke_only
from .engine import Engine
from .errors import SelectionError
from .progress import Progress
from .report import EntryResult, Report
from .sources import Fetched, Sources

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True)
class Context:
    """What every task needs: the matrix and where things live."""

    matrix: mx.Matrix
    ws: Workspace
    report_path: Path
    lock_path: Path
    extra_mirrors: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        matrix_file: str | Path = "matrix.yaml",
        *,
        root: Path = ROOT,
        out: str | Path = "build",
        report: str | Path | None = None,
        mirrors: Sequence[str] = (),
    ) -> Context:
        mpath = Path(matrix_file)
        if not mpath.is_absolute() and not mpath.exists():
            mpath = root / mpath
        m = mx.load(mpath)
        outp = Path(out) if Path(out).is_absolute() else root / out
        env_mirrors = tuple(x for x in os.environ.get("CPFORGE_MIRRORS", "").split(",") if x)
        return cls(
            matrix=m,
            ws=Workspace(root=root, out=outp),
            report_path=Path(report) if report else outp / "report.json",
            lock_path=mpath.with_name("matrix.lock"),
            extra_mirrors=(*mirrors, *env_mirrors),
        )

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
    """The entries to work on: the default entry unless --matrix or a filter/platform is given."""
    specs = ctx.matrix.expand(profile)
    if not whole_matrix and not filters and not platforms:
        chosen = [s for s in specs if s.id == ctx.matrix.default_entry]
        if not chosen:
            raise SelectionError(
                f"the default entry {ctx.matrix.default_entry} is not in the matrix",
                hint="fix `default.entry` in matrix.yaml",
            )
        return chosen
    return mx.select(specs, filters, platforms)


def render_dockerfiles(ctx: Context, check: bool = False) -> list[str]:
    """Write (or, with check, only compare) every entry's Dockerfiles; return the paths that differ."""
    specs = ctx.matrix.expand_all()
    if check:
        return render.check(ctx.ws.root, ctx.renderer, specs)
    return render.write(ctx.ws.root, ctx.renderer, specs)


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
    engine: Engine,
    specs: Sequence[mx.BuildSpec],
    options: BuildOptions,
    progress: Progress,
    locked: bool = False,
) -> list[EntryResult]:
    """Build the plan. With ``locked``, refuse unless every input matches matrix.lock."""
    lk = lockfile.Lock.load(ctx.lock_path)
    if locked:
        mirrors = lockfile.MirrorIndex(ctx.ws.out / "cache")
        lockfile.check_locked(lk, ctx.ws.root, ctx.renderer, specs, mirrors, engine=engine)
        options = dataclasses.replace(options, lock=lk)
    elif ctx.lock_path.exists():
        for line in lockfile.stale(lk, ctx.ws.root, ctx.renderer, specs)[:10]:
            progress.say(f"! {ctx.lock_path.name} is stale: {line} (run `invoke lock` after this build)")
    report = Report.load(ctx.report_path)
    builder = Builder(engine, ctx.ws, ctx.renderer, ctx.sources(progress), report, progress, options)
    return builder.run(specs)


def lock(
    ctx: Context, engine: Engine, specs: Sequence[mx.BuildSpec], progress: Progress | None = None
) -> tuple[list[str], list[str]]:
    """Write matrix.lock from the last passing builds of ``specs``, pinning PGO profiles not yet
    pinned. Returns the keys locked and the profiles newly pinned."""
    lk = lockfile.Lock.load(ctx.lock_path)
    report = Report.load(ctx.report_path)
    return lockfile.write(lk, ctx.ws.root, ctx.renderer, report, engine, specs, progress)


def smoke(ctx: Context, engine: Engine, specs: Sequence[mx.BuildSpec], progress: Progress) -> list[EntryResult]:
    report = Report.load(ctx.report_path)
    return smoke_only(engine, ctx.ws, report, specs, progress)
