"""Benchmarks. Results are ratios measured in one run on this machine, written as JSON; never tests.

`bench build`: the same entry built for amd64 (native) and arm64 (cross-compiled), every step of the
entry itself rebuilt (fresh), wall times and their ratio. The per-release prerequisites are not the
entry's cost: the base images, and the build-python stage a cross build needs, which one build per
release makes for every variant and profile (its time is reported on its own). Optionally a
time-capped run of the same build fully emulated under QEMU (an arm64 builder container),
extrapolated from how far it got.

`bench build --builder …` (a fleet): the selected entries built as `invoke build` builds them, first
on the fleet's first engine alone, then on all its engines; the matrix wall time of each run, and the
scheduler's own cost: per entry, the time from "could start" (queued, and a job slot free on its
engine) to "its engine is asked to build", and the scheduler thread's CPU time. Engines on one host
share its CPUs, so there the wall times measure scheduling, not a speed-up; the result says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import api
from .build import Builder, BuildOptions
from .builders import Fleet, Worker
from .engine import Engine, context_tar
from .errors import BenchError
from .fsutil import atomic_write_text
from .matrix import BuildSpec
from .progress import Progress, fmt_seconds
from .report import EntryResult, Report

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
PHASE_RE = re.compile(r"^\[cpforge-build (\d\d):(\d\d):(\d\d)\] (unpacking|configure|make -j|make install|stripping)")


@dataclass
class Phases:
    """Seconds spent in configure and make, and how many checks/compiles each made."""

    configure: float | None = None
    make: float | None = None
    checks: int = 0
    compiles: int = 0
    configure_done: bool = False
    make_done: bool = False


def parse_phases(log: str) -> Phases:
    stamps: dict[str, int] = {}
    ph = Phases()
    phase = ""
    for raw in log.splitlines():
        line = ANSI_RE.sub("", raw)
        m = PHASE_RE.match(line)
        if m:
            h, mi, s, name = int(m[1]), int(m[2]), int(m[3]), m[4]
            stamps[name] = h * 3600 + mi * 60 + s
            phase = name
            continue
        if phase == "configure" and line.startswith("checking "):
            ph.checks += 1
        elif phase == "make -j" and line.startswith(("gcc ", "cc ", "aarch64-linux-gnu-gcc ", "clang")):
            ph.compiles += 1

    def span(a: str, b: str) -> float | None:
        if a in stamps and b in stamps:
            return float((stamps[b] - stamps[a]) % 86400)
        return None

    ph.configure = span("configure", "make -j")
    ph.make = span("make -j", "make install")
    ph.configure_done = ph.configure is not None
    ph.make_done = ph.make is not None
    return ph


@dataclass
class BuildBench:
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    emulated: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def estimate_emulated(native: Phases, partial: Phases, cap: float) -> float | None:
    """Extrapolate a full emulated configure+make from a partial one, phase by phase."""
    if not native.configure or not native.make or not native.checks or not native.compiles:
        return None
    if partial.configure_done and partial.configure is not None:
        if partial.make_done and partial.make is not None:
            return partial.configure + partial.make
        made = max(partial.compiles, 1)
        make_elapsed = cap - partial.configure
        return partial.configure + make_elapsed * native.compiles / made
    done = max(partial.checks, 1)
    est_conf = cap * native.checks / done
    return est_conf + native.make * (est_conf / native.configure)


def build_ratio(
    ctx: api.Context, engine: Engine, specs: Sequence[BuildSpec], progress: Progress, emulate_seconds: int = 0
) -> BuildBench:
    """Fresh builds of each spec (prerequisites from the cache, every step of the entry rebuilt); ratio
    of every arm64 entry to its amd64 twin."""
    bench = BuildBench()
    out = ctx.ws.out / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out / "build-report.json")
    builder = Builder(
        engine,
        ctx.ws,
        ctx.renderer,
        ctx.sources(progress),
        report,
        progress,
        BuildOptions(fresh=True, keep_going=True),
    )
    builder.preflight(specs)
    results: dict[str, EntryResult] = {}
    for spec in specs:
        res = builder.build_one(spec)
        results[spec.id] = res
        bench.entries[spec.id] = {
            "status": res.status,
            "durations": {k: round(v, 1) for k, v in res.durations.items()},
            "platform": spec.platform.name,
            "cross": spec.cross,
        }
    for spec in specs:
        if spec.platform.arch != "arm64":
            continue
        twin = spec.id.replace("-arm64", "-amd64")
        if twin in results and results[twin].passed and results[spec.id].passed:
            a, b = results[spec.id].durations, results[twin].durations
            # The build-python stage is the release's, not the entry's: its time is reported apart.
            entry_total = a["total"] - a.get("build_python", 0.0)
            bench.ratios[f"{spec.id} / {twin} (total: build + smoke test)"] = round(entry_total / b["total"], 3)
            bench.ratios[f"{spec.id} / {twin} (build: compile stage + runtime image)"] = round(
                (a["artifact"] + a["runtime"]) / (b["artifact"] + b["runtime"]), 3
            )
            bench.ratios[f"{spec.id} / {twin} (compile stage)"] = round(a["artifact"] / b["artifact"], 3)
            if emulate_seconds > 0:
                native_log = Path(results[twin].log or "").read_text(errors="replace")
                bench.emulated[spec.id] = emulated_partial(
                    ctx, engine, spec, parse_phases(native_log), emulate_seconds, b["artifact"], progress
                )
    atomic_write_text(out / "build.json", bench.to_json())
    return bench


def emulated_partial(
    ctx: api.Context,
    engine: Engine,
    spec: BuildSpec,
    native: Phases,
    cap: int,
    native_artifact_seconds: float,
    progress: Progress,
) -> dict[str, Any]:
    """Run the same build natively for arm64 under QEMU for at most ``cap`` seconds and extrapolate."""
    renderer = ctx.renderer
    fetched = ctx.sources(progress).ensure(spec.source)
    logpath = ctx.ws.out / "bench" / f"{spec.id}.emulated.log"
    progress.start(f"{spec.id} emulated", f"builder stage under QEMU (log: {logpath})")
    t0 = time.monotonic()
    with logpath.open("w") as log:
        builder_image = engine.build(
            context_tar(
                {
                    "Dockerfile": renderer.dockerfile(spec).encode(),
                    "scripts/install-build-deps.sh": ctx.ws.scripts / "install-build-deps.sh",
                    "scripts/build-cpython.sh": ctx.ws.scripts / "build-cpython.sh",
                    f"sources/{spec.source.filename}": fetched.path,
                }
            ),
            target="builder",
            platform=spec.platform.name,
            buildargs={"BUILDER_ARCH": spec.platform.arch},
            nocache=True,
            log=log,
        )
    deps_seconds = time.monotonic() - t0
    progress.step(f"{spec.id} emulated", f"compiling under QEMU for up to {fmt_seconds(cap)}")
    t1 = time.monotonic()
    result = engine.run(
        builder_image,
        ["bash", "/tmp/cpforge-build", spec.version, *spec.configure_flags],
        files={
            "tmp/cpforge-build": (ctx.ws.scripts / "build-cpython.sh").read_bytes(),
            f"usr/src/{spec.source.filename}": fetched.path.read_bytes(),
        },
        environment={"SOURCE_DATE_EPOCH": str(spec.epoch), "CPFORGE_TARGET_ARCH": spec.platform.arch},
        platform=spec.platform.name,
        timeout=cap,
    )
    ran = time.monotonic() - t1
    with logpath.open("a") as log:
        log.write(result.stdout + result.stderr)
    partial = parse_phases(result.stdout)
    est = estimate_emulated(native, partial, ran)
    engine.remove_image(builder_image)
    progress.done(f"{spec.id} emulated", True, f"ran {fmt_seconds(ran)}, exit {result.exit_code}")
    out: dict[str, Any] = {
        "cap_seconds": cap,
        "ran_seconds": round(ran, 1),
        "finished": result.exit_code == 0,
        "deps_install_seconds": round(deps_seconds, 1),
        "configure_checks_done": partial.checks,
        "configure_checks_native": native.checks,
        "compiles_done": partial.compiles,
        "compiles_native": native.compiles,
        "configure_seconds": partial.configure,
        "native_configure_seconds": native.configure,
        "native_make_seconds": native.make,
    }
    if est is not None and native.configure and native.make:
        out["estimated_configure_make_seconds"] = round(est, 1)
        out["estimated_ratio_vs_native_configure_make"] = round(est / (native.configure + native.make), 2)
    out["native_compile_stage_seconds"] = round(native_artifact_seconds, 1)
    return out


# ------------------------------------------------------------------------------------------ fleet


@dataclass
class FleetBench:
    entries: list[str] = field(default_factory=list)
    cached: bool = False  # built from the layer cache (measures scheduling), else fresh (every step rebuilt)
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per fleet: engines, wall time, overhead
    note: str = ""  # e.g. the engines share one host's CPUs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def _alone(w: Worker) -> Fleet:
    return Fleet([Worker(url=w.url, platforms=w.platforms, jobs=w.jobs, where=w.where, engine=w.engine)])


def fleet_bench(
    ctx: api.Context, fleet: Fleet, specs: Sequence[BuildSpec], progress: Progress, cached: bool = False
) -> FleetBench:
    """``specs`` built on the fleet's first engine alone, then on all of it (module docstring). Nothing
    is tagged; each run has its own report and logs under <out>/bench/fleet-<n>/."""
    live = fleet.live()
    if len(live) < 2:
        raise BenchError("bench build with --builder needs at least two reachable engines", hint="add a --builder")
    if any(not live[0].serves(s.platform.name) for s in specs):
        raise BenchError(
            f"the first engine, {live[0].url}, does not build every selected platform, so it cannot build the "
            "matrix alone",
            hint="name first a --builder that builds every selected platform, or choose entries with --platform",
        )
    bench = FleetBench(entries=[s.key for s in specs], cached=cached)
    hosts = {str(getattr(w.engine, "host", "")) for w in live}  # `docker info`'s Name of each engine's host
    if len(hosts) < len(live):
        bench.note = (
            f"the engines share the CPUs of {len(hosts)} host(s) ({', '.join(sorted(hosts))}): the wall times "
            "measure correctness and scheduling overhead here, not a speed-up"
        )
    options = BuildOptions(fresh=not cached, keep_going=True, promote=False)
    for n, run_fleet in enumerate((_alone(live[0]), Fleet([_alone(w).workers[0] for w in live])), start=1):
        ws = dataclasses.replace(ctx.ws, out=ctx.ws.out / "bench" / f"fleet-{n}")
        report = _seeded(ws.out / "report.json", Report.load(ctx.report_path))
        progress.say(f"… bench run {n}: {len(specs)} entries on {', '.join(w.url for w in run_fleet.workers)}")
        builder = Builder(run_fleet, ws, ctx.renderer, ctx.sources(progress), report, progress, options)
        t0 = time.monotonic()
        results = builder.run(specs)
        wall = time.monotonic() - t0
        stats = builder.last_schedule
        dispatch = sorted(stats.dispatch.values()) if stats else []
        bench.runs.append(
            {
                "engines": [w.describe() for w in run_fleet.workers],
                "wall_seconds": round(wall, 1),
                "passed": sum(r.passed for r in results),
                "built_on": stats.engine_of if stats else {},
                "dispatch_seconds": {k: round(v, 3) for k, v in sorted((stats.dispatch if stats else {}).items())},
                "dispatch_median_seconds": round(dispatch[len(dispatch) // 2], 3) if dispatch else None,
                "dispatch_max_seconds": round(dispatch[-1], 3) if dispatch else None,
                "scheduler_cpu_seconds": round(stats.cpu_seconds, 4) if stats else None,
            }
        )
    atomic_write_text(ctx.ws.out / "bench" / "fleet.json", bench.to_json())
    return bench


def _seeded(path: Path, source: Report) -> Report:
    """A report of its own at ``path``, holding ``source``'s entries (``source`` is never written):
    their chains are the cache sources, as for `invoke build`. Saved before use, since a save reads
    the file back: entries only in memory would be gone after the first entry."""
    path.unlink(missing_ok=True)
    report = Report(path)
    for entry in source.entries.values():
        report.update(entry)
    report.save()
    return report


def fleet_lines(bench: FleetBench, out: Path) -> list[str]:
    """What `invoke bench build --builder …` prints."""
    kind = "from the layer cache" if bench.cached else "fresh (every step of each entry rebuilt)"
    lines = [f"  {len(bench.entries)} entries, built {kind}"]
    for n, run in enumerate(bench.runs, start=1):
        lines.append(
            f"  run {n}: {len(run['engines'])} engine(s): matrix wall time {fmt_seconds(run['wall_seconds'])} "
            f"({run['passed']}/{len(bench.entries)} passed); per entry, ready → engine building: median "
            f"{run['dispatch_median_seconds']}s, max {run['dispatch_max_seconds']}s; scheduler CPU "
            f"{run['scheduler_cpu_seconds']}s"
        )
        lines += [f"      {e}" for e in run["engines"]]
    if bench.note:
        lines.append(f"  note: {bench.note}")
    lines.append(f"results: {out / 'bench' / 'fleet.json'}")
    return lines
