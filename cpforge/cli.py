"""One function per Invoke task: check the options, choose the entries, call cpforge.api, and
return what to print (an `output.Outcome`). tasks.py only maps flags onto these and prints.

Order in every task: options are checked first (a bad value is exit 2 and touches nothing), then
the matrix is loaded and the entries chosen (cpforge/selection.py), then the engine is reached.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import api, output
from . import matrix as mx
from .build import BuildOptions
from .builders import Fleet
from .builders import parse_flag as parse_builder
from .errors import EngineError, EntriesStale, UpdateAvailable, UsageError
from .output import Outcome
from .progress import Progress, Style, fmt_seconds
from .report import EntryResult
from .selection import Choice

BENCHMARKS = ("build", "speed")


@dataclass(frozen=True, kw_only=True)
class Common:
    """The options most tasks share: where things are, which engine, which entries."""

    matrix_file: str = ""
    out: str = ""
    report: str = ""
    engine: str = ""
    mirrors: tuple[str, ...] = ()
    choice: Choice = field(default_factory=Choice)
    cwd: Path | None = None

    def context(self) -> api.Context:
        return api.Context.create(
            self.matrix_file or None,
            out=self.out or None,
            report=self.report or None,
            mirrors=self.mirrors,
            cwd=self.cwd,
        )


def whole_number(flag: str, value: str | int, minimum: int) -> int:
    """``value`` of ``flag`` as an int of at least ``minimum``, else a clear error (exit 2)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise UsageError(
            f"{flag} takes a whole number of at least {minimum}, not {str(value)!r}",
            hint=f"e.g. {flag} {max(minimum, 2)}",
        )
    return number


def one_of(flag: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"unknown {flag} {value!r}", hint=f"use one of: {', '.join(choices)}")
    return value


def style() -> Style:
    return Style.detect(sys.stdout)


def progress(total: int) -> Progress:
    return Progress(total=total, style=style())


# ------------------------------------------------------------------------------------ tasks


def matrix(common: Common, as_json: bool) -> Outcome:
    ctx = common.context()
    specs = api.select(ctx, "matrix", common.choice)
    return output.matrix_json(specs) if as_json else output.matrix_table(specs, ctx.matrix.default_entry)


def render(common: Common, check: bool) -> Outcome:
    ctx = common.context()
    return output.rendered(api.render_dockerfiles(ctx, check=check), check)


def sources(common: Common) -> Outcome:
    ctx = common.context()
    specs = api.select(ctx, "sources", common.choice)
    return output.fetched(api.fetch_sources(ctx, specs))


def base(common: Common, force: bool) -> Outcome:
    ctx = common.context()
    specs = api.select(ctx, "base", common.choice)
    engine = api.connect(common.engine)
    with progress(0) as p:
        return output.bases(api.ensure_bases(ctx, engine, specs, p, force=force))


def build(
    common: Common,
    *,
    jobs: str,
    keep_going: bool,
    no_cache: bool,
    native: bool,
    locked: bool,
    builders: tuple[str, ...] = (),
    retry: bool = False,
) -> Outcome:
    n = whole_number("--jobs", jobs, 1)
    for flag in builders:  # a bad --builder is refused before anything is read or reached
        parse_builder(flag)
    ctx = common.context()
    specs = api.select(ctx, "build", common.choice)
    with progress(len(specs)) as p:
        engines = api.fleet(
            ctx, specs, builders=builders, engine_url=common.engine, jobs=n, keep_going=keep_going, say=p.say
        )
        if engines.several:
            p.say(
                f"cpforge: {output.entries(len(specs))} (profile {specs[0].profile.name}) on "
                f"{len(engines.workers)} engines; logs in {ctx.ws.logs}"
            )
            for line in engines.describe():
                p.say(line)
        else:
            p.say(output.build_header(specs, n, engines.workers[0].url, ctx.ws.logs))
        options = BuildOptions(jobs=n, keep_going=keep_going, nocache=no_cache, native=native, retry=retry)
        results = api.build(ctx, engines, specs, options, p, locked=locked)
    outcome = output.summary(results, ctx.report_path, fmt_seconds(p.elapsed), p.style)
    lost = engines_lost(engines, results)
    return Outcome(outcome.lines, lost) if lost is not None and outcome.error is not None else outcome


