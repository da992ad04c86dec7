"""cpforge's command line: thin Invoke tasks. Flags → cpforge.api → printed results."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit
from invoke.tasks import task

from cpforge import api
from cpforge.build import BuildOptions
from cpforge.engine import Engine
from cpforge.errors import CpforgeError
from cpforge.matrix import spec_json
from cpforge.progress import Progress, fmt_seconds

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
        results = api.build(ctx, eng, specs, BuildOptions(jobs=jobs, keep_going=keep_going, nocache=no_cache), progress)
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
    c.run("ruff check cpforge tasks.py tests scripts", pty=False)
    c.run("mypy cpforge tasks.py", pty=False)
    c.run("hadolint dockerfiles/*/Dockerfile.*", pty=False)


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
