"""`bench speed`: how fast and how small the built interpreters are, next to Debian's own build.

One run on this machine, in containers on the same engine, reported as ratios (never a test):
  1. interpreter speed: a pyperformance subset (SUITES: `core` by default, or `held-out`, the check
     that nothing was tuned to `core`) through pyperf (`--fast`) on our `release` build, our
     `quick` build (a floor) and Debian's `python3.X` package of the same release; geometric-mean
     time ratio ours/Debian. Benchmarks run interleaved (each one on every interpreter back to
     back), each container pinned to one CPU, for a few rounds; each keeps its fastest pyperf
     worker process (the mean of that process's values) over all rounds;
  2. free-threading: a CPU-bound pure-Python workload on 1 and N threads (N = cores) on the default
     and free-threaded builds; speedups and the free-threaded single-thread overhead;
  3. JIT: the same subset on the JIT build with PYTHON_JIT=1 and PYTHON_JIT=0;
  4. image size: each runtime image and the base image, uncompressed.
Results: build/bench/speed.json, speed.md and speed.html (a bar chart a person can read at a glance);
speed-held-out.* for the held-out suite.
"""

from __future__ import annotations

import html
import json
import math
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .engine import Engine, context_tar, short_ref
from .errors import BenchError as BenchError
from .matrix import Matrix
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


def apt_image(engine: Engine, ref: str, base: str, packages: str, log: Path) -> str:
    """``base`` plus Debian ``packages`` (no recommends), built on the engine and tagged ``ref``."""
    dockerfile = (
        f"FROM {base}\n"
        f"RUN apt-get update && apt-get install -y --no-install-recommends {packages} "
        "&& rm -rf /var/lib/apt/lists/*\n"
    ).encode()
    with log.open("w") as out:
        return engine.build(context_tar({"Dockerfile": dockerfile}), tag=ref, log=out)


def debian_reference(engine: Engine, base_image: str, minor: str, logdir: Path) -> str:
    """An image with Debian's own pythonX.Y package on the same base: the distro's optimised build."""
    return apt_image(
        engine,
        f"cpforge-bench/debian-python{minor}:latest",
        base_image,
        f"python{minor}",
        logdir / f"debian-python{minor}.log",
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


def pick(report: Report, entry: str, profiles: tuple[str, ...]) -> tuple[str, str] | None:
    """The first profile of ``profiles`` whose build of ``entry`` passed: (key, image id)."""
    for prof in profiles:
        res = report.entries.get(f"{entry}@{prof}")
        if res is not None and res.passed and res.image_id:
            return res.key, res.image_id
    return None


def speed(
    engine: Engine,
    matrix: Matrix,
    report: Report,
    out: Path,
    scripts: Path,
    minor: str = "3.13",
    rounds: int = 2,
    say: Callable[[str], None] = print,
    instructions: bool = True,
    suite: str = "core",
) -> SpeedResult:
    if suite not in SUITES:
        raise BenchError(
            f"no benchmark suite named {suite!r}",
            hint=f"choose one of: {', '.join(SUITES)} (--suite)",
        )
    names = SUITES[suite]
    res = SpeedResult(suite=suite)
    distro = matrix.distros[0]
    arch = "amd64"
    plat = next(p for p in matrix.platforms if p.arch == arch)
    entry = f"{minor}-{{}}-{distro.name}-{arch}"
    chosen: dict[str, tuple[str, str]] = {}
    for label, variant, profiles in (
        ("ours-release", "default", ("release",)),
        ("ours-quick", "default", ("quick",)),
        ("jit", "jit", ("release", "quick")),
        ("freethreaded", "freethreaded", ("release", "quick")),
    ):
        got = pick(report, entry.format(variant), profiles)
        if got is None:
            res.notes.append(f"{label}: no passed build of {entry.format(variant)} ({'/'.join(profiles)}); skipped")
            continue
        chosen[label] = got
    if "ours-release" not in chosen and "ours-quick" not in chosen:
        raise BenchError(
            f"no passed build of {entry.format('default')} in the report",
            hint=f"invoke build --filter '{entry.format('default')}' --profile release (and --profile quick)",
        )
    # The free-threading comparison uses a default build of the free-threaded build's profile.
    if "freethreaded" in chosen:
        prof = chosen["freethreaded"][0].rsplit("@", 1)[1]
        got = pick(report, entry.format("default"), (prof,))
        if got is not None:
            chosen["gil-" + prof] = got

    bench_dir = out / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    files = payload(out / "cache" / "wheels", scripts / "bench-speed.py", names)
    base_ref = distro.base_image(plat)
    say(f"… building the reference image: Debian's python{minor} on {base_ref}")
    debian = debian_reference(engine, base_ref, minor, bench_dir)
    res.images["debian"] = {"image": debian, "exe": f"python{minor}"}
    for label, (key, image) in chosen.items():
        res.images[label] = {"image": image, "key": key, "exe": "python3"}

    contenders = [Contender("debian", debian, f"python{minor}")]
    contenders += [Contender(lb, chosen[lb][1], "python3") for lb in ("ours-release", "ours-quick") if lb in chosen]
    if "jit" in chosen:
        contenders.append(Contender("jit-on", chosen["jit"][1], "python3", (("PYTHON_JIT", "1"),)))
        contenders.append(Contender("jit-off", chosen["jit"][1], "python3", (("PYTHON_JIT", "0"),)))
    cpu = str((os.cpu_count() or 1) - 1)
    say(
        f"… {len(names)} pyperformance benchmarks ({suite}) × {len(contenders)} interpreters × {rounds} round(s), "
        f"interleaved, pinned to CPU {cpu}: {', '.join(c.label for c in contenders)}"
    )
    interleaved(engine, contenders, files, res, rounds, cpu, say, names)

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

    if instructions:
        # After every timed run: the valgrind images and cachegrind would disturb them.
        counted = [c for c in contenders if c.label in COUNTED]
        say(f"… instructions per loop under cachegrind: {', '.join(c.label for c in counted)}")
        count_instructions(engine, counted, files, res, bench_dir, say, names)
        for a, name in (
            ("ours-release", "instructions ours(release)/debian"),
            ("ours-quick", "instructions ours(quick)/debian"),
        ):
            counts = instruction_ratio(res, a, "debian")
            if counts is not None:
                res.ratios[name] = round(counts, 4)

    res.sizes["base " + base_ref] = int(engine.inspect_image(base_ref)["Size"])
    res.sizes["debian python" + minor] = int(engine.inspect_image(debian)["Size"])
    for key, image in chosen.values():
        res.sizes[key] = int(engine.inspect_image(image)["Size"])
    base_size = res.sizes["base " + base_ref]
    for key in [k for k in res.sizes if k.startswith(f"{minor}-default")]:
        res.ratios[f"size {key} - base (MB)"] = round((res.sizes[key] - base_size) / 1e6, 1)

    stem = report_stem(suite)
    (bench_dir / f"{stem}.json").write_text(res.to_json())
    (bench_dir / f"{stem}.md").write_text(markdown(res))
    (bench_dir / f"{stem}.html").write_text(html_report(res))
    return res


def report_stem(suite: str) -> str:
    """speed.json/.md/.html for the core suite; speed-<suite>.* for another, so neither overwrites
    the other."""
    return "speed" if suite == "core" else f"speed-{suite}"


# ------------------------------------------------------------------------------------ reports


def markdown(res: SpeedResult) -> str:
    lines = ["# cpforge bench speed", ""]
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
