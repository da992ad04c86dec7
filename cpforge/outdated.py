"""`invoke outdated`: which built entries are stale, and why.

An entry is stale when
  * a newer CPython patch release of its minor can be fetched (update's finder: python.org, else
    Debian's Sources indexes; each candidate downloaded and verified) or matrix.yaml already pins a
    newer one than the entry was built from;
  * a Debian package it pins has a newer version on its distro's mirror: the runtime `.deb` files
    the artifact stage pinned (runtime-debs.txt inside cpython.tar: "PACKAGE[:ARCH] URI SHA256") and
    the base image's packages (matrix.lock `bases`). The suites read are `<suite>`, `<suite>-updates`
    and `<suite>-security`; the security suite lives on the `debian-security` archive next to the
    distro's mirror (http://deb.debian.org/debian → http://deb.debian.org/debian-security), or at
    $CPFORGE_SECURITY_MIRROR. Versions are compared with dpkg's algorithm (cpforge.debian_index).

Entries come from the build report (build/report.json, passed entries), or with ``lock`` from
matrix.lock's locked entries (whose `runtime_packages` are the runtime image's full package list):
what a CI job has without building anything.
"""

from __future__ import annotations

import os
import tarfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import api
from . import debian_index as di
from . import lock as lockfile
from . import matrix as mx
from .errors import ReportError
from .report import EntryResult, Report
from .update import MinorUpdate, UpdateError, fetch_index, find, parse_index, version_key

SECURITY_ENV = "CPFORGE_SECURITY_MIRROR"
RUNTIME_DEBS = "usr/local/share/cpforge/runtime-debs.txt"  # inside cpython.tar
SCHEMA = 1


@dataclass(frozen=True)
class Finding:
    kind: str  # cpython | runtime-deb | base-package | runtime-package
    name: str  # cpython, or PACKAGE[:ARCH]
    have: str
    newer: str
    where: str  # the listing or suite that has the newer version

    def sentence(self) -> str:
        what = "CPython" if self.kind == "cpython" else f"{self.kind} {self.name}"
        return f"{what} {self.have} → {self.newer} ({self.where})"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "have": self.have, "newer": self.newer, "where": self.where}


