"""`invoke update`: move each minor in matrix.yaml to its newest patch release that can be fetched.

Where releases are listed, in order:
  1. python.org's release metadata (its JSON API, `<api>/release/` and `<api>/release_file/?release=ID`:
     each release's date and each file's sha256 and sigstore bundle URL). The API's base URL is
     `--python-org-api`, else $CPFORGE_PYTHON_ORG_API, else python.org's; `off` skips it.
  2. Only where python.org cannot be reached: a Debian mirror's `Sources` indexes
     (`dists/<suite>/main/source/Sources.xz` for DEBIAN_SUITES), whose `pythonX.Y` source packages
     carry python.org's tarball as their `.orig.tar.xz`, with its sha256. The mirrors are the matrix's
     `debian+URL` source mirrors (else its distros' mirrors). Debian gives no release day, so the
     newest mtime of the files inside the tarball stands in for it (3.14.7's is 2026-08-05, 3.13.5's
     2025-06-11: python.org's own day).

Before anything changes, each newer release (newest first) is downloaded through cpforge.sources into
the sources cache and checked against the listed sha256. A release that is listed but cannot be
fetched (HTTP 404 on every mirror) is reported and the next-newest is tried; when none can be
fetched the minor stays as it is. A hash that does not match, an unreachable mirror or a malformed
index is an error and changes nothing.

matrix.yaml is rewritten in place: only the `version`, `sha256` and `released` values change, spliced
into the text at the positions PyYAML's composer reports, so comments, order and layout stay byte for
byte. Then the Dockerfiles are re-rendered.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import lzma
import os
import re
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from . import api
from . import debian_index as di
from . import matrix as mx
from .errors import CpforgeError, MatrixError
from .errors import UpdateError as UpdateError
from .fsutil import atomic_write_text
from .sources import Sources, candidates, sha256_file

PYTHON_ORG_API = "https://www.python.org/api/v2/downloads"
API_ENV = "CPFORGE_PYTHON_ORG_API"
# Newest first: experimental and sid carry a release first, forky (testing) a little later, trixie
# (stable) only the release it shipped with. A suite a mirror lacks is skipped with a note.
DEBIAN_SUITES = ("experimental", "sid", "forky", "trixie")
TIMEOUT = 60
MINOR_RE = re.compile(r"^3\.\d+$")
RELEASE_NAME_RE = re.compile(r"^Python (3\.\d+\.\d+)$")
T = TypeVar("T")
GONE = ("HTTP 404", "HTTP 410", "not found")  # a mirror's answers that mean "not there"


# --------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Release:
    """A patch release as a listing names it."""

    version: str
    sha256: str
    released: date | None  # None: from Debian, to be read from the tarball
    origin: str  # "python.org" or "Debian sid"
    sigstore: str | None = None  # python.org's sigstore bundle URL
    problem: str | None = None  # listed, but without a tarball and sha256 to fetch it by


@dataclass(frozen=True)
class Listing:
    source: str  # where the metadata came from
    releases: Mapping[str, tuple[Release, ...]]  # minor → its final releases, newest first
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MinorUpdate:
    """What the newest fetchable release of one minor is, relative to the matrix."""

    minor: str
    current: mx.PythonVersion
    source: str
    newest: Release | None = None  # the newest fetchable, verified release newer than current
    released: date | None = None  # its release day
    tarball: Path | None = None  # the verified copy in the sources cache
    unfetchable: tuple[tuple[str, str], ...] = ()  # newer listed releases: (version, why not)

    @property
    def available(self) -> bool:
        return self.newest is not None


@dataclass(frozen=True)
class UpdateResult:
    updates: tuple[MinorUpdate, ...]
    matrix_path: Path
    diff: str = ""  # unified diff of matrix.yaml
    dockerfiles: tuple[str, ...] = ()  # re-rendered (or, with check, to be re-rendered)
    written: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def available(self) -> bool:
        return any(u.available for u in self.updates)


def version_key(version: str) -> tuple[int, int, int, int, int]:
    """Orders CPython versions: 3.14.0a1 < 3.14.0b2 < 3.14.0rc1 < 3.14.0 < 3.14.1."""
    m = mx.VERSION_RE.match(version)
    if m is None:
        raise ValueError(f"not a CPython version: {version!r}")
    stage = {"a": 0, "b": 1, "rc": 2, None: 3}[m.group(5)]
    serial = int(m.group(4)[len(m.group(5)) :]) if m.group(4) else 0
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), stage, serial


# ----------------------------------------------------------------------------------- transport


def http_get(url: str, timeout: float = TIMEOUT) -> tuple[int, bytes, str]:
    """(HTTP status, body, reason). Status 0: the server could not be reached at all."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) URLs from config
            return int(resp.status), resp.read(), "ok"
    except urllib.error.HTTPError as exc:
        return exc.code, b"", f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return 0, b"", f"unreachable ({getattr(exc, 'reason', exc)})"


