"""`bench speed`: how fast and how small the built interpreters are, next to Debian's own build.

One run on this machine, in containers on the same engine, reported as ratios (never a test). It
measures one release of the matrix (`--version`/`--filter`; by default the default entry's): its
trixie amd64 builds against Debian's own `pythonX.Y` of the same upstream release (REFERENCES):
  1. interpreter speed: a pyperformance subset (SUITES: `core` by default, or `held-out`, the check
     that nothing was tuned to `core`) through pyperf (`--fast`) on our `release` build, our
     `quick` build (a floor) and Debian's build; geometric-mean time ratio ours/Debian. Benchmarks
     run interleaved (each one on every interpreter back to back), each container pinned to one
     CPU, for a few rounds; each keeps its fastest pyperf worker process (the mean of that
     process's values) over all rounds;
  2. free-threading: a CPU-bound pure-Python workload on 1 and N threads (N = cores) on the default
     and free-threaded builds; speedups and the free-threaded single-thread overhead;
  3. JIT: the same subset on the JIT build with PYTHON_JIT=1 and PYTHON_JIT=0;
  4. image size: each runtime image, Debian's image and the bases, uncompressed.
Results: build/bench/speed.json, speed.md and speed.html (a bar chart a person can read at a glance);
speed-held-out.* for the held-out suite.
"""

from __future__ import annotations

import fnmatch
import hashlib
import html
import json
import math
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import base as base_images
from .engine import Engine, context_tar, short_ref
from .errors import BenchError as BenchError
from .fsutil import atomic_path, atomic_write_text
from .matrix import Distro, Matrix, Platform
from .report import Report

PYPERF = ("pyperf", "2.11.0")
PYPERFORMANCE = ("pyperformance", "1.14.0")
# Pure-Python pyperformance benchmarks with no third-party dependencies. `core` (float, integer,
# string, regex, JSON, object-model and generator work) is what `bench speed` reports by default.
# `held-out` is every other such benchmark in pyperformance 1.14 (crypto_pyaes needs `pyaes`): a
# build tuned to `core`, by its flags or by choosing among PGO trainings, shows itself there.
SUITES: dict[str, tuple[str, ...]] = {
    "core": (
        "nbody",
        "float",
        "spectral_norm",
        "richards",
        "deltablue",
        "go",
        "raytrace",
        "generators",
        "deepcopy",
        "json_dumps",
        "json_loads",
        "regex_v8",
    ),
    "held-out": (
        "chaos",
        "comprehensions",
        "coroutines",
        "fannkuch",
        "hexiom",
        "logging",
        "nqueens",
        "pprint",
        "pyflate",
        "scimark",
        "unpack_sequence",
    ),
}
SUITE_TIMEOUT = 1800
# The interpreters whose instructions `bench speed` counts (the JIT's would need its own baseline).
COUNTED = ("debian", "ours-release", "ours-quick")


@dataclass
class SpeedResult:
    images: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> image, profile, size
    suites: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> benchmark -> fastest process s
    runs: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # label -> benchmark -> each round's mean
    processes: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # label -> benchmark -> each process
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    spread: dict[str, list[float]] = field(default_factory=dict)  # ratio name -> [lowest, highest] round
    sizes: dict[str, int] = field(default_factory=dict)
    # label -> benchmark script -> instructions per loop (cachegrind): a count, so no noise from the host
    instructions: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    suite: str = "core"  # the name of the benchmark suite timed (a key of SUITES)
    release: str = ""  # the matrix release measured, e.g. 3.14.7
    reference: dict[str, str] = field(default_factory=dict)  # Debian's build: ReferenceImage's fields

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def fmt_time(seconds: float) -> str:
    """Three significant digits in a unit that suits the value: 84.8 ms, 2.53 ms, 18.4 µs."""
    if seconds != seconds:  # NaN: no result
        return "—"
    units = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6))
    unit, scale = next(((u, sc) for u, sc in units if seconds >= sc), ("ns", 1e-9))
    return f"{seconds / scale:.3g} {unit}"


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def ratio(result: SpeedResult, a: str, b: str) -> tuple[float, dict[str, float]] | None:
    """Geometric mean over the benchmarks both ran of time(a)/time(b), and the per-benchmark ratios."""
    sa, sb = result.suites.get(a, {}), result.suites.get(b, {})
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    per = {n: sa[n] / sb[n] for n in common}
    return geomean(list(per.values())), per


def round_ratios(result: SpeedResult, a: str, b: str) -> list[float]:
    """The geometric-mean ratio time(a)/time(b) of each round on its own. Round r of a benchmark ran
    on a and b back to back, so the rounds pair up; benchmarks whose run counts differ (a run
    failed) are left out. How far these spread is the noise the headline ratio carries."""
    ra, rb = result.runs.get(a, {}), result.runs.get(b, {})
    common = sorted(n for n in set(ra) & set(rb) if len(ra[n]) == len(rb[n]))
    rounds = min((len(ra[n]) for n in common), default=0)
    return [geomean([ra[n][r] / rb[n][r] for n in common]) for r in range(rounds)]