def engines_lost(engines: Fleet, results: list[EntryResult]) -> EngineError | None:
    """EngineError (exit 5) when every entry that did not pass failed because its engine was lost
    (or none was left for it), rather than because of the build itself."""
    failed = [r for r in results if not r.passed]
    gone = [w for w in engines.workers if w.lost]
    if not failed or not gone:
        return None
    causes = ("not built: no engine", *(f"engine {w.url} was lost" for w in gone))
    if not all(r.reason.startswith(causes) for r in failed):
        return None
    return EngineError(
        f"{output.entries(len(failed))} not built: "
        + "; ".join(f"engine {w.url} was lost ({w.lost.splitlines()[0]})" for w in gone),
        hint="start it again (or fix its host), then rerun: finished steps come from the layer cache; "
        "on a fleet, --retry builds a lost engine's entries on another engine of their platform",
    )


def smoke(common: Common) -> Outcome:
    ctx = common.context()
    specs = api.select(ctx, "smoke", common.choice)
    engine = api.holders(ctx, specs, common.engine)
    with progress(len(specs)) as p:
        results = api.smoke(ctx, engine, specs, p)
    return output.summary(results, ctx.report_path, fmt_seconds(p.elapsed), p.style)


def lock(common: Common) -> Outcome:
    ctx = common.context()
    specs = api.select(ctx, "lock", common.choice)
    engine = api.holders(ctx, specs, common.engine)
    with progress(len(specs)) as p:
        written, pinned = api.lock(ctx, engine, specs, p)
    return output.locked(written, pinned, ctx.lock_path)


def verify(common: Common, rebuild: bool) -> Outcome:
    if not rebuild:
        raise UsageError(
            "verify needs --rebuild: it rebuilds each entry from scratch and compares it with the last build",
            hint="invoke verify --rebuild [--filter GLOB]",
        )
    ctx = common.context()
    specs = api.select(ctx, "verify", common.choice)
    engine = api.holders(ctx, specs, common.engine)
    with progress(len(specs)) as p:
        results = api.verify(ctx, engine, specs, p)
    return output.verified(results, p.style)


def publish(
    common: Common,
    *,
    registry: str,
    dry_run: bool,
    force: bool,
    insecure: bool,
    images_only: bool = False,
    lists_only: bool = False,
) -> Outcome:
    if not registry:
        raise UsageError(
            "publish needs --registry HOST[:PORT]/NAMESPACE",
            hint="e.g. invoke publish --registry registry.example.com/platform (add --dry-run to see the plan)",
        )
    if images_only and lists_only:
        raise UsageError(
            "--images-only and --lists-only exclude each other",
            hint="per-entry CI jobs: --images-only; the one fan-in job after them: --lists-only; neither: both",
        )
    ctx = common.context()
    specs = api.select(ctx, "publish", common.choice)
    if lists_only:
        return publish_lists(specs, registry, dry_run=dry_run, force=force, insecure=insecure)
    engine = api.holders(ctx, specs, common.engine)
    with progress(len(specs)) as p:
        res = api.publish(
            ctx,
            engine,
            specs,
            registry,
            dry_run=dry_run,
            force=force,
            insecure=insecure,
            progress=p,
            lists=not images_only,
        )
    return output.published(res, registry)


def publish_lists(specs: list[mx.BuildSpec], registry: str, *, dry_run: bool, force: bool, insecure: bool) -> Outcome:
    """`publish --lists-only`: the fan-in; reads the registry, needs no engine and no local images."""
    with progress(len(specs)) as p:
        res = api.publish_lists(specs, registry, dry_run=dry_run, force=force, insecure=insecure, progress=p)
    return output.published(res, registry)


def provision_merge(common: Common, *, dest: str, base_url: str, sources: tuple[str, ...]) -> Outcome:
    """`provision --merge DIR…`: one directory from several provision outputs. Reads no matrix, no
    report and no engine, so the options that choose those are refused rather than ignored."""
    c = common.choice
    given = [
        flag
        for flag, on in (
            ("--filter", bool(c.filters)),
            ("--platform", bool(c.platforms)),
            ("--matrix", c.whole_matrix),
            ("--profile", c.profile is not None),
            ("--report", bool(common.report)),
            ("--engine", bool(common.engine)),
            ("--matrix-file", bool(common.matrix_file)),
        )
        if on
    ]
    if given:
        raise UsageError(
            f"--merge takes every tarball of the directories it names; {', '.join(given)} cannot apply to it",
            hint="invoke provision --merge DIR --merge DIR [--dest DIR] [--base-url URL]",
        )
    here = (common.cwd or Path.cwd()).absolute()
    out = api.resolve(here, common.out) if common.out else api.ROOT / "build"
    target = api.resolve(here, dest) if dest else out / "dist"
    with progress(0) as p:
        res = api.merge_provisioned([api.resolve(here, s) for s in sources], target, base_url, say=p.say)
    return output.merged(res)


