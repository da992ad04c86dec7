"""What each task prints when it is done, and the error it ends with: lines, never print().

Every function takes a task's typed results and returns an `Outcome`: the lines to print and, when
the task failed, the `CpforgeError` whose exit code the command ends with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import matrix as mx
from .errors import BuildError, CpforgeError, EntriesFailed, RenderError, SmokeError
from .progress import Style, fmt_seconds
from .report import EntryResult

if TYPE_CHECKING:
    from .base import BaseResult
    from .bench import BuildBench
    from .merge import MergeResult
    from .provision import ProvisionResult
    from .publish import PublishResult
    from .sources import Fetched
    from .speed import SpeedResult
    from .verify import VerifyResult


@dataclass(frozen=True)
class Outcome:
    lines: tuple[str, ...] = ()
    error: CpforgeError | None = None


def entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def matrix_json(specs: Sequence[mx.BuildSpec]) -> Outcome:
    return Outcome((json.dumps({"include": [mx.spec_json(s) for s in specs]}, indent=2, sort_keys=True),))


def matrix_table(specs: Sequence[mx.BuildSpec], default_entry: str) -> Outcome:
    lines = [
        f"{'*' if s.id == default_entry else ' '} {s.id:<38} {s.version:<8} {s.platform.name:<12} "
        f"{' '.join(s.configure_flags) or '-'}"
        for s in specs
    ]
    lines.append(f"{len(specs)} entries (profile {specs[0].profile.name}); * = default entry")
    return Outcome(tuple(lines))


def rendered(changed: Sequence[str], check: bool) -> Outcome:
    if not check:
        return Outcome((*(f"wrote {p}" for p in changed), f"{len(changed)} file(s) changed"))
    if not changed:
        return Outcome(("dockerfiles/ matches the templates",))
    return Outcome(
        tuple(f"drift: {p}" for p in changed),
        RenderError(
            f"{len(changed)} Dockerfile(s) differ from the templates", hint="run `invoke render` and commit the result"
        ),
    )


def fetched(files: Sequence[Fetched]) -> Outcome:
    return Outcome(tuple(f"{f.path}  sha256 ok  ({f.origin})" for f in files))


def bases(results: Sequence[BaseResult]) -> Outcome:
    return Outcome(tuple(f"{r.ref}  {r.image_id[:19]}  {r.how} ({fmt_seconds(r.seconds)})" for r in results))


def build_header(specs: Sequence[mx.BuildSpec], jobs: int, engine_url: str, logs: Path) -> str:
    profile = specs[0].profile.name
    return f"cpforge: {entries(len(specs))} (profile {profile}), jobs={jobs}, engine {engine_url}; logs in {logs}"


def failure(results: Sequence[EntryResult]) -> CpforgeError | None:
    """The error a build or smoke run ends with: BuildError (7) when an entry's build errored,
    else SmokeError (8) when one failed its smoke test (or had no image to test); None if all passed."""
    errored = [r.id for r in results if r.status == "error"]
    if errored:
        return BuildError(
            f"{entries(len(errored))} did not build: {', '.join(errored)}",
            hint="read the first problem above and the entry's log (build/logs/<entry>.<profile>.log)",
        )
    failed = [r.id for r in results if not r.passed]
    if failed:
        return SmokeError(
            f"{entries(len(failed))} did not pass: {', '.join(failed)}",
            hint="read the problems above; the smoke facts are at the end of each entry's log",
        )
    return None


def summary(results: Sequence[EntryResult], report_path: Path, elapsed: str, fmt: Style) -> Outcome:
    """The table after `build` and `smoke`: one line per entry, and the error to exit with."""
    passed = sum(r.passed for r in results)
    lines = ["", f"{passed}/{len(results)} passed in {elapsed}; report: {report_path}"]
    for r in results:
        line = f"  {fmt.mark(r.passed)} {r.id:<38} {r.status:<8}"
        if r.passed and r.tags:
            line += f" {r.tags[0]}"
        elif not r.passed and r.problems:
            line += f" {r.problems[0].splitlines()[0][:160]}"
        lines.append(line)
    return Outcome(tuple(lines), failure(results))


def locked(written: Sequence[str], pinned: Sequence[str], lock_path: Path) -> Outcome:
    return Outcome(
        (
            *(f"locked {key}" for key in written),
            *(f"pinned the PGO profile {p}: later builds reuse it instead of training (commit it)" for p in pinned),
            f"{lock_path}: {entries(len(written))} written",
        )
    )


def verified(results: Sequence[VerifyResult], fmt: Style) -> Outcome:
    from .verify import VerifyError

    lines: list[str] = []
    for r in results:
        if r.reproducible:
            lines.append(
                f"{fmt.mark(True)} {r.key}: reproducible — cpython.tar {r.artifact_sha256[0]}, "
                f"{len(r.layers[0])} identical layers"
            )
            continue
        lines.append(f"{fmt.mark(False)} {r.key}: NOT reproducible" + (f" ({r.error})" if r.error else ""))
        lines.append(f"    cpython.tar: {r.artifact_sha256[0]} vs {r.artifact_sha256[1]}")
        for i, (x, y) in enumerate(zip(*r.layers, strict=False)):
            lines.append(f"    layer {i}: {'same' if x == y else x[:19] + ' vs ' + y[:19]}")
        lines += [f"    {d}" for d in r.differences]
        if r.diffoscope:
            lines.append(f"    diffoscope report: {r.diffoscope}")
    bad = [r.key for r in results if not r.reproducible]
    if not bad:
        return Outcome(tuple(lines))
    return Outcome(
        tuple(lines),
        VerifyError(
            f"{entries(len(bad))} did not rebuild bit for bit: {', '.join(bad)}",
            hint="the differing files are named above; diffoscope's report says how they differ",
        ),
    )


def published(res: PublishResult, registry: str) -> Outcome:
    lines = [
        *(f"  would {line}" for line in res.planned),
        *(f"  pushed    {registry}/…:{tag}" for tag in res.pushed),
        *(f"  unchanged {registry}/…:{tag}" for tag in sorted(set(res.unchanged))),
        *(f"  sbom      {key}: {path}" for key, path in sorted(res.sboms.items())),
        *(
            f"  deferred  {registry}/…:{tag} and its moving manifest lists (--images-only: "
            "`invoke publish --lists-only` writes them once every platform is pushed)"
            for tag in res.deferred
        ),
        *(f"  SKIPPED   {why}" for why in res.skipped),
        f"{len(res.pushed)} tag(s) changed, {len(set(res.unchanged))} unchanged, {len(res.skipped)} skipped",
    ]
    if not res.skipped:
        return Outcome(tuple(lines))
    return Outcome(
        tuple(lines),
        EntriesFailed(
            "some selected entries were not published (see SKIPPED above)",
            hint="build them (`invoke build --filter ...`) or leave them out with --filter",
        ),
    )


def provisioned(res: ProvisionResult, target: Path) -> Outcome:
    lines = [
        f"  {p.filename}  glibc>={p.metadata['glibc_min']}  {len(p.metadata['bundled_libraries'])} bundled libs  "
        f"{p.path.stat().st_size / 1e6:.1f} MB"
        for p in res.tarballs
    ]
    lines += [f"  NOTE  {note}" for note in res.notes]
    channels = ", ".join(str(p.relative_to(target)) for p in res.channels.values())
    lines.append(f"{len(res.tarballs)} tarball(s), SHA256SUMS and {res.manifest.name} in {target}")
    lines.append(f"per-channel manifests: {channels}")
    return Outcome(tuple(lines))


def merged(res: MergeResult) -> Outcome:
    """After `provision --merge`: each tarball, copied or already in place, and the notes."""
    lines = []
    for m in res.tarballs:
        more = f" (and {len(m.sources) - 1} more)" if len(m.sources) > 1 else ""
        state = "copied   " if m.copied else "unchanged"
        lines.append(f"  {state} {m.filename}  glibc>={m.metadata['glibc_min']}  from {m.sources[0]}{more}")
    lines += [f"  NOTE  {note}" for note in res.notes]
    copied = sum(m.copied for m in res.tarballs)
    lines.append(
        f"{len(res.tarballs)} tarball(s) merged ({copied} copied, {len(res.tarballs) - copied} already there); "
        f"{res.sums.name} and {res.manifest.name} in {res.dest}"
    )
    channels = ", ".join(str(p.relative_to(res.dest)) for p in res.channels.values())
    lines.append(f"per-channel manifests: {channels}")
    return Outcome(tuple(lines))


def bench_built(result: BuildBench, out: Path) -> Outcome:
    lines = []
    for eid, e in sorted(result.entries.items()):
        d = e["durations"]
        lines.append(
            f"  {eid:<38} {e['status']:<7} total {d.get('total', 0):7.1f}s  compile stage {d.get('artifact', 0):7.1f}s"
        )
    lines += [f"  ratio {name}: {ratio:.2f}x" for name, ratio in result.ratios.items()]
    for eid, em in result.emulated.items():
        est = em.get("estimated_ratio_vs_native_configure_make")
        lines.append(
            f"  emulated {eid}: ran {em['ran_seconds']}s of a {em['cap_seconds']}s cap "
            f"({em['configure_checks_done']}/{em['configure_checks_native']} configure checks, "
            f"{em['compiles_done']}/{em['compiles_native']} compiles); "
            f"estimated configure+make {em.get('estimated_configure_make_seconds')}s = {est}x native"
        )
    lines.append(f"results: {out / 'bench' / 'build.json'}")
    return Outcome(tuple(lines))


def bench_speed(res: SpeedResult, out: Path) -> Outcome:
    from .speed import report_stem

    lines = []
    for name, value in res.ratios.items():
        lo_hi = res.spread.get(name)
        lines.append(f"  {name}: {value}" + (f" (rounds alone: {lo_hi[0]} to {lo_hi[1]})" if lo_hi else ""))
    lines += [f"  note: {note}" for note in res.notes]
    stem = report_stem(res.suite)
    lines.append(f"results: {out / 'bench' / stem}.json, {stem}.md, {stem}.html")
    return Outcome(tuple(lines))