@dataclass(frozen=True)
class EntryStatus:
    key: str
    version: str
    origin: str  # the report or lock file the entry was read from
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    checked: int = 0  # Debian packages compared

    @property
    def stale(self) -> bool:
        return bool(self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version": self.version,
            "origin": self.origin,
            "stale": self.stale,
            "packages_checked": self.checked,
            "findings": [f.to_json() for f in self.findings],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class OutdatedResult:
    entries: tuple[EntryStatus, ...]
    indexes: tuple[str, ...]  # the package indexes read
    notes: tuple[str, ...] = ()

    @property
    def stale(self) -> bool:
        return any(e.stale for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "stale": self.stale,
            "entries": [e.to_json() for e in self.entries],
            "indexes": list(self.indexes),
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------- the archive


def security_mirror(mirror: str) -> str:
    """Where `<suite>-security` lives: $CPFORGE_SECURITY_MIRROR, else `.../debian` → `.../debian-security`."""
    if os.environ.get(SECURITY_ENV):
        return os.environ[SECURITY_ENV].rstrip("/")
    base = mirror.rstrip("/")
    return base[: -len("/debian")] + "/debian-security" if base.endswith("/debian") else base


def _newer(a: str, b: str) -> bool:
    try:
        return di.compare_versions(a, b) > 0
    except ValueError:
        return False  # a version dpkg itself refuses is never "newer"


class Archive:
    """The newest version of each package in a distro's suite, -updates and -security, per arch."""

    def __init__(self, needs: dict[tuple[str, str], set[str]]) -> None:
        self.needs = needs  # (distro name, arch) → the package names to look up
        self._indexes: dict[tuple[str, str], list[tuple[str, dict[str, list[tuple[str, str]]]]]] = {}
        self.read: list[str] = []
        self.notes: list[str] = []

    def _suites(self, distro: mx.Distro, arch: str) -> list[tuple[str, dict[str, list[tuple[str, str]]]]]:
        key = (distro.name, arch)
        if key not in self._indexes:
            names = self.needs.get(key, set())
            found = []
            for mirror, suite in (
                (distro.mirror.rstrip("/"), distro.suite),
                (distro.mirror.rstrip("/"), f"{distro.suite}-updates"),
                (security_mirror(distro.mirror), f"{distro.suite}-security"),
            ):
                url = f"{mirror}/dists/{suite}/main/binary-{arch}/Packages.xz"
                text = fetch_index(url)
                if text is None and suite == distro.suite:
                    raise UpdateError(
                        f"{url} does not exist: the mirror has no {suite} for {arch}",
                        hint=f"check distros.{distro.name}.mirror in matrix.yaml",
                    )
                if text is None:
                    self.notes.append(f"{url}: HTTP 404 (no such suite on the mirror): skipped")
                    continue
                found.append((suite, parse_index(url, text, lambda t: di.package_versions(t, names))))
                self.read.append(url)
            self._indexes[key] = found
        return self._indexes[key]

    def newest(self, distro: mx.Distro, arch: str, name: str) -> tuple[str, str] | None:
        """(version, suite) of the newest ``name`` (``arch`` or all) across the suites, or None."""
        best: tuple[str, str] | None = None
        for suite, index in self._suites(distro, arch):
            for version, a in index.get(name, ()):
                if a in (arch, "all") and (best is None or _newer(version, best[0])):
                    best = (version, suite)
        return best


def package_findings(
    archive: Archive, distro: mx.Distro, arch: str, pins: Sequence[tuple[str, str, str]]
) -> tuple[list[Finding], list[str]]:
    """Findings for the pins (kind, PACKAGE[:ARCH], version) that have a newer version, and notes for
    the pins the archive no longer has."""
    findings, notes = [], []
    for kind, pkg, have in pins:
        name, _, own_arch = pkg.partition(":")
        newest = archive.newest(distro, own_arch or arch, name)
        if newest is None:
            notes.append(f"{pkg} {have}: not in {distro.suite}'s indexes any more")
            continue
        try:
            newer = di.compare_versions(newest[0], have) > 0
        except ValueError as exc:
            notes.append(f"{pkg}: cannot compare {have} with {newest[0]} ({exc})")
            continue
        if newer:
            findings.append(Finding(kind, pkg, have, newest[0], newest[1]))
    return findings, notes


# --------------------------------------------------------------------------------- the entries


def runtime_debs(tarball: Path) -> list[tuple[str, str]] | None:
    """(PACKAGE[:ARCH], version) of each .deb file runtime-debs.txt in ``tarball`` pins; None when
    the tarball has no such file (built before cpforge pinned .deb files)."""
    try:
        with tarfile.open(tarball) as tar:
            try:
                member = tar.extractfile(RUNTIME_DEBS)
            except KeyError:
                return None
            text = member.read().decode("utf-8", "replace") if member else ""
    except (tarfile.TarError, OSError) as exc:
        raise UpdateError(f"cannot read {tarball} ({exc})", hint="rebuild the entry") from None
    pins = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        fields = (
            urllib.parse.unquote(parts[1].rsplit("/", 1)[-1]).removesuffix(".deb").split("_") if len(parts) == 3 else []
        )
        if len(fields) != 3:
            raise UpdateError(
                f"{tarball}:{RUNTIME_DEBS}:{n}: not `PACKAGE[:ARCH] URI SHA256` with a NAME_VERSION_ARCH.deb URI: "
                f"{line[:100]!r}",
                hint="rebuild the entry",
            )
        pins.append((parts[0], fields[1]))
    return pins


def latest_releases(
    ctx: api.Context, minors: Sequence[str], python_org_api: str | None, say: Callable[[str], None]
) -> dict[str, tuple[str, str]]:
    """minor → (the newest version an entry should have, who says so): update's finder's newest
    fetchable release, or the matrix's version when that is newer."""
    found: tuple[MinorUpdate, ...] = (
        find(ctx, minors, python_org_api=python_org_api, say=say, dated=False) if minors else ()
    )
    out = {v.minor: (v.version, f"{Path(ctx.matrix.path).name} pins it") for v in ctx.matrix.versions}
    for u in found:
        if u.newest is not None and version_key(u.newest.version) > version_key(out[u.minor][0]):
            out[u.minor] = (u.newest.version, f"listed by {u.newest.origin}; `invoke update` moves the matrix to it")
    return out


def cpython_finding(version: str, minor: str, latest: dict[str, tuple[str, str]]) -> list[Finding]:
    newest = latest.get(minor)
    if newest is None or version_key(newest[0]) <= version_key(version):
        return []
    return [Finding("cpython", "cpython", version, newest[0], newest[1])]


def _base_pins(lk: lockfile.Lock, spec: mx.BuildSpec) -> dict[str, str] | None:
    base = lk.bases.get(spec.base_image)
    return dict(base.get("packages", {})) if base else None


@dataclass(frozen=True)
class Pins:
    """What one entry was built from, before the archive is asked about it."""

    key: str
    version: str
    origin: str
    spec: mx.BuildSpec
    findings: tuple[Finding, ...]  # CPython's
    pins: tuple[tuple[str, str, str], ...]  # (kind, PACKAGE[:ARCH], version)
    notes: tuple[str, ...] = ()


def report_pins(res: EntryResult, spec: mx.BuildSpec, lk: lockfile.Lock, latest: dict[str, tuple[str, str]]) -> Pins:
    """A passed build from the report: its CPython, its runtime .deb pins, its base image's packages."""
    notes: list[str] = []
    tarball = Path(res.artifact.get("path") or "")
    debs = runtime_debs(tarball) if tarball.is_file() else None
    if debs is None:
        notes.append(f"runtime .deb pins unknown: no {RUNTIME_DEBS} in {tarball or 'the report'} (rebuild)")
    base = _base_pins(lk, spec)
    if base is None:
        notes.append(f"base image packages unknown: {lk.path.name} records none for {spec.base_image} (`invoke lock`)")
    pins = [("runtime-deb", pkg, v) for pkg, v in debs or ()]
    pins += [("base-package", pkg, str(v)) for pkg, v in sorted((base or {}).items())]
    findings = cpython_finding(res.version, spec.minor, latest)
    return Pins(res.key, res.version, "report", spec, tuple(findings), tuple(pins), tuple(notes))


def lock_pins(
    key: str, entry: dict[str, Any], spec: mx.BuildSpec, lk: lockfile.Lock, latest: dict[str, tuple[str, str]]
) -> Pins:
    """A locked entry: the source it pins and its runtime image's full package list."""
    sha = str(entry.get("inputs", {}).get("source_sha256", ""))
    if sha == spec.source.sha256:
        version = spec.version
        findings = cpython_finding(version, spec.minor, latest)
    else:
        version = f"sha256 {sha[:12]}…"
        findings = [Finding("cpython", "cpython", version, spec.version, "matrix.yaml pins it")]
    base = _base_pins(lk, spec) or {}
    pins = [
        ("base-package" if base.get(pkg) == v else "runtime-package", pkg, str(v))
        for pkg, v in sorted(entry.get("runtime_packages", {}).items())
    ]
    return Pins(key, version, lk.path.name, spec, tuple(findings), tuple(pins))


def judge(p: Pins, archive: Archive) -> EntryStatus:
    more, gone = package_findings(archive, p.spec.distro, p.spec.platform.arch, p.pins)
    return EntryStatus(p.key, p.version, p.origin, (*p.findings, *more), (*p.notes, *gone), len(p.pins))


def _needs(plans: Sequence[Pins]) -> dict[tuple[str, str], set[str]]:
    needs: dict[tuple[str, str], set[str]] = {}
    for p in plans:
        for _, pkg, _ in p.pins:
            name, _, arch = pkg.partition(":")
            needs.setdefault((p.spec.distro.name, arch or p.spec.platform.arch), set()).add(name)
    return needs


def _entries(ctx: api.Context, lk: lockfile.Lock, use_lock: bool) -> Iterator[tuple[str, EntryResult | dict[str, Any]]]:
    if use_lock:
        if not lk.entries:
            raise UpdateError(
                f"{ctx.lock_path} locks no entries",
                hint="build and `invoke lock` first, or judge the build report (without --lock)",
            )
        yield from sorted(lk.entries.items())
        return
    if not ctx.report_path.exists():
        raise ReportError(
            f"no build report at {ctx.report_path}",
            hint="run `invoke build` first, or `invoke outdated --lock` to judge matrix.lock's locked entries",
        )
    yield from ((k, r) for k, r in sorted(Report.load(ctx.report_path).entries.items()) if r.passed)


def outdated(
    ctx: api.Context,
    *,
    use_lock: bool = False,
    python_org_api: str | None = None,
    say: Callable[[str], None] = print,
) -> OutdatedResult:
    """Judge every passed entry of the build report (or, with ``use_lock``, every locked entry)."""
    specs = {s.key: s for s in ctx.matrix.expand_all()}
    lk = lockfile.Lock.load(ctx.lock_path)
    items = list(_entries(ctx, lk, use_lock))
    notes = [f"{k}: not in {Path(ctx.matrix.path).name} any more: skipped" for k, _ in items if k not in specs]
    items = [(k, e) for k, e in items if k in specs]
    if not items and not notes:
        notes.append("no passed entries in the report: nothing to judge")
    latest = latest_releases(ctx, sorted({specs[k].minor for k, _ in items}), python_org_api, say)
    plans = [
        report_pins(e, specs[k], lk, latest) if isinstance(e, EntryResult) else lock_pins(k, e, specs[k], lk, latest)
        for k, e in items
    ]
    archive = Archive(_needs(plans))
    for d in sorted({(p.spec.distro.mirror, p.spec.distro.suite) for p in plans}):
        say(f"reading {d[0]}'s {d[1]}, {d[1]}-updates and {d[1]}-security package indexes")
    out = tuple(judge(p, archive) for p in plans)
    return OutdatedResult(out, tuple(archive.read), (*notes, *archive.notes))


def table(result: OutdatedResult) -> list[str]:
    """The result as a table: one row per entry, one more per further finding or note."""
    rows = [("ENTRY", "CPYTHON", "STATUS", "WHY")]
    for e in result.entries:
        why = e.findings[0].sentence() if e.findings else f"current ({e.checked} Debian packages checked)"
        rows.append((e.key, e.version, "stale" if e.stale else "current", why))
        rows += [("", "", "", f.sentence()) for f in e.findings[1:]]
        rows += [("", "", "", f"note: {n}") for n in e.notes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
    stale = sum(e.stale for e in result.entries)
    lines.append(f"{stale} of {len(result.entries)} entr{'y' if len(result.entries) == 1 else 'ies'} stale")
    lines += [f"note: {n}" for n in result.notes]
    return [line.rstrip() for line in lines]