# ------------------------------------------------------------------------------------ payload


def _wheel(cache: Path, name: str, version: str) -> Path:
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(cache)]
    proc = subprocess.run([*cmd, f"{name}=={version}"], capture_output=True, text=True, check=False)
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        raise BenchError(
            f"cannot download {name}=={version} from PyPI: {proc.stderr.strip()[-300:]}",
            hint=f"check network access to PyPI, or put the wheel into {cache}",
        )
    return found[0]


def payload(cache: Path, driver: Path, suite: tuple[str, ...] = SUITES["core"]) -> dict[str, bytes]:
    """/bench/driver.py, pyperf under /bench/lib, and the benchmark directories of ``suite``."""
    files = {"bench/driver.py": driver.read_bytes()}
    with zipfile.ZipFile(_wheel(cache, *PYPERF)) as z:
        for n in z.namelist():
            if n.startswith("pyperf/") and not n.endswith("/"):
                files[f"bench/lib/{n}"] = z.read(n)
    prefix = "pyperformance/data-files/benchmarks/"
    with zipfile.ZipFile(_wheel(cache, *PYPERFORMANCE)) as z:
        for n in z.namelist():
            rest = n[len(prefix) :] if n.startswith(prefix) else ""
            if rest.split("/", 1)[0] in {f"bm_{b}" for b in suite} and not n.endswith("/"):
                files[f"bench/benchmarks/{rest}"] = z.read(n)
    missing = [b for b in suite if f"bench/benchmarks/bm_{b}/run_benchmark.py" not in files]
    if missing:
        raise BenchError(f"pyperformance {PYPERFORMANCE[1]} lacks the benchmarks {missing}")
    return files


# --------------------------------------------------------------------------------- reference

BENCH_ARCH = "amd64"  # bench speed measures amd64 builds (the Debian .debs in REFERENCES are amd64's)
DOWNLOAD_TIMEOUT = 60


@dataclass(frozen=True, kw_only=True)
class DebianReference:
    """Debian's own build of one release: the yardstick `bench speed` measures ours against.

    With no ``debs``, the ``suite``'s own `pythonX.Y` package, installed with apt on that suite's
    base. With ``debs``, those packages of Debian version ``version``, fetched from the mirror's pool
    (pool/main/p/pythonX.Y/) and refused unless each matches its sha256, installed with apt on the
    ``suite``'s base, which supplies the rest of their dependencies."""

    minor: str  # 3.14
    suite: str  # the Debian suite of the base it installs on
    version: str = ""  # the Debian version of ``debs``, e.g. 3.14.7-3
    debs: tuple[tuple[str, str], ...] = ()  # (package, sha256) of amd64 .debs in the pool

    @property
    def exe(self) -> str:
        return f"python{self.minor}"

    @property
    def upstream(self) -> str:
        """The upstream release of ``version`` (epoch and Debian revision dropped): 3.14.7-3 → 3.14.7."""
        return self.version.split(":", 1)[-1].rsplit("-", 1)[0]

    def filename(self, package: str) -> str:
        return f"{package}_{self.version.split(':', 1)[-1]}_{BENCH_ARCH}.deb"

    def url(self, mirror: str, package: str) -> str:
        return f"{mirror.rstrip('/')}/pool/main/p/python{self.minor}/{self.filename(package)}"


# Debian's build of each release, one entry per release: the next release is one entry changed.
#   3.14: Debian's python3.14 3.14.7-3 is in the Debian pool but in no suite: trixie has only
#         python3.13, and sid and forky moved on to later releases (3.14.10-1, 3.14.8-1), so no
#         signed Packages index lists 3.14.7-3 any more. Its sha256s are pinned here as the pool
#         served them (2026-11-29; each file's control fields named that package, 3.14.7-3, amd64),
#         and the installed image is checked to have dpkg's 3.14.7-3 and Python 3.14.7. Its
#         libpython3.14-stdlib needs libc6 >= 2.42 and trixie has 2.41, so it installs on a forky
#         base (glibc 2.43), whose apt supplies the rest of its dependencies.
#   3.13: trixie's own python3.13 from apt (3.13.5-2+deb13u5 today), on the trixie base our builds use.
REFERENCES: dict[str, DebianReference] = {
    "3.14": DebianReference(
        minor="3.14",
        suite="forky",
        version="3.14.7-3",
        debs=(
            ("libpython3.14-minimal", "b489df1c70674ac474a717873750030766a305823203a45ac9926858aedfa705"),
            ("libpython3.14-stdlib", "7ef6bcc0978be0b8201f473cc99414968de0a89010543289da03d3cc542d6d36"),
            ("python3.14-minimal", "dd32a759888c5d856d88fa0bdebdaaaa838f3e47004af25e60b28379528aa26a"),
            ("python3.14", "e343cd8814fb06bd188ffd3e04e0f56ee35477d3dfb7e49ff4fa67f759c824b8"),
        ),
    ),
    "3.13": DebianReference(minor="3.13", suite="trixie"),
}