def fetch_index(url: str) -> str | None:
    """A (.xz-compressed) Debian index as text; None when the mirror has no such file (404/410)."""
    status, body, reason = http_get(url)
    if status in (404, 410):
        return None
    if status != 200:
        raise UpdateError(
            f"cannot read the Debian index {url}: {reason}",
            hint="check the network and the mirror URL (matrix.yaml: distros.*.mirror, sources.mirrors)",
        )
    try:
        data = lzma.decompress(body) if url.endswith(".xz") else body
    except lzma.LZMAError as exc:
        raise UpdateError(
            f"the Debian index {url} is not valid xz ({exc})",
            hint="a proxy or a broken mirror answered instead of the index: try another mirror",
        ) from None
    return data.decode("utf-8", "replace")


def parse_index(url: str, text: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(text)
    except di.MalformedIndex as exc:
        raise UpdateError(
            f"the Debian index {url} is malformed: {exc}",
            hint="a proxy or a broken mirror answered instead of the index: try another mirror",
        ) from None


# ---------------------------------------------------------------------------------- python.org


def api_base(option: str | None = None) -> str | None:
    """python.org's API base URL: the option, else $CPFORGE_PYTHON_ORG_API, else python.org's; None for `off`."""
    value = (option or os.environ.get(API_ENV) or PYTHON_ORG_API).strip()
    return None if value.lower() == "off" else value.rstrip("/")


def _get_list(url: str) -> list[Any] | str:
    """A JSON list from python.org's API (following DRF pages if it paginates), or why it could not
    be read. Raises UpdateError when an answer is not JSON of the expected shape."""
    items: list[Any] = []
    next_url: str | None = url
    while next_url:
        status, body, reason = http_get(next_url)
        if status != 200:
            return f"{next_url}: {reason}"
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise UpdateError(
                f"python.org's API answered {next_url} with something that is not JSON ({exc})",
                hint=f"check --python-org-api / ${API_ENV}, or pass `off` to use the Debian mirror",
            ) from None
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            items += data["results"]
            next_url = data.get("next") or None
        elif isinstance(data, list):
            items += data
            next_url = None
        else:
            raise UpdateError(
                f"python.org's API answered {next_url} with {type(data).__name__}, not a list",
                hint=f"check --python-org-api / ${API_ENV}",
            )
    return items


def _malformed(url: str, problem: str) -> UpdateError:
    return UpdateError(
        f"python.org's release metadata at {url} is malformed: {problem}",
        hint=f"check --python-org-api / ${API_ENV}, or pass `off` to use the Debian mirror",
    )


def _release_day(url: str, raw: Any) -> date | None:
    if raw in (None, ""):
        return None
    try:
        when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise _malformed(url, f"release_date {raw!r} is not an ISO date") from None
    return when.astimezone(UTC).date() if when.tzinfo else when.date()


def _releases(url: str, items: list[Any]) -> list[tuple[str, str, date | None]]:
    """(version, release id, day) of each published final release in python.org's release list."""
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _malformed(url, f"entry {n} has no name")
        m = RELEASE_NAME_RE.match(item["name"].strip())
        if m is None or item.get("pre_release") or item.get("is_published") is False:
            continue
        rid = str(item.get("resource_uri", "")).rstrip("/").rsplit("/", 1)[-1]
        if not rid.isdigit():
            raise _malformed(url, f"{item['name']}: resource_uri {item.get('resource_uri')!r} names no release id")
        out.append((m.group(1), rid, _release_day(url, item.get("release_date"))))
    return out


def _tarball_file(base: str, rid: str, version: str, day: date | None) -> Release | str:
    """The Release python.org's file list gives for Python-<version>.tar.xz, or why it gives none."""
    url = f"{base}/release_file/?release={rid}"
    files = _get_list(url)
    if isinstance(files, str):
        raise UpdateError(f"cannot read python.org's file list {files}", hint="try again, or pass `off`")
    name = f"Python-{version}.tar.xz"
    for f in files:
        if not isinstance(f, dict):
            raise _malformed(url, "a file entry is not an object")
        if str(f.get("url", "")).rsplit("/", 1)[-1] != name:
            continue
        sha = str(f.get("sha256_sum") or "").lower()
        if not mx.SHA256_RE.match(sha):
            return f"python.org lists no sha256 for {name}"
        return Release(version, sha, day, "python.org", str(f.get("sigstore_bundle_file") or "") or None)
    return f"python.org lists no {name} for Python {version}"


def list_python_org(base: str, current: Mapping[str, str]) -> Listing | str:
    """python.org's releases of each minor newer than ``current`` (minor → version), newest first,
    or why python.org cannot be reached. A listed release without a usable tarball entry is kept
    with its problem, so that it is reported as unfetchable."""
    url = f"{base}/release/?is_published=true&pre_release=false&version=3"
    items = _get_list(url)
    if isinstance(items, str):
        return items
    found: dict[str, list[Release]] = {m: [] for m in current}
    for version, rid, day in sorted(_releases(url, items), key=lambda r: version_key(r[0]), reverse=True):
        minor = version.rsplit(".", 1)[0]
        if minor not in current or version_key(version) <= version_key(current[minor]):
            continue
        rel = _tarball_file(base, rid, version, day)
        found[minor].append(rel if isinstance(rel, Release) else Release(version, "", day, "python.org", problem=rel))
    return Listing(f"python.org ({base})", {m: tuple(r) for m, r in found.items()})


# -------------------------------------------------------------------------------------- Debian


def debian_mirrors(ctx: api.Context) -> list[str]:
    """The Debian mirrors to read `Sources` from: the `debian+URL` source mirrors, else the distros'."""
    raw = (*ctx.extra_mirrors, *ctx.matrix.mirrors)
    chosen = [m.removeprefix("debian+").rstrip("/") for m in raw if m.startswith("debian+")]
    return list(dict.fromkeys(chosen or [d.mirror.rstrip("/") for d in ctx.matrix.distros]))


def list_debian(mirrors: Sequence[str], suites: Sequence[str], current: Mapping[str, str]) -> Listing:
    """The releases of each minor newer than ``current`` that the suites' `Sources` indexes list."""
    found: dict[str, dict[str, Release]] = {m: {} for m in current}
    notes: list[str] = []
    read = 0
    for mirror in mirrors:
        for suite in suites:
            url = f"{mirror}/dists/{suite}/main/source/Sources.xz"
            text = fetch_index(url)
            if text is None:
                notes.append(f"{mirror} has no suite {suite} (HTTP 404): skipped")
                continue
            read += 1
            for sr in parse_index(url, text, lambda t: di.python_releases(t, list(current))):
                if version_key(sr.version) <= version_key(current[sr.minor]):
                    continue
                seen = found[sr.minor].setdefault(sr.version, Release(sr.version, sr.sha256, None, f"Debian {suite}"))
                if seen.sha256 != sr.sha256:
                    raise UpdateError(
                        f"Debian's indexes disagree about {sr.filename}: {seen.origin} lists sha256 {seen.sha256}, "
                        f"{suite} at {mirror} lists {sr.sha256}",
                        hint="a mirror is inconsistent or tampered with: try another (--mirror debian+URL)",
                    )
    if not read:
        raise UpdateError(
            f"no Debian mirror has a Sources index for the suites {', '.join(suites)} ({', '.join(mirrors)})",
            hint="add a `debian+URL` mirror under `sources.mirrors` in matrix.yaml, or pass --mirror debian+URL",
        )
    releases = {
        m: tuple(sorted(v.values(), key=lambda r: version_key(r.version), reverse=True)) for m, v in found.items()
    }
    where = f"Debian {', '.join(mirrors)} (Sources of {', '.join(suites)})"
    return Listing(where, releases, tuple(notes))


# ------------------------------------------------------------------------------ fetch and verify


def fetch_release(sources: Sources, release: Release) -> tuple[Path | None, str]:
    """Download ``release`` into the sources cache and verify its sha256 (cpforge.sources does both):
    (path, where it came from), or (None, why not) when it is listed but no mirror has it.

    Raises UpdateError when a mirror's bytes do not match the listed sha256, or no mirror answers."""
    src = mx.Source(version=release.version, sha256=release.sha256, signer=None)
    path = sources.cached_path(src)
    if path.exists() and sha256_file(path) == release.sha256:
        sources.log(f"✓ {src.filename} sha256 ok (in the sources cache)")
        return path, "cache"
    sources.cache_dir.mkdir(parents=True, exist_ok=True)
    attempts: list[tuple[str, str]] = []
    for mirror in sources.mirrors:
        for location in candidates(mirror, src):
            problem = sources._fetch_verified(location, src, path)
            if problem is None:
                sources.log(f"✓ {src.filename} sha256 ok ({location})")
                return path, location
            if problem.startswith("sha256 mismatch"):
                raise UpdateError(
                    f"{location}: {problem}: it is not the {release.version} that {release.origin} lists; "
                    "nothing was changed",
                    hint="the mirror or the release metadata is wrong: do not use this release until they "
                    "agree (try another mirror with --mirror)",
                )
            attempts.append((location, problem))
    why = "; ".join(f"{loc}: {p}" for loc, p in attempts) or "no source mirrors configured"
    if not any(p.startswith(GONE) for _, p in attempts):
        raise UpdateError(
            f"cannot fetch {src.filename} from any source mirror ({why})",
            hint="check the network, or add a reachable mirror under `sources.mirrors` in matrix.yaml / --mirror",
        )
    return None, why


def tarball_day(path: Path) -> date:
    """The newest mtime of the files inside a release tarball, as a UTC day: Debian's stand-in for
    python.org's release date (the release manager builds the tarball on release day)."""
    newest = 0
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                newest = max(newest, int(member.mtime))
    except (tarfile.TarError, OSError, lzma.LZMAError, EOFError) as exc:
        raise UpdateError(f"cannot read {path} as a tarball ({exc})", hint=f"delete {path} and run again") from None
    if newest <= 0:
        raise UpdateError(f"{path} holds no dated files", hint="it is not a CPython release tarball")
    return datetime.fromtimestamp(newest, UTC).date()


def _newest_fetchable(
    sources: Sources, listing: Listing, current: mx.PythonVersion, say: Callable[[str], None], dated: bool
) -> MinorUpdate:
    skipped: list[tuple[str, str]] = []
    for rel in listing.releases.get(current.minor, ()):
        if rel.problem:
            skipped.append((rel.version, rel.problem))
            say(f"! {rel.version}: {rel.problem}; trying the next-newest")
            continue
        say(f"{current.minor}: {rel.version} (listed by {rel.origin}): fetching and verifying it")
        path, where = fetch_release(sources, rel)
        if path is None:
            skipped.append((rel.version, f"listed by {rel.origin}, but cannot be fetched ({where})"))
            say(f"! {rel.version} is listed by {rel.origin}, but cannot be fetched: trying the next-newest")
            continue
        day = rel.released or (tarball_day(path) if dated else None)
        return MinorUpdate(current.minor, current, listing.source, rel, day, path, tuple(skipped))
    return MinorUpdate(current.minor, current, listing.source, unfetchable=tuple(skipped))


def select_versions(matrix: mx.Matrix, minors: Sequence[str]) -> list[mx.PythonVersion]:
    """The matrix's versions of ``minors`` (all when empty). Raises UpdateError for an unknown minor."""
    known = {v.minor: v for v in matrix.versions}
    for m in minors:
        if not MINOR_RE.match(m):
            raise UpdateError(f"--minor {m!r} is not a minor version", hint="write X.Y, e.g. --minor 3.14")
        if m not in known:
            raise UpdateError(
                f"--minor {m}: {matrix.path} has no {m} release (it has {', '.join(known)})",
                hint="update moves the minors the matrix has to newer patch releases; add a new minor to "
                "`versions:` by hand",
            )
    return [known[m] for m in dict.fromkeys(minors)] if minors else list(matrix.versions)


def find(
    ctx: api.Context,
    minors: Sequence[str] = (),
    *,
    python_org_api: str | None = None,
    suites: Sequence[str] = DEBIAN_SUITES,
    say: Callable[[str], None] = print,
    dated: bool = True,
) -> tuple[MinorUpdate, ...]:
    """The newest fetchable, verified patch release of each selected minor newer than the matrix's
    (with ``dated``, also its release day: python.org's, else read from the tarball)."""
    chosen = select_versions(ctx.matrix, minors)
    current = {v.minor: v.version for v in chosen}
    base = api_base(python_org_api)
    listing = list_python_org(base, current) if base else "switched off"
    if isinstance(listing, str):
        say(f"python.org's release metadata: {listing}; reading the Debian mirror's Sources indexes instead")
        listing = list_debian(debian_mirrors(ctx), suites, current)
    for note in listing.notes:
        say(note)
    sources = ctx.sources()
    sources.log = say
    return tuple(_newest_fetchable(sources, listing, v, say, dated) for v in chosen)


# ------------------------------------------------------------------------------ rewrite in place


def _version_fields(text: str, path: str) -> dict[str, dict[str, yaml.ScalarNode]]:
    """version → its `versions:` item's scalar value nodes (with their positions in ``text``)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise MatrixError(f"cannot be parsed ({exc})", path=path) from None
    items = next((v for k, v in getattr(root, "value", ()) if getattr(k, "value", None) == "versions"), None)
    out: dict[str, dict[str, yaml.ScalarNode]] = {}
    for item in getattr(items, "value", ()):
        fields = {k.value: v for k, v in getattr(item, "value", ()) if isinstance(v, yaml.ScalarNode)}
        if "version" in fields:
            out[fields["version"].value] = fields
    return out


def _scalar_text(node: yaml.ScalarNode, value: str, path: str) -> str:
    if node.style in (None, ""):
        return value
    if node.style in ('"', "'"):
        return f"{node.style}{value}{node.style}"
    raise MatrixError(
        f"{value!r} cannot replace a block scalar ({node.style}) in place",
        path=path,
        line=node.start_mark.line + 1,
        hint="write the value on one line, plain or quoted",
    )


def rewrite_matrix(text: str, path: str, changes: Mapping[str, tuple[str, str, date]]) -> str:
    """``text`` with each changed release's `version`, `sha256` and `released` values replaced where
    they stand (changes: old version → (new version, sha256, day)); every other byte stays."""
    nodes = _version_fields(text, path)
    edits: list[tuple[int, int, str]] = []
    for old, (new, sha, day) in changes.items():
        fields = nodes.get(old)
        if fields is None or not {"version", "sha256", "released"} <= set(fields):
            raise MatrixError(f"no `versions:` item with version, sha256 and released for {old}", path=path)
        for key, value in (("version", new), ("sha256", sha), ("released", day.isoformat())):
            node = fields[key]
            edits.append((node.start_mark.index, node.end_mark.index, _scalar_text(node, value, path)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _verified_matrix(text: str, path: str, updates: Sequence[MinorUpdate]) -> mx.Matrix:
    """The rewritten matrix, loaded and checked to say what the updates say (else nothing is written)."""
    m = mx.loads(text, path)
    have = {v.minor: v for v in m.versions}
    for u in updates:
        assert u.newest is not None and u.released is not None
        v = have.get(u.minor)
        if v is None or (v.version, v.sha256, v.released) != (u.newest.version, u.newest.sha256, u.released):
            raise UpdateError(f"rewriting {path} did not yield {u.minor} = {u.newest.version}; nothing was written")
    return m


def _lock_notes(ctx: api.Context, updates: Sequence[MinorUpdate]) -> tuple[str, ...]:
    from . import lock as lockfile

    old = {u.current.sha256 for u in updates}
    lk = lockfile.Lock.load(ctx.lock_path)
    stale = sorted(k for k, e in lk.entries.items() if e.get("inputs", {}).get("source_sha256") in old)
    if not stale:
        return ()
    return (
        f"{ctx.lock_path.name} pins the previous source for {', '.join(stale)}: rebuild, then run `invoke lock` "
        "(a pinned PGO profile is named after its source: a release build trains afresh and lock pins the new one)",
    )


def update(
    ctx: api.Context,
    minors: Sequence[str] = (),
    *,
    check: bool = False,
    python_org_api: str | None = None,
    suites: Sequence[str] = DEBIAN_SUITES,
    say: Callable[[str], None] = print,
) -> UpdateResult:
    """Find, fetch and verify the newest patch releases; unless ``check``, rewrite matrix.yaml in
    place and re-render the Dockerfiles (restoring matrix.yaml if rendering fails)."""
    found = find(ctx, minors, python_org_api=python_org_api, suites=suites, say=say)
    path = Path(ctx.matrix.path)
    moving = [u for u in found if u.newest is not None and u.released is not None]
    if not moving:
        return UpdateResult(found, path)
    old = path.read_text(encoding="utf-8")
    changes = {
        u.current.version: (u.newest.version, u.newest.sha256, u.released) for u in moving if u.newest and u.released
    }
    new = rewrite_matrix(old, str(path), changes)
    new_ctx = dataclasses.replace(ctx, matrix=_verified_matrix(new, str(path), moving))
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path.name}", f"b/{path.name}"
        )
    )
    if check:
        return UpdateResult(found, path, diff, tuple(api.render_dockerfiles(new_ctx, check=True)))
    atomic_write_text(path, new)
    try:
        rendered = api.render_dockerfiles(new_ctx)
    except BaseException:
        atomic_write_text(path, old)
        try:
            api.render_dockerfiles(ctx)
        except CpforgeError:
            pass
        raise
    return UpdateResult(found, path, diff, tuple(rendered), written=True, notes=_lock_notes(ctx, moving))


def summary(result: UpdateResult, check: bool = False) -> list[str]:
    """What happened, as lines to print."""
    out: list[str] = []
    for u in result.updates:
        if u.newest is None:
            why = "no newer release can be fetched" if u.unfetchable else "no newer release is listed"
            out.append(f"{u.minor}: {u.current.version} stays: {why} ({u.source})")
        else:
            sig = f"; sigstore bundle {u.newest.sigstore}" if u.newest.sigstore else ""
            out.append(
                f"{u.minor}: {u.current.version} → {u.newest.version} (released {u.released}, sha256 "
                f"{u.newest.sha256[:16]}…, listed by {u.newest.origin}, verified: {u.tarball}{sig})"
            )
        out += [f"    {v}: {why}" for v, why in u.unfetchable]
    if result.diff:
        out.append(result.diff.rstrip("\n"))
    verb = "would re-render" if check else "re-rendered"
    if result.dockerfiles:
        out.append(f"{verb} {len(result.dockerfiles)} Dockerfile(s):")
        out += [f"    {p}" for p in result.dockerfiles]
    out += list(result.notes)
    if check and result.available:
        out.append(f"an update exists: {result.matrix_path} was not changed (--check)")
    elif result.written:
        out.append(f"wrote {result.matrix_path}")
    elif not result.available:
        out.append(f"{result.matrix_path} is current")
    return out
