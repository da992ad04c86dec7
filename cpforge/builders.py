"""The builders of a run: which Docker engines build which platforms, with how many jobs each.

Where they come from, first match wins:
  --builder PLATFORM=URL[,jobs=N]   (repeatable) exactly these engines;
  --engine URL                      one engine for everything, --jobs at a time;
  `builders:` in matrix.yaml        the matrix's fleet;
  neither                           DOCKER_HOST, else the local socket: one engine for everything.

An engine serves every platform it is declared for and runs at most its job limit of entries at
once, whatever their platform. An engine whose own architecture (`docker info`) is an entry's
platform builds it natively; any other builds it the matrix's way (cross-compiled on the
build-platform, or emulated). Which engine builds which entry, and what happens when one is lost:
cpforge/scheduler.py. Which engine holds an entry's images afterwards: `Holders`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import base as base_images
from . import transport
from .engine import Engine, EngineAPI
from .errors import CpforgeError, EngineError, MatrixError, UsageError
from .matrix import PLATFORM_NAMES, BuilderEngine, BuildSpec, Distro, Matrix, Platform
from .progress import fmt_seconds
from .report import EntryResult

FLAG = "--builder PLATFORM=URL[,jobs=N]"


# ------------------------------------------------------------------------------------ declaring


def parse_flag(text: str) -> BuilderEngine:
    """One `--builder PLATFORM=URL[,jobs=N]` value; UsageError (exit 64) naming what is wrong."""
    plat, sep, rest = text.partition("=")
    if not sep or not rest:
        raise UsageError(f"--builder {text!r} is not PLATFORM=URL", hint=f"e.g. {FLAG}: linux/arm64=ssh://ci@arm1")
    if plat not in PLATFORM_NAMES:
        raise UsageError(
            f"--builder {text!r}: unknown platform {plat!r}", hint=f"use one of {', '.join(PLATFORM_NAMES)}"
        )
    url, *options = rest.split(",")
    problem = transport.url_problem(url)
    if problem:
        raise UsageError(f"--builder {text!r}: {problem}", hint=f"e.g. {transport.URL_HINT}")
    jobs: int | None = None
    for opt in options:
        key, _, value = opt.partition("=")
        if key != "jobs" or not value.isdigit() or int(value) < 1:
            raise UsageError(
                f"--builder {text!r}: unknown option {opt!r}", hint="the only option is jobs=N (N at least 1)"
            )
        jobs = int(value)
    return BuilderEngine(platform=plat, url=url, jobs=jobs, where="--builder")


def declared(matrix: Matrix, flags: Sequence[str], engine_url: str) -> list[BuilderEngine]:
    """The engines a build uses ([]: one engine for everything, --engine's or the default)."""
    if flags and engine_url:
        raise UsageError(
            "--engine and --builder both name engines",
            hint="use --engine URL for one engine for everything, or --builder PLATFORM=URL (repeatable)",
        )
    if flags:
        decls = [parse_flag(f) for f in flags]
        _check_job_limits(decls)
        return decls
    if engine_url:
        return []
    return list(matrix.builders)


def _check_job_limits(decls: Sequence[BuilderEngine]) -> None:
    seen: dict[tuple[str, str], BuilderEngine] = {}
    jobs: dict[str, int] = {}
    for d in decls:
        if (d.platform, d.url) in seen:
            raise UsageError(
                f"--builder {d.platform}={d.url} is given twice", hint="give each engine once per platform"
            )
        seen[(d.platform, d.url)] = d
        if d.jobs is not None and jobs.setdefault(d.url, d.jobs) != d.jobs:
            raise UsageError(
                f"engine {d.url} has jobs {jobs[d.url]} and jobs {d.jobs}",
                hint="an engine has one job limit, however many platforms it builds: give the same number",
            )


def check_coverage(matrix: Matrix, decls: Sequence[BuilderEngine], specs: Sequence[BuildSpec]) -> None:
    """Every platform of ``specs`` has an engine; else a clear error before anything is reached."""
    if not decls:
        return
    covered = {d.platform for d in decls}
    missing = sorted({s.platform.name for s in specs} - covered)
    if not missing:
        return
    if decls[0].where == "--builder":
        raise UsageError(
            f"no --builder for {', '.join(missing)} (the --builder flags name {', '.join(sorted(covered))})",
            hint=f"add --builder {missing[0]}=URL, or choose entries with --platform",
        )
    path, _, line = decls[0].where.rpartition(":")
    raise MatrixError(
        f"`builders:` has no engine for {', '.join(missing)}, which the selected entries need",
        path=path,
        line=int(line) if line.isdigit() else None,
        hint=f"add `{missing[0]}: [{{url: …}}]` under `builders:`, pass {FLAG}, or choose entries with --platform",
    )


# ------------------------------------------------------------------------------------ the fleet


@dataclass(eq=False)
class Worker:
    """One engine of a run and its state (changed only by the scheduler's thread)."""

    url: str
    platforms: frozenset[str] | None  # None: every platform (one engine for everything)
    jobs: int
    where: str = ""
    engine: EngineAPI | None = None  # None: it could not be reached at the start
    lost: str = ""  # why it left the run; "" while it is in
    running: int = 0
    freed_at: float = 0.0  # when one of its job slots last came free (for the scheduling overhead)
    misses: int = 0  # pings in a row it did not answer

    @property
    def live(self) -> bool:
        return self.engine is not None and not self.lost

    def serves(self, platform: str) -> bool:
        return self.platforms is None or platform in self.platforms

    def describe(self) -> str:
        plats = ", ".join(sorted(self.platforms)) if self.platforms is not None else "every platform"
        arch = f", {self.engine.arch}" if self.engine is not None and not self.lost else ""
        state = f" — OUT: {self.lost}" if self.lost else ""
        return f"{self.url} ({plats}{arch}, jobs {self.jobs}){state}"


class Fleet:
    """The engines of one run, in the order they were declared (which is the order they are filled)."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)

    @classmethod
    def single(cls, engine: EngineAPI, jobs: int = 1) -> Fleet:
        """One engine for everything (--engine, or the default)."""
        url = getattr(engine, "url", "")  # (a test's minimal fake may have none)
        return cls([Worker(url=url, platforms=None, jobs=max(1, jobs), engine=engine)])

    @classmethod
    def connect(
        cls,
        decls: Sequence[BuilderEngine],
        *,
        default_jobs: int = 1,
        keep_going: bool = False,
        say: Callable[[str], None] = print,
        connect: Callable[[str], EngineAPI] = Engine.connect,
    ) -> Fleet:
        """Reach every declared engine (in parallel) and learn its architecture. One that cannot be
        reached is an EngineError (exit 5) naming it; with ``keep_going`` it is left out instead."""
        workers: dict[str, Worker] = {}
        for d in decls:
            w = workers.setdefault(d.url, Worker(url=d.url, platforms=frozenset(), jobs=0, where=d.where))
            w.platforms = (w.platforms or frozenset()) | {d.platform}
            w.jobs = w.jobs or (d.jobs or 0)
        for w in workers.values():
            w.jobs = w.jobs or max(1, default_jobs)

        def reach(w: Worker) -> CpforgeError | None:
            try:
                engine = connect(w.url)
                _ = engine.arch  # `docker info`: native or not, per platform
            except CpforgeError as exc:
                return exc
            w.engine = engine
            return None

        with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
            problems = dict(zip(workers.values(), pool.map(reach, workers.values()), strict=True))
        for w, exc in problems.items():
            if exc is None:
                continue
            plats = ", ".join(sorted(w.platforms or ()))
            if not keep_going:
                raise EngineError(
                    f"builder {w.url} ({plats}; declared at {w.where}) cannot be reached: {exc.message}",
                    hint=f"{exc.hint + '; ' if exc.hint else ''}or add --keep-going to build on the other engines",
                )
            w.lost = f"unreachable at the start ({exc.message.splitlines()[0]})"
            say(f"! builder {w.url} ({plats}) cannot be reached; building without it (--keep-going): {exc.message}")
        return cls(list(workers.values()))

    @property
    def several(self) -> bool:
        return len(self.workers) > 1

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.live]

    def serving(self, platform: str) -> list[Worker]:
        return [w for w in self.workers if w.live and w.serves(platform)]

    def cancel(self) -> None:
        for w in self.workers:
            if w.engine is not None:
                w.engine.cancel()

    def describe(self) -> list[str]:
        return [f"  engine {w.describe()}" for w in self.workers]

    def gone_for(self, platform: str) -> str:
        """Why no engine for ``platform`` is left, for messages."""
        out = [f"{w.url}: {w.lost}" for w in self.workers if w.serves(platform) and w.lost]
        return "; ".join(out) or "none was declared"


# ------------------------------------------------------------------------------------ base images


def ensure_bases(
    fleet: Fleet,
    needs: dict[Worker, set[tuple[Distro, Platform]]],
    workdir: Path,
    say: Callable[[str], None],
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Make each worker's base images exist: copied from another engine of the fleet that has the
    same image (so every engine builds FROM the very same base, and `--locked` holds on each), else
    pulled or bootstrapped there (cpforge/base.py; ``stopped`` ends a bootstrap under way)."""
    for w, pairs in needs.items():
        assert w.engine is not None
        for distro, plat in sorted(pairs, key=lambda p: (p[0].name, p[1].name)):
            ref = distro.base_image(plat)
            if w.engine.image_id(ref) is None:
                _copy_from_peer(fleet, w, ref, say)
            res = base_images.ensure(w.engine, distro, plat, workdir, say, stopped=stopped)
            if res.how != "present":
                where = f" on {w.url}" if fleet.several else ""
                say(f"✓ base {res.ref} {res.how}{where} in {fmt_seconds(res.seconds)}")


class LateBases:
    """Base images that only runtime stages use (a cross entry's target platform, whose bootstrap runs
    dpkg under QEMU for minutes on one core), made one after another in a background thread while the
    builds compile. An entry waits for its own before its runtime stage and gets its error, if any;
    `close` stops a bootstrap no entry is left to wait for, and waits until it has cleaned up."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpforge-base")
        self._futures: dict[tuple[int, str], Future[None]] = {}
        self._stop = threading.Event()

    def start(
        self, fleet: Fleet, needs: dict[Worker, set[tuple[Distro, Platform]]], workdir: Path, say: Callable[[str], None]
    ) -> None:
        for w, pairs in needs.items():
            assert w.engine is not None
            for distro, plat in sorted(pairs, key=lambda p: (p[0].name, p[1].name)):
                one = {w: {(distro, plat)}}
                job = self._pool.submit(ensure_bases, fleet, one, workdir, say, self._stop.is_set)
                self._futures[(id(w.engine), distro.base_image(plat))] = job

    def wait(self, engine: EngineAPI, ref: str) -> None:
        """Return once ``ref`` exists on ``engine`` (at once if it was never late); raise its error."""
        job = self._futures.get((id(engine), ref))
        if job is not None:
            job.result()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _copy_from_peer(fleet: Fleet, to: Worker, ref: str, say: Callable[[str], None]) -> bool:
    assert to.engine is not None
    for peer in fleet.live():
        if peer is to or peer.engine is None or peer.engine.image_id(ref) is None:
            continue
        t0 = time.monotonic()
        to.engine.load(peer.engine.save(ref))
        if to.engine.image_id(ref) is not None:
            say(f"✓ base {ref} copied from {peer.url} to {to.url} in {fmt_seconds(time.monotonic() - t0)}")
            return True
    return False


# ------------------------------------------------------------------------------------ afterwards


class Holders:
    """The engine that holds an entry's images, for smoke, lock, verify, publish and provision.

    That is the engine its build recorded (the report's `engine`), reached again by its URL; for an
    entry recorded without one (reports from before engines were recorded), the default engine. With
    ``override`` (an explicit --engine), the default engine holds everything."""

    def __init__(
        self,
        default: Engine | None = None,
        *,
        url: str = "",
        override: bool = False,
        connect: Callable[[str | None], Engine] = Engine.connect,
    ) -> None:
        self._default = default
        self._given_url = url
        self.override = override
        self._connect = connect
        self._engines: dict[str, Engine] = {}

    @property
    def url(self) -> str:
        """The default engine's URL."""
        return self._default.url if self._default is not None else (self._given_url or transport.default_url())

    @classmethod
    def wrap(cls, engine: Engine | Holders) -> Holders:
        return engine if isinstance(engine, Holders) else cls(engine)

    def default(self) -> Engine:
        if self._default is None:
            self._default = self._connect(self._given_url or None)
        return self._default

    def of(self, res: EntryResult | None) -> Engine:
        """The engine holding ``res``'s images (see the class docstring)."""
        if self.override or res is None or not res.engine or res.engine == self.url:
            return self.default()
        if res.engine not in self._engines:
            try:
                self._engines[res.engine] = self._connect(res.engine)
            except EngineError as exc:
                raise EngineError(
                    f"{res.key} was built on {res.engine}, which holds its images, but it cannot be reached: "
                    f"{exc.message}",
                    hint="start that engine; or, if its images are now on another engine, pass --engine URL",
                ) from None
        return self._engines[res.engine]

    def engines(self) -> Iterable[Engine]:
        """Every engine reached so far."""
        if self._default is not None:
            yield self._default
        yield from self._engines.values()