@dataclass(frozen=True, kw_only=True)
class ReferenceImage:
    """Debian's build as it was installed, and what the installed interpreter says about itself."""

    image: str
    exe: str
    base: str  # the base image it was installed on
    suite: str
    debian_version: str  # dpkg's version of pythonX.Y in the image, e.g. 3.14.7-3
    python_version: str  # platform.python_version(), e.g. 3.14.7
    libc: str  # e.g. glibc 2.43
    origin: str  # where its packages came from

    def describe(self) -> str:
        return f"Debian's {self.exe} {self.debian_version} ({self.origin}) installed on {self.base} ({self.libc})"


def apt_image(engine: Engine, ref: str, base: str, packages: str, log: Path) -> str:
    """``base`` plus Debian ``packages`` (no recommends), built on the engine and tagged ``ref``.
    apt's package cache and lists are removed: they are not part of the installed packages' size."""
    dockerfile = (
        f"FROM {base}\n"
        f"RUN apt-get update && apt-get install -y --no-install-recommends {packages} "
        "&& apt-get clean && rm -rf /var/lib/apt/lists/*\n"
    ).encode()
    with log.open("w") as out:
        return engine.build(context_tar({"Dockerfile": dockerfile}), tag=ref, log=out)


def fetch_debs(ref: DebianReference, mirror: str, cache: Path, say: Callable[[str], None]) -> dict[str, Path]:
    """Each of ``ref.debs`` from the mirror's pool into ``cache`` (file name → path), each refused
    unless its sha256 matches; a cached copy is checked the same way before it is reused."""
    got: dict[str, Path] = {}
    for package, sha256 in ref.debs:
        name = ref.filename(package)
        path = cache / name
        if path.exists() and _sha256(path) == sha256:
            got[name] = path
            continue
        url = ref.url(mirror, package)
        say(f"… fetching {url}")
        with atomic_path(path) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, tmp.open("wb") as out:  # noqa: S310
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise BenchError(
                    f"cannot download Debian's {package} {ref.version} from {url}: {getattr(exc, 'reason', exc)}",
                    hint=f"check access to {mirror}, or put {name} (sha256 {sha256}) into {cache}",
                ) from None
            digest = _sha256(tmp)
            if digest != sha256:
                raise BenchError(
                    f"{url} has sha256 {digest}, not the {sha256} pinned for Debian's {package} "
                    f"{ref.version} in cpforge/speed.py (REFERENCES): refused",
                    hint="a different file under the same name is not the build the figures were measured "
                    "against; if Debian really rebuilt it, pin the new sha256 from the suite's Packages index",
                )
        got[name] = path
    return got


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pool_dockerfile(base: str) -> bytes:
    """Installs the .debs under debs/ with apt on ``base`` (apt brings their dependencies from the
    base's suite), then copies the result into one layer: the .debs and apt's caches stay behind,
    so the image's size is the base's plus what was installed."""
    return (
        f"FROM {base} AS install\n"
        "COPY debs/ /tmp/cpforge-debs/\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends /tmp/cpforge-debs/*.deb "
        "&& apt-get clean && rm -rf /tmp/cpforge-debs /var/lib/apt/lists/*\n"
        "FROM scratch\n"
        "COPY --from=install / /\n"
        'CMD ["bash"]\n'
    ).encode()


def reference_distro(ref: DebianReference, ours: Distro, matrix: Matrix) -> Distro:
    """The distro whose base ``ref`` installs on: the matrix's own when it has that suite, else one
    bootstrapped from our distro's mirror. Testing and unstable Release files are valid for a week
    only; apt still checks their signatures, but not that date, so a mirror snapshot (an offline or
    pinned mirror) older than a week still serves them."""
    if ours.suite == ref.suite:
        return ours
    found = next((d for d in matrix.distros if d.suite == ref.suite), None)
    if found is not None:
        return found
    return Distro(name=ref.suite, suite=ref.suite, mirror=f"deb [check-valid-until=no] {ours.mirror} {ref.suite} main")


PROBE = """
import json, platform, subprocess, sys
dpkg = ""
if len(sys.argv) > 1:
    cmd = ["dpkg-query", "-W", "-f=${Version}", sys.argv[1]]
    dpkg = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
lib, ver = platform.libc_ver()
print(json.dumps({"python": platform.python_version(), "dpkg": dpkg, "libc": f"{lib} {ver}".strip()}))
"""


def probe(engine: Engine, image: str, exe: str, package: str = "") -> dict[str, str]:
    """What the interpreter ``exe`` in ``image`` says: its version, its C library, and (given a
    ``package``) dpkg's version of it, empty when dpkg has no such package."""
    out = engine.run(image, [exe, "-c", PROBE, *([package] if package else [])], timeout=120)
    if out.exit_code != 0:
        raise BenchError(f"{exe} does not run in {short_ref(image)} (exit {out.exit_code}): {out.stderr[-800:]}")
    return {k: str(v) for k, v in json.loads(out.stdout).items()}