def provision(common: Common, *, dest: str, base_url: str, merge: tuple[str, ...] = ()) -> Outcome:
    if merge:
        return provision_merge(common, dest=dest, base_url=base_url, sources=merge)
    ctx = common.context()
    specs = api.select(ctx, "provision", common.choice)
    target = ctx.resolve(dest) if dest else ctx.ws.out / "dist"
    engine = api.holders(ctx, specs, common.engine)
    with progress(len(specs)) as p:
        done = api.provision(ctx, engine, specs, target, base_url, say=p.say)
    return output.provisioned(done, target)


def bench(
    common: Common,
    *,
    what: str | None,
    emulate_seconds: str,
    rounds: str,
    instructions: bool,
    suite: str,
    version: str = "",
    builders: tuple[str, ...] = (),
    cached: bool = False,
) -> Outcome:
    from .speed import SUITES

    if not what:
        raise UsageError(
            "name a benchmark: build or speed", hint="invoke bench build --filter GLOB | invoke bench speed"
        )
    one_of("benchmark", what, BENCHMARKS)
    seconds = whole_number("--emulate-seconds", emulate_seconds, 0)
    n_rounds = whole_number("--rounds", rounds, 1)
    one_of("--suite", suite, tuple(SUITES))
    if what == "speed" and (builders or cached):
        raise UsageError("--builder and --cached are for `bench build`", hint="invoke bench build --builder … --cached")
    ctx = common.context()
    if what == "speed":
        engine = api.connect(common.engine)
        with progress(0) as p:
            res = api.bench_speed(
                ctx,
                engine,
                rounds=n_rounds,
                instructions=instructions,
                suite=suite,
                filters=common.choice.filters,
                version=version,
                say=p.say,
            )
        return output.bench_speed(res, ctx.ws.out)
    if builders or cached:
        return _bench_fleet(common, ctx, builders, cached)
    specs = api.select(ctx, "bench", common.choice)
    engine = api.connect(common.engine)
    with progress(len(specs)) as p:
        result = api.bench_build(ctx, engine, specs, p, emulate_seconds=seconds)
    return output.bench_built(result, ctx.ws.out)


def _bench_fleet(common: Common, ctx: api.Context, builders: tuple[str, ...], cached: bool) -> Outcome:
    """`bench build --builder … [--cached]`: one engine, then all of them (cpforge/bench.py)."""
    from .bench import fleet_lines

    if not builders:
        raise UsageError("--cached is for `bench build --builder …`", hint="add two or more --builder flags")
    for flag in builders:
        parse_builder(flag)
    specs = api.select(ctx, "bench", common.choice)
    with progress(len(specs)) as p:
        engines = api.fleet(ctx, specs, builders=builders, engine_url=common.engine, say=p.say)
        result = api.bench_fleet(ctx, engines, specs, p, cached=cached)
    return Outcome(tuple(fleet_lines(result, ctx.ws.out)))


def update(common: Common, *, check: bool, minors: tuple[str, ...], python_org_api: str) -> Outcome:
    from . import update as updates

    res = updates.update(common.context(), list(minors), check=check, python_org_api=python_org_api or None)
    error = None
    if check and res.available:
        error = UpdateAvailable("an update exists (see above); nothing was changed", hint="run `invoke update`")
    return Outcome(tuple(updates.summary(res, check=check)), error)


def outdated(common: Common, *, as_json: bool, use_lock: bool, python_org_api: str) -> Outcome:
    import json

    from . import outdated as stale

    def say(line: str) -> None:
        print(line, file=sys.stderr if as_json else sys.stdout)

    res = stale.outdated(common.context(), use_lock=use_lock, python_org_api=python_org_api or None, say=say)
    lines = [] if as_json else list(stale.table(res))
    lines.append(json.dumps(res.to_json(), indent=2, sort_keys=True))
    error = None
    if res.stale:
        error = EntriesStale(
            "some entries are stale (see above)", hint="run `invoke update`, rebuild, and `invoke lock`"
        )
    return Outcome(tuple(lines), error)