def reference_image(
    engine: Engine, matrix: Matrix, sel: Selection, out: Path, say: Callable[[str], None] = print
) -> ReferenceImage:
    """Debian's build of the selected release, installed on its base (bootstrapped when missing),
    refused unless it is the same upstream release as ours."""
    ref = sel.reference
    distro = reference_distro(ref, sel.distro, matrix)
    bench_dir = out / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    base = base_images.ensure(engine, distro, sel.platform, bench_dir, say).ref
    tag = f"cpforge-bench/debian-{ref.exe}:latest"
    log = bench_dir / f"debian-{ref.exe}.log"
    if ref.debs:
        debs = fetch_debs(ref, sel.distro.mirror, out / "cache" / "debs", say)
        say(f"… building the reference image: Debian's {ref.exe} {ref.version} (pool .debs) on {base}")
        files: dict[str, bytes | Path] = {"Dockerfile": pool_dockerfile(base)}
        files.update({f"debs/{name}": path for name, path in debs.items()})
        with log.open("w") as lf:
            image = engine.build(context_tar(files), tag=tag, log=lf)
        origin = f"{', '.join(p for p, _ in ref.debs)} from the Debian pool, sha256-pinned; the rest from {ref.suite}"
    else:
        say(f"… building the reference image: Debian {ref.suite}'s {ref.exe} on {base}")
        image = apt_image(engine, tag, base, ref.exe, log)
        origin = f"{ref.suite}'s apt"
    facts = probe(engine, image, ref.exe, ref.exe)
    got = ReferenceImage(
        image=image,
        exe=ref.exe,
        base=base,
        suite=ref.suite,
        debian_version=facts["dpkg"],
        python_version=facts["python"],
        libc=facts["libc"],
        origin=origin,
    )
    check_reference(got, ref, sel.version)
    return got


def check_reference(got: ReferenceImage, ref: DebianReference, version: str) -> None:
    """Refuse a reference that is not the release we measure, or not the Debian version pinned."""
    if ref.version and got.debian_version != ref.version:
        raise BenchError(
            f"the reference image {short_ref(got.image)} has Debian's {ref.exe} {got.debian_version or '(none)'}"
            f" installed, not the pinned {ref.version}",
            hint=f"see the build log under build/bench/debian-{ref.exe}.log",
        )
    if got.python_version != version:
        raise BenchError(
            f"Debian's {ref.exe} {got.debian_version} on {got.base} is Python {got.python_version}, not {version}: "
            "comparing two different releases would measure the release, not the build",
            hint=f"point REFERENCES[{ref.minor!r}] in cpforge/speed.py at Debian's packages of {version} "
            "(a suite whose apt has it, or its pool .debs with their sha256s)",
        )


# --------------------------------------------------------------------------------- selection

# Which of our builds are measured: label, variant, the profiles tried in order.
BUILDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("ours-release", "default", ("release",)),
    ("ours-quick", "default", ("quick",)),
    ("jit", "jit", ("release", "quick")),
    ("freethreaded", "freethreaded", ("release", "quick")),
)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """The release `bench speed` measures, which of its entries, and Debian's build to compare with."""

    version: str  # 3.14.7
    minor: str
    distro: Distro
    platform: Platform
    variants: tuple[str, ...]  # those of BUILDS' variants that are measured
    reference: DebianReference

    def entry(self, variant: str) -> str:
        return f"{self.minor}-{variant}-{self.distro.name}-{self.platform.arch}"


def minor_of(version: str) -> str:
    return ".".join(version.split(".")[:2])


def select_release(matrix: Matrix, filters: Sequence[str] = (), version: str = "") -> Selection:
    """The release named by ``version`` (3.14.7, or 3.14) and/or whose entries ``filters`` match;
    by default the default entry's. Its entries on the default entry's distro for amd64 are
    measured (with filters, those they match). Refuses before any work is done."""
    specs = matrix.expand()
    default = next(s for s in specs if s.id == matrix.default_entry)
    distro = default.distro
    plat = next((p for p in matrix.platforms if p.arch == BENCH_ARCH), None)
    if plat is None:
        raise BenchError(f"{matrix.path} has no linux/{BENCH_ARCH} platform: bench speed measures amd64 builds")
    ours = [s for s in specs if s.distro == distro and s.platform == plat]
    known = ", ".join(v.version for v in matrix.versions)
    asked = " ".join(([f"--version {version}"] if version else []) + [f"--filter {f}" for f in filters])
    if version:
        ours = [s for s in ours if version in (s.version, s.minor)]
        if not ours:
            raise BenchError(f"no release {version!r} in {matrix.path}", hint=f"choose one of: {known} (--version)")
    if filters:
        ours = [s for s in ours if any(fnmatch.fnmatchcase(s.id, p) for p in filters)]
        if not ours:
            raise BenchError(
                f"no {distro.name} {BENCH_ARCH} entry matches {asked}",
                hint=f"bench speed measures {distro.name} {BENCH_ARCH} builds, e.g. --filter '{default.minor}-*'",
            )
    if not version and not filters:
        ours = [s for s in ours if s.version == default.version]
    releases = sorted({s.version for s in ours}, key=lambda v: tuple(int(x) for x in re.findall(r"\d+", v)))
    if len(releases) > 1:
        raise BenchError(
            f"{asked} matches entries of {' and '.join(releases)}: bench speed measures one release",
            hint=f"add --version {releases[-1]}, or narrow the filter, e.g. '{minor_of(releases[-1])}-*'",
        )
    chosen = next(v for v in matrix.versions if v.version == releases[0])
    entry = f"{chosen.minor}-{{}}-{distro.name}-{plat.arch}"
    measured = tuple(dict.fromkeys(v for _, v, _ in BUILDS if entry.format(v) in {s.id for s in ours}))
    if "default" not in measured:
        raise BenchError(
            f"{asked} leaves out {entry.format('default')}: every ratio is measured against it",
            hint=f"include it, e.g. --filter '{chosen.minor}-*'",
        )
    ref = REFERENCES.get(chosen.minor)
    if ref is None:
        raise BenchError(
            f"no Debian reference for Python {chosen.minor} in cpforge/speed.py (REFERENCES)",
            hint=f"add Debian's python{chosen.minor} of release {chosen.version} there: a suite whose apt has it, "
            "or its pool .debs with their sha256s",
        )
    if ref.version and ref.upstream != chosen.version:
        raise BenchError(
            f"Debian's python{ref.minor} {ref.version} (REFERENCES in cpforge/speed.py) is release "
            f"{ref.upstream}, not the matrix's {chosen.version}: the comparison would measure the release",
            hint=f"pin Debian's packages of {chosen.version} there (version and sha256s), or build {ref.upstream}",
        )
    return Selection(
        version=chosen.version, minor=chosen.minor, distro=distro, platform=plat, variants=measured, reference=ref
    )


# --------------------------------------------------------------------------------------- runs


def run_suite(
    engine: Engine, image: str, exe: str, files: dict[str, bytes], env: dict[str, str], names: tuple[str, ...], cpu: str
) -> dict[str, Any]:
    out = engine.run(
        image,
        [exe, "/bench/driver.py", "suite", *names],
        files=files,
        environment=env,
        timeout=SUITE_TIMEOUT,
        cpuset=cpu,
    )
    if out.exit_code != 0:
        raise BenchError(
            f"the benchmark suite failed in {short_ref(image)} (exit {out.exit_code}): {out.stderr[-800:]}"
        )
    return dict(json.loads(out.stdout))


@dataclass(frozen=True)
class Contender:
    label: str
    image: str
    exe: str
    env: tuple[tuple[str, str], ...] = ()


def interleaved(
    engine: Engine,
    contenders: list[Contender],
    files: dict[str, bytes],
    res: SpeedResult,
    rounds: int,
    cpu: str,
    say: Callable[[str], None],
    suite: tuple[str, ...] = SUITES["core"],
) -> None:
    """Each benchmark of ``suite`` on every contender back to back, ``rounds`` times, each container
    pinned to CPU ``cpu``: drift in the machine (other tenants, clocks) then hits every contender alike.

    A benchmark's time is its fastest pyperf worker process over all rounds (each process's mean
    of its values): a neighbour that disturbs part of a round slows some processes, not all, and
    the minimum draws on every process instead of two or three round means (the README gives the
    runs that compared the two). The round means still give each round's own ratio."""
    for name in suite:
        timed: dict[str, None] = {}  # what the script reported (logging: logging_format, …), in order
        for _ in range(rounds):
            for c in contenders:
                raw = run_suite(engine, c.image, c.exe, files, dict(c.env), (name,), cpu)
                for bench, v in raw.items():
                    timed[bench] = None
                    if "error" in v:
                        res.errors.setdefault(c.label, {})[bench] = str(v["error"])
                        continue
                    res.runs.setdefault(c.label, {}).setdefault(bench, []).append(float(v["mean"]))
                    procs = res.processes.setdefault(c.label, {}).setdefault(bench, [])
                    procs += [float(x) for x in v.get("processes") or [v["mean"]]]
                    res.suites.setdefault(c.label, {})[bench] = min(procs)
        for bench in timed or (name,):
            line = "  ".join(
                f"{c.label} {fmt_time(res.suites.get(c.label, {}).get(bench, float('nan')))}" for c in contenders
            )
            say(f"  {bench} (fastest process of {rounds} round(s)): {line}")


def valgrind_image(engine: Engine, label: str, image: str, logdir: Path) -> str:
    """``image`` plus Debian's valgrind, for instruction counts: the interpreter's files untouched.
    (No recommends: valgrind's would pull in gdb and with it Debian's own python3.)"""
    return apt_image(
        engine, f"cpforge-bench/valgrind-{label}:latest", image, "valgrind", logdir / f"valgrind-{label}.log"
    )


def count_instructions(
    engine: Engine,
    contenders: list[Contender],
    files: dict[str, bytes],
    res: SpeedResult,
    logdir: Path,
    say: Callable[[str], None],
    suite: tuple[str, ...] = SUITES["core"],
) -> None:
    """Instructions per loop of each benchmark script of ``suite`` on each contender, under cachegrind: the
    contenders side by side, up to one per CPU (a count does not care who else runs)."""

    def one(c: Contender) -> None:
        image = valgrind_image(engine, c.label, c.image, logdir)
        env = {**dict(c.env), "PYTHONHASHSEED": "0"}
        out = engine.run(
            image,
            [c.exe, "/bench/driver.py", "instructions", *suite],
            files=files,
            environment=env,
            timeout=SUITE_TIMEOUT,
        )
        if out.exit_code != 0:
            raise BenchError(f"cachegrind failed in {short_ref(image)} (exit {out.exit_code}): {out.stderr[-800:]}")
        for name, v in json.loads(out.stdout).items():
            if "error" in v:
                res.errors.setdefault(f"{c.label} (instructions)", {})[name] = str(v["error"])
            else:
                res.instructions.setdefault(c.label, {})[name] = float(v["per_loop"])
        say(f"  instructions counted: {c.label}")

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        for fut in [pool.submit(one, c) for c in contenders]:
            fut.result()


def instruction_ratio(res: SpeedResult, a: str, b: str) -> float | None:
    """Geometric mean over the benchmark scripts both counted of a's instructions per loop / b's."""
    ia, ib = res.instructions.get(a, {}), res.instructions.get(b, {})
    common = [n for n in ia if n in ib and ib[n] > 0]
    return geomean([ia[n] / ib[n] for n in common]) if common else None


def run_threads(engine: Engine, image: str, files: dict[str, bytes], n: int) -> dict[str, Any]:
    out = engine.run(image, ["python3", "/bench/driver.py", "threads", str(n)], files=files, timeout=SUITE_TIMEOUT)
    if out.exit_code != 0:
        raise BenchError(f"the threads workload failed in {short_ref(image)}: {out.stderr[-800:]}")
    return dict(json.loads(out.stdout))


def pick(report: Report, entry: str, profiles: tuple[str, ...], version: str) -> tuple[str, str] | None:
    """The first profile of ``profiles`` whose build of ``entry`` from release ``version`` passed:
    (key, image id). A build of another release of the same minor (the matrix moved on) is not it."""
    for prof in profiles:
        res = report.entries.get(f"{entry}@{prof}")
        if res is not None and res.passed and res.image_id and res.version == version:
            return res.key, res.image_id
    return None


def choose_builds(report: Report, sel: Selection) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Our passed builds of the selected release: label → (report key, image id), and a note for
    each one measured without (skipped). Refuses when no default build passed."""
    chosen: dict[str, tuple[str, str]] = {}
    notes: list[str] = []
    for label, variant, profiles in BUILDS:
        if variant not in sel.variants:
            continue
        got = pick(report, sel.entry(variant), profiles, sel.version)
        if got is None:
            notes.append(
                f"{label}: no passed {sel.version} build of {sel.entry(variant)} ({'/'.join(profiles)}); skipped"
            )
            continue
        chosen[label] = got
    if "ours-release" not in chosen and "ours-quick" not in chosen:
        entry = sel.entry("default")
        raise BenchError(
            f"no passed {sel.version} build of {entry} in the report",
            hint=f"invoke build --filter '{entry}' --profile release (and --profile quick)",
        )
    # The free-threading comparison uses a default build of the free-threaded build's profile.
    if "freethreaded" in chosen:
        prof = chosen["freethreaded"][0].rsplit("@", 1)[1]
        got = pick(report, sel.entry("default"), (prof,), sel.version)
        if got is not None:
            chosen["gil-" + prof] = got
    return chosen, notes


def contenders_for(ref: ReferenceImage, chosen: dict[str, tuple[str, str]]) -> list[Contender]:
    """Debian's build, ours, and the JIT build with its JIT on and off: the timed interpreters."""
    contenders = [Contender("debian", ref.image, ref.exe)]
    contenders += [Contender(lb, chosen[lb][1], "python3") for lb in ("ours-release", "ours-quick") if lb in chosen]
    if "jit" in chosen:
        contenders.append(Contender("jit-on", chosen["jit"][1], "python3", (("PYTHON_JIT", "1"),)))
        contenders.append(Contender("jit-off", chosen["jit"][1], "python3", (("PYTHON_JIT", "0"),)))
    return contenders


def speed(
    engine: Engine,
    matrix: Matrix,
    report: Report,
    out: Path,
    scripts: Path,
    filters: Sequence[str] = (),
    version: str = "",
    rounds: int = 2,
    say: Callable[[str], None] = print,
    instructions: bool = True,
    suite: str = "core",
) -> SpeedResult:
    """Measure one release's builds (select_release) against Debian's; write build/bench/<stem>.*."""
    if suite not in SUITES:
        raise BenchError(
            f"no benchmark suite named {suite!r}",
            hint=f"choose one of: {', '.join(SUITES)} (--suite)",
        )
    names = SUITES[suite]
    sel = select_release(matrix, filters, version)
    chosen, notes = choose_builds(report, sel)
    res = SpeedResult(suite=suite, release=sel.version, notes=notes)
    say(f"… bench speed {sel.version}: {', '.join(f'{lb} {key}' for lb, (key, _) in chosen.items())}")
    files = payload(out / "cache" / "wheels", scripts / "bench-speed.py", names)
    ref = reference_image(engine, matrix, sel, out, say)
    res.reference = asdict(ref)
    res.images["debian"] = {"image": ref.image, "exe": ref.exe, "debian_version": ref.debian_version, "base": ref.base}
    for label, (key, image) in chosen.items():
        res.images[label] = {"image": image, "key": key, "exe": "python3"}
    ours_libc = probe(engine, next(iter(chosen.values()))[1], "python3")["libc"]
    if ours_libc != ref.libc:
        res.notes.append(
            f"Debian's build runs on {ref.suite}'s {ref.libc}, ours on {sel.distro.suite}'s {ours_libc}: "
            "the C library's own code (memcpy, malloc, ...) differs too"
        )

    contenders = contenders_for(ref, chosen)
    cpu = str((os.cpu_count() or 1) - 1)
    say(
        f"… {len(names)} pyperformance benchmarks ({suite}) × {len(contenders)} interpreters × {rounds} round(s), "
        f"interleaved, pinned to CPU {cpu}: {', '.join(c.label for c in contenders)}"
    )
    interleaved(engine, contenders, files, res, rounds, cpu, say, names)
    time_ratios(res)
    measure_threads(engine, chosen, files, res, say)
    if instructions:
        # After every timed run: the valgrind images and cachegrind would disturb them.
        counted = [c for c in contenders if c.label in COUNTED]
        say(f"… instructions per loop under cachegrind: {', '.join(c.label for c in counted)}")
        count_instructions(engine, counted, files, res, out / "bench", say, names)
        for a, name in (
            ("ours-release", "instructions ours(release)/debian"),
            ("ours-quick", "instructions ours(quick)/debian"),
        ):
            counts = instruction_ratio(res, a, "debian")
            if counts is not None:
                res.ratios[name] = round(counts, 4)
    measure_sizes(engine, sel, ref, chosen, res)

    stem = report_stem(suite)
    atomic_write_text(out / "bench" / f"{stem}.json", res.to_json())
    atomic_write_text(out / "bench" / f"{stem}.md", markdown(res))
    atomic_write_text(out / "bench" / f"{stem}.html", html_report(res))
    return res


def time_ratios(res: SpeedResult) -> None:
    for a, b, name in (
        ("ours-release", "debian", "speed ours(release)/debian"),
        ("ours-quick", "debian", "speed ours(quick)/debian"),
        ("jit-on", "jit-off", "speed jit on/off"),
    ):
        r = ratio(res, a, b)
        if r is not None:
            res.ratios[name] = round(r[0], 4)
        per_round = round_ratios(res, a, b)
        if len(per_round) > 1:
            res.spread[name] = [round(min(per_round), 4), round(max(per_round), 4)]


def measure_threads(
    engine: Engine,
    chosen: dict[str, tuple[str, str]],
    files: dict[str, bytes],
    res: SpeedResult,
    say: Callable[[str], None],
) -> None:
    """The free-threaded build and the default build of its profile on 1 and N threads (N = cores)."""
    n = os.cpu_count() or 2
    for label in [k for k in chosen if k == "freethreaded" or k.startswith("gil-")]:
        say(f"… {label}: CPU-bound workload on 1 and {n} threads")
        res.threads[label] = run_threads(engine, chosen[label][1], files, n)
    ft = res.threads.get("freethreaded")
    gil = next((v for k, v in res.threads.items() if k.startswith("gil-")), None)
    if ft:
        res.ratios[f"free-threaded speedup {n} threads/1"] = round(float(ft["speedup"]), 3)
    if ft and gil:
        res.ratios[f"default speedup {n} threads/1"] = round(float(gil["speedup"]), 3)
        res.ratios["free-threaded single-thread time / default"] = round(ft["one_thread_s"] / gil["one_thread_s"], 3)


def measure_sizes(
    engine: Engine, sel: Selection, ref: ReferenceImage, chosen: dict[str, tuple[str, str]], res: SpeedResult
) -> None:
    """Uncompressed sizes: the bases, Debian's image, ours; and what each adds to its base."""
    ours_base = sel.distro.base_image(sel.platform)
    for b in dict.fromkeys((ours_base, ref.base)):
        res.sizes["base " + b] = int(engine.inspect_image(b)["Size"])
    debian = f"debian {ref.exe} {ref.debian_version} on {ref.base}"
    res.sizes[debian] = int(engine.inspect_image(ref.image)["Size"])
    res.ratios[f"size debian {ref.exe} - its base (MB)"] = round(
        (res.sizes[debian] - res.sizes["base " + ref.base]) / 1e6, 1
    )
    for key, image in chosen.values():
        res.sizes[key] = int(engine.inspect_image(image)["Size"])
    for key in [k for k in res.sizes if k.startswith(sel.entry("default"))]:
        res.ratios[f"size {key} - base (MB)"] = round((res.sizes[key] - res.sizes["base " + ours_base]) / 1e6, 1)


def report_stem(suite: str) -> str:
    """speed.json/.md/.html for the core suite; speed-<suite>.* for another, so neither overwrites
    the other."""
    return "speed" if suite == "core" else f"speed-{suite}"


# ------------------------------------------------------------------------------------ reports


def markdown(res: SpeedResult) -> str:
    lines = ["# cpforge bench speed", ""]
    if res.release:
        lines += [f"Release {res.release}: our builds against Debian's own build of the same release.", ""]
    if res.reference:
        r = res.reference
        lines += [
            f"Reference: Debian's `{r['exe']}` **{r['debian_version']}** (Python {r['python_version']}), "
            f"installed on `{r['base']}` ({r['suite']}, {r['libc']}): {r['origin']}.",
            "",
        ]
    if res.suite in SUITES:
        lines += [f"Benchmark suite `{res.suite}`: {', '.join(SUITES[res.suite])}.", ""]
    lines += ["| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in res.ratios.items()]
    if res.spread:
        lines += ["", "Each round alone (its runs of every interpreter ran back to back); the range is the noise:", ""]
        lines += [f"- {k}: {lo} to {hi}" for k, (lo, hi) in res.spread.items()]
    labels = [k for k in ("debian", "ours-release", "ours-quick", "jit-on", "jit-off") if k in res.suites]
    names = sorted({n for s in res.suites.values() for n in s})
    lines += [
        "",
        "Per benchmark: the fastest pyperf `--fast` worker process (the mean of its values) over the rounds"
        " (interleaved, one pinned CPU):",
        "",
    ]
    lines += ["| benchmark | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for n in names:
        cells = [fmt_time(res.suites[lb][n]) if n in res.suites[lb] else "—" for lb in labels]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    counted = [k for k in COUNTED if k in res.instructions]
    if counted:
        lines += [
            "",
            "Instructions per loop of each benchmark script (cachegrind; millions), and ours/debian. A count,"
            " not a time: other tenants of the host do not move it, but neither do cache misses, so a build"
            " with more code can count fewer instructions and still run slower (see the README).",
            "",
        ]
        ours = [k for k in counted if k != "debian"]
        lines += [
            "| script | " + " | ".join(counted) + "".join(f" | {k}/debian" for k in ours) + " |",
            "|---" * (len(counted) + len(ours) + 1) + "|",
        ]
        deb = res.instructions.get("debian", {})
        for n in sorted({n for v in res.instructions.values() for n in v}):
            cells = [f"{res.instructions[k][n] / 1e6:.1f}" if n in res.instructions[k] else "—" for k in counted]
            cells += [
                f"{res.instructions[k][n] / deb[n]:.3f}" if n in res.instructions[k] and deb.get(n) else "—"
                for k in ours
            ]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Image sizes (uncompressed):", ""]
    lines += [f"- {k}: {v / 1e6:.1f} MB" for k, v in res.sizes.items()]
    lines += [f"- note: {n}" for n in res.notes]
    return "\n".join(lines) + "\n"


def html_report(res: SpeedResult) -> str:
    """One page: a bar per benchmark of time ratio vs Debian (left of 1.0 = faster), then the table."""
    rows: list[tuple[str, float]] = []
    for label in ("ours-release", "ours-quick", "jit-on"):
        other = "jit-off" if label == "jit-on" else "debian"
        r = ratio(res, label, other)
        if r is None:
            continue
        rows.append((f"{label} / {other} (geomean)", r[0]))
        rows += [(f"  {n}", v) for n, v in sorted(r[1].items())]
    width, bar_h, left = 760, 18, 260
    scale = (width - left - 60) / max([2.0, *(v for _, v in rows)])
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{bar_h * len(rows) + 30}">']
    x1 = left + scale
    for i, (name, v) in enumerate(rows):
        y = 10 + i * bar_h
        colour = "#2a7" if v <= 1.0 else "#c53"
        svg.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{html.escape(name)}</text>')
        svg.append(f'<rect x="{left}" y="{y + 2}" width="{v * scale:.1f}" height="{bar_h - 4}" fill="{colour}"/>')
        svg.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 13}" font-size="12">{v:.3f}×</text>')
    svg.append(f'<line x1="{x1:.1f}" y1="0" x2="{x1:.1f}" y2="{bar_h * len(rows) + 20}" stroke="#000"/>')
    svg.append("</svg>")
    body = markdown(res)
    return (
        "<!doctype html><meta charset=utf-8><title>cpforge bench speed</title>"
        "<h1>cpforge bench speed</h1><p>Time ratio per benchmark (shorter bar = faster; the line is 1.0).</p>"
        + "\n".join(svg)
        + f"<pre>{html.escape(body)}</pre>\n"
    )
