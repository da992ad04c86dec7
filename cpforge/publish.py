"""Publish images that passed their smoke test: per-arch tags, multi-arch indexes, SBOMs.

Tags (for repository REGISTRY/NAMESPACE/python; `<sfx>` is the profile's tag suffix, `-quick` for quick):
  per architecture, exact   3.13.5-freethreaded-trixie-amd64<sfx>   immutable: refused if it moves
  per architecture, moving  3.13-freethreaded-trixie-amd64<sfx>
  multi-arch, exact         3.13.5-freethreaded-trixie<sfx>         platforms may be added, never changed
  multi-arch, moving        3.13-freethreaded-trixie<sfx>, 3.13-freethreaded<sfx>, and aliases
                            3.13<sfx> (default), 3.13t<sfx> (freethreaded), 3.13t-jit<sfx> (freethreaded-jit)
Every multi-arch tag is a manifest list whose members were verified to exist first. Nothing that did
not pass its smoke test, no longer exists locally under the report's image id, has a report tag that
points elsewhere, or whose architecture is not the entry's is pushed (checked again right before each
push). Manifest lists are merged, never replaced, and read back after each write: parallel publishers
(one CI job per architecture) retry a lost update instead of dropping each other's platforms.

CI fan-out (build.yml) splits the two halves: each per-entry job pushes its image with `lists=False`
(per-arch tags and SBOM only), and one fan-in job, after all of them, runs `publish_lists`, which
needs no engine: it writes a group's lists only once every selected member's per-arch exact tag is
in the registry, so no list ever names a subset of the platforms that were meant to be there.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .builders import Holders
from .engine import Engine, short_ref
from .errors import PublishError as PublishError
from .fsutil import atomic_write_bytes
from .matrix import BuildSpec
from .progress import Progress, fmt_seconds
from .registry import (
    MANIFEST_LIST_V2,
    MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    Registry,
    RegistryError,
    credentials_for,
    parse_reference,
)
from .report import EntryResult, Report

SBOM_TYPE = "application/vnd.cyclonedx+json"
INDEX_ATTEMPTS = 8  # writes of one group's manifest lists before a lost update is an error
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


@dataclass
class PublishResult:
    pushed: list[str] = field(default_factory=list)  # tags that changed
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "entry: why"
    sboms: dict[str, str] = field(default_factory=dict)  # entry key -> sbom file
    planned: list[str] = field(default_factory=list)  # dry run: what would happen
    deferred: list[str] = field(default_factory=list)  # exact lists left to `publish_lists` (lists=False)


def arch_tags(spec: BuildSpec) -> tuple[str, list[str]]:
    sfx = spec.profile.tag_suffix
    d, a = spec.distro.name, spec.platform.arch
    return f"{spec.version}-{spec.variant.name}-{d}-{a}{sfx}", [f"{spec.minor}-{spec.variant.name}-{d}-{a}{sfx}"]


def index_tags(spec: BuildSpec) -> tuple[str, list[str]]:
    """The exact manifest list tag and the moving ones. An opt-in distro (e.g. bullseye, for old CI
    runners) gets only its distro-qualified tags: `3.14`, `3.14t` and `3.14-default` stay with the
    distros the matrix builds by default, whichever job publishes last."""
    sfx, v, m, d = spec.profile.tag_suffix, spec.variant.name, spec.minor, spec.distro.name
    if spec.distro.opt_in:
        return f"{spec.version}-{v}-{d}{sfx}", [f"{m}-{v}-{d}{sfx}"]
    moving = [f"{m}-{v}-{d}{sfx}", f"{m}-{v}{sfx}"]
    alias = {"default": f"{m}{sfx}", "freethreaded": f"{m}t{sfx}", "freethreaded-jit": f"{m}t-jit{sfx}"}.get(v)
    if alias:
        moving.append(alias)
    return f"{spec.version}-{v}-{d}{sfx}", moving


# ------------------------------------------------------------------------------------------ SBOM

SBOM_PROBE = r"""
import decimal, json, pyexpat, sqlite3, ssl
print(json.dumps({
    "expat": pyexpat.EXPAT_VERSION.split("_", 1)[-1],
    "mpdecimal": decimal.__libmpdec_version__,
    "sqlite": sqlite3.sqlite_version,
    "openssl": ssl.OPENSSL_VERSION,
}))
"""


def sbom(engine: Engine, image: str, spec: BuildSpec) -> dict[str, Any]:
    """A CycloneDX 1.5 SBOM: the image's Debian packages, CPython, and what CPython bundles."""
    plat = spec.platform.name
    dpkg = engine.run(
        image, ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\t${source:Package}\n"], platform=plat
    )
    probe = engine.run(image, ["python3", "-c", SBOM_PROBE], platform=plat)
    if dpkg.exit_code != 0 or probe.exit_code != 0:
        raise PublishError(f"cannot inventory {spec.key} for its SBOM: {dpkg.stderr or probe.stderr}")
    facts = json.loads(probe.stdout)
    suite_version = {"bookworm": "12", "trixie": "13", "bullseye": "11"}.get(spec.distro.suite, spec.distro.suite)
    components: list[dict[str, Any]] = []
    for line in sorted(dpkg.stdout.splitlines()):
        name, version, arch, source = ([*line.split("\t"), "", "", "", ""])[:4]
        if not name:
            continue
        components.append(
            {
                "type": "library" if name.startswith("lib") else "application",
                "bom-ref": f"deb:{name}@{version}",
                "name": name,
                "version": version,
                "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-{suite_version}",
                "properties": [{"name": "debian:source", "value": source or name}],
            }
        )
    cpython_ref = f"cpython@{spec.version}"
    bundled = [
        {
            "type": "library",
            "bom-ref": f"expat@{facts['expat']}",
            "name": "expat",
            "version": facts["expat"],
            "purl": f"pkg:github/libexpat/libexpat@R_{facts['expat'].replace('.', '_')}",
            "description": "bundled in CPython (Modules/expat), used by pyexpat",
        },
        {
            "type": "library",
            "bom-ref": "hacl-star",
            "name": "HACL*",
            "version": f"as bundled in CPython {spec.version}",
            "purl": "pkg:github/hacl-star/hacl-star",
            "description": "bundled in CPython (Modules/_hacl): hashlib's builtin hashes",
        },
    ]
    if "libmpdec" not in " ".join(c["name"] for c in components):
        bundled.append(
            {
                "type": "library",
                "bom-ref": f"mpdecimal@{facts['mpdecimal']}",
                "name": "mpdecimal",
                "version": facts["mpdecimal"],
                "purl": f"pkg:generic/mpdecimal@{facts['mpdecimal']}",
                "description": "bundled in CPython (Modules/_decimal/libmpdec)",
            }
        )
    cpython = {
        "type": "application",
        "bom-ref": cpython_ref,
        "name": "cpython",
        "version": spec.version,
        "purl": f"pkg:generic/cpython@{spec.version}?download_url=https://www.python.org/ftp/python/"
        f"{spec.version}/{spec.source.filename}",
        "hashes": [{"alg": "SHA-256", "content": spec.source.sha256}],
        "properties": [
            {"name": "cpforge:configure-flags", "value": " ".join(spec.configure_flags)},
            {"name": "cpforge:variant", "value": spec.variant.name},
            {"name": "cpforge:sqlite", "value": facts["sqlite"]},
            {"name": "cpforge:openssl", "value": facts["openssl"]},
        ],
        "components": bundled,
    }
    created = datetime.fromtimestamp(spec.epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.UUID(hashlib.sha256(image.encode()).hexdigest()[:32])}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "cpforge"}]},
            "component": {"type": "container", "bom-ref": image, "name": f"python:{spec.id}", "version": image},
        },
        "components": [cpython, *components],
        "dependencies": [{"ref": image, "dependsOn": [cpython_ref, *(c["bom-ref"] for c in components)]}],
    }


# ------------------------------------------------------------------------------------------ publish


@dataclass(frozen=True)
class Candidate:
    spec: BuildSpec
    image_id: str
    arch: str
    engine: Engine  # the engine that holds the image (the one that built it): it is pushed from there


def local_problem(engine: Engine, spec: BuildSpec, res: EntryResult) -> str | None:
    """Why the report's image of ``spec`` may not be pushed as it is on the engine now, or None:
    the image must still exist under the very id the report names, every tag the report gave it
    must still point at it, and it must be the entry's architecture and carry the entry's label."""
    image = res.image_id or ""
    actual = engine.image_id(image) if image else None
    if actual is None:
        return f"image {short_ref(image) or '(none)'} no longer exists on the engine"
    if actual != image:
        return f"the report names image {short_ref(image)}, but the engine resolves it to {short_ref(actual)}"
    for tag in res.tags:
        now = engine.image_id(tag)
        if now != image:
            where = f"image {short_ref(now)}" if now else "nothing"
            return f"tag {tag} points to {where}, not the report's image {short_ref(image)}"
    info = engine.inspect_image(image)
    labels = (info.get("Config") or {}).get("Labels") or {}
    if info.get("Architecture") != spec.platform.arch:
        return f"image architecture is {info.get('Architecture')}, not {spec.platform.arch}"
    if labels.get("io.cpforge.entry") != spec.id:
        return f"image label io.cpforge.entry is {labels.get('io.cpforge.entry')!r}, not {spec.id!r}"
    return None


def _rebuild_hint(spec: BuildSpec) -> str:
    return f"rebuild it (`invoke build --filter '{spec.id}' --profile {spec.profile.name}`), then publish"


def _candidates(holders: Holders, report: Report, specs: Sequence[BuildSpec], result: PublishResult) -> list[Candidate]:
    """Only what passed, still exists and is what it claims to be; the rest is skipped, with why."""
    good: list[Candidate] = []
    for spec in specs:
        res = report.entries.get(spec.key)
        engine = holders.of(res) if res is not None and res.passed else None
        if res is None:
            why: str | None = "not built (no entry in the report)"
        elif engine is None:
            why = f"smoke test {res.status}: {(res.problems or ['?'])[0].splitlines()[0][:160]}"
        else:
            why = local_problem(engine, spec, res)
            why = f"{why}; {_rebuild_hint(spec)}" if why else None
        if why or res is None or engine is None:
            result.skipped.append(f"{spec.key}: {why}")
            continue
        good.append(Candidate(spec, res.image_id or "", spec.platform.arch, engine))
    return good


def publish(
    engine: Engine | Holders,
    report: Report,
    specs: Sequence[BuildSpec],
    target: str,
    *,
    out: Path,
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    push_attempts: int = 3,
    progress: Progress | None = None,
    lists: bool = True,
) -> PublishResult:
    """Push the images of ``specs`` that passed (per-arch tags), then their manifest lists and SBOMs.
    Each image is pushed from the engine that holds it (``engine``: one engine, or the engines the
    report records, cpforge.builders.Holders); manifest lists follow once every member is verified.
    ``progress`` (optional) gets a line per image (pushing, pushed or unchanged, with the time) and
    per group of manifest lists. ``lists=False`` writes no manifest list: a fan-in `publish_lists`
    does, once every platform is pushed (the groups are named in ``deferred``)."""
    host, ns = parse_reference(target)
    name = specs[0].repository.rsplit("/", 1)[-1] if specs else "python"
    repo = f"{ns}/{name}" if ns else name
    creds = credentials_for(host)
    reg = Registry(host, insecure=insecure, credentials=creds)
    result = PublishResult()
    good = _candidates(Holders.wrap(engine), report, specs, result)
    if not good:
        return result
    reg.ping()
    remote_exact = _refuse_moving_exact_tags(reg, repo, good, force)
    pusher = _Pusher(reg, repo, report, out, result, dry_run, push_attempts, creds, progress)
    members: dict[str, Member] = {}  # exact arch tag -> what the registry now serves under it
    for c in good:
        got = pusher.push(c, remote_exact[arch_tags(c.spec)[0]])
        if got is not None:
            members[arch_tags(c.spec)[0]] = got
    for group, group_members in _groups(repo, good).items():
        ours = {c.arch: members[t] for c in group_members if (t := arch_tags(c.spec)[0]) in members}
        if not ours:
            continue
        if not lists:
            result.deferred.append(group.exact)
            continue
        _write_lists(reg, group, ours, result, dry_run, progress)
    return result


def _write_lists(
    reg: Registry,
    group: IndexGroup,
    ours: Mapping[str, Member],
    result: PublishResult,
    dry_run: bool,
    progress: Progress | None,
) -> None:
    """`update_index` for one group, with its progress line and its tags in ``result``."""
    t0 = time.monotonic()
    outcome = update_index(reg, group, ours, dry_run=dry_run)
    if progress and not dry_run:
        retried = f" after {outcome.attempts} attempts (another publisher wrote too)" if outcome.attempts > 1 else ""
        state = "pushed" if outcome.pushed else "unchanged"
        progress.say(
            f"✓ {group.exact}: manifest lists {state} [{', '.join(outcome.archs)}] "
            f"in {fmt_seconds(time.monotonic() - t0)}{retried}"
        )
    result.pushed.extend(outcome.pushed)
    result.unchanged.extend(outcome.unchanged)
    result.planned.extend(outcome.planned)


def _groups(repo: str, good: Sequence[Candidate]) -> dict[IndexGroup, list[Candidate]]:
    """Candidates by the manifest lists they belong to (one version, variant, distro and profile)."""
    groups: dict[IndexGroup, list[Candidate]] = defaultdict(list)
    for c in good:
        groups[IndexGroup.for_spec(repo, c.spec)].append(c)
    return groups


# ------------------------------------------------------------------------------------------ fan-in


def publish_lists(
    specs: Sequence[BuildSpec],
    target: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    progress: Progress | None = None,
) -> PublishResult:
    """Write the manifest lists of ``specs`` from what the registry holds (the fan-in after
    per-entry `publish(..., lists=False)` jobs): no engine, no report. A group's lists are written
    only when every selected member's per-arch exact tag is in the registry as a single-image
    manifest; otherwise its lists are left as they are and each missing member is in ``skipped``.
    As in `publish`, a platform the exact list names is never moved to another digest unless
    ``force``, and the lists are merged with what they hold and read back (`update_index`)."""
    host, ns = parse_reference(target)
    name = specs[0].repository.rsplit("/", 1)[-1] if specs else "python"
    repo = f"{ns}/{name}" if ns else name
    reg = Registry(host, insecure=insecure, credentials=credentials_for(host))
    result = PublishResult()
    if not specs:
        return result
    reg.ping()
    grouped: dict[IndexGroup, list[BuildSpec]] = defaultdict(list)
    for spec in specs:
        grouped[IndexGroup.for_spec(repo, spec)].append(spec)
    complete: dict[IndexGroup, dict[str, Member]] = {}
    refusals: list[str] = []
    for group, members in grouped.items():
        found = _published(reg, group)
        missing = [s for s in members if s.platform.arch not in found]
        for s in missing:
            result.skipped.append(
                f"{s.key}: {reg.host}/{repo}:{arch_tags(s)[0]} is not in the registry, so the manifest lists "
                f"{', '.join(group.tags)} were not written (they keep what they held)"
            )
        if missing:
            continue
        complete[group] = ours = {s.platform.arch: found[s.platform.arch] for s in members}
        listed = list_members(reg.manifest(repo, group.exact)) if not force else {}
        refusals += [
            f"{reg.host}/{repo}:{group.exact} lists {arch} as {listed[arch].digest}, which is not the published "
            f"{group.arch_prefix}{arch}{group.suffix} ({m.digest})"
            for arch, m in sorted(ours.items())
            if arch in listed and listed[arch].digest != m.digest
        ]
    if refusals:
        raise PublishError(
            "refusing to move exact tags:\n" + "\n".join(f"  - {r}" for r in refusals),
            hint="exact tags are immutable; publish with --force only if you mean to replace them",
        )
    for group, ours in complete.items():
        _write_lists(reg, group, ours, result, dry_run, progress)
    return result


def _refuse_moving_exact_tags(
    reg: Registry, repo: str, good: Sequence[Candidate], force: bool
) -> dict[str, tuple[str, str, bytes] | None]:
    """Exact tags must not move (unless --force). Returns what each exact arch tag holds now."""
    refusals: list[str] = []
    remote_exact: dict[str, tuple[str, str, bytes] | None] = {}
    for c in good:
        exact, _ = arch_tags(c.spec)
        remote = reg.manifest(repo, exact)
        remote_exact[exact] = remote
        if remote is not None and _config_digest(remote[2]) != c.image_id and not force:
            refusals.append(
                f"{reg.host}/{repo}:{exact} already points to {remote[0]} (image "
                f"{_config_digest(remote[2])[:19]}), this build is image {c.image_id[:19]}"
            )
    for group, members in _groups(repo, good).items():
        listed = list_members(reg.manifest(repo, group.exact)) if not force else {}
        for c in members:
            ex = remote_exact.get(arch_tags(c.spec)[0])
            if c.arch in listed and ex is not None and listed[c.arch].digest != ex[0]:
                refusals.append(
                    f"{reg.host}/{repo}:{group.exact} lists {c.arch} as {listed[c.arch].digest}, "
                    f"which is not the published {arch_tags(c.spec)[0]}"
                )
    if refusals:
        raise PublishError(
            "refusing to move exact tags:\n" + "\n".join(f"  - {r}" for r in refusals),
            hint="exact tags are immutable; publish with --force only if you mean to replace them",
        )
    return remote_exact


@dataclass
class _Pusher:
    """Pushes one candidate's image (from its own engine), its moving arch tag and its SBOM."""

    reg: Registry
    repo: str
    report: Report
    out: Path
    result: PublishResult
    dry_run: bool
    push_attempts: int
    creds: Credentials | None
    progress: Progress | None

    def push(self, c: Candidate, remote: tuple[str, str, bytes] | None) -> Member | None:
        """Push ``c`` unless the registry already has it; return what the registry serves, or None
        (dry run of an image not pushed yet)."""
        exact, moving = arch_tags(c.spec)
        ref = f"{self.reg.host}/{self.repo}:{exact}"
        t0 = time.monotonic()
        if remote is not None and _config_digest(remote[2]) == c.image_id:
            self.result.unchanged.append(exact)
            self._done(c, f"unchanged {ref} (checked in {fmt_seconds(time.monotonic() - t0)})")
        elif self.dry_run:
            self.result.planned.append(f"push {c.spec.key} → {ref}")
        else:
            self._recheck(c)
            if self.progress:
                self.progress.start(c.spec.key, f"pushing → {ref}")
            c.engine.tag(c.image_id, ref)
            auth = {"username": self.creds.username, "password": self.creds.password} if self.creds else None
            c.engine.push(ref, auth, retries=self.push_attempts)
            self.result.pushed.append(exact)
            self._done(c, f"pushed {ref} in {fmt_seconds(time.monotonic() - t0)}")
        if self.dry_run and remote is None:
            return None
        got = self.reg.manifest(self.repo, exact)
        if got is None:
            raise PublishError(f"{ref} is missing right after its push", hint="retry the publish")
        if _config_digest(got[2]) != c.image_id and not self.dry_run:
            raise PublishError(
                f"{ref} serves image {_config_digest(got[2])[:19]} right after cpforge pushed {c.image_id[:19]}: "
                "another publisher pushed the same exact tag at the same time",
                hint="publish each entry from one place only; then publish again",
            )
        for tag in moving:
            _put_if_changed(self.reg, self.repo, tag, got[2], got[1], self.result, self.dry_run)
        self._sbom(c, got)
        return Member(c.arch, got[0], len(got[2]), got[1] or MANIFEST_V2)

    def _recheck(self, c: Candidate) -> None:
        """Right before the push: the image is still the verified one (nothing unverified is pushed)."""
        res = self.report.entries[c.spec.key]
        why = local_problem(c.engine, c.spec, res)
        if why:
            raise PublishError(
                f"{c.spec.key} changed on the engine while publishing: {why}; it was not pushed",
                hint=_rebuild_hint(c.spec),
            )

    def _done(self, c: Candidate, text: str) -> None:
        if self.progress:
            self.progress.done(c.spec.key, True, text)

    def _sbom(self, c: Candidate, got: tuple[str, str, bytes]) -> None:
        """The SBOM next to the image: a file, and an OCI artifact tagged sha256-<digest>.sbom."""
        doc = sbom(c.engine, c.image_id, c.spec)
        body = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        path = atomic_write_bytes(self.out / "sbom" / f"{c.spec.id}.{c.spec.profile.name}.cdx.json", body)
        self.result.sboms[c.spec.key] = str(path)
        if not self.dry_run:
            _push_sbom(self.reg, self.repo, body, got[0], got[1], len(got[2]), self.result)


# ------------------------------------------------------------------------------------------ manifest lists


@dataclass(frozen=True)
class Member:
    """One platform of a manifest list: a single-image manifest in the repository."""

    arch: str
    digest: str
    size: int
    media_type: str = MANIFEST_V2

    def entry(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": self.digest,
            "platform": {"architecture": self.arch, "os": "linux"},
        }


@dataclass(frozen=True)
class IndexGroup:
    """The manifest lists of one version, variant, distro and profile, and where their members live."""

    repo: str
    arch_prefix: str  # the per-arch exact tags are <arch_prefix><arch><suffix>
    suffix: str
    tags: tuple[str, ...]  # the exact list first, then the moving ones

    @classmethod
    def for_spec(cls, repo: str, spec: BuildSpec) -> IndexGroup:
        exact, moving = index_tags(spec)
        prefix = f"{spec.version}-{spec.variant.name}-{spec.distro.name}-"
        return cls(repo, prefix, spec.profile.tag_suffix, (exact, *moving))

    @property
    def exact(self) -> str:
        return self.tags[0]

    def arch_of(self, tag: str) -> str | None:
        """The architecture of a per-arch exact tag of this group, or None for any other tag."""
        if not (tag.startswith(self.arch_prefix) and tag.endswith(self.suffix)):
            return None
        arch = tag[len(self.arch_prefix) : len(tag) - len(self.suffix)]
        return arch if re.fullmatch(r"[a-z0-9_]+", arch) else None


@dataclass(frozen=True)
class IndexOutcome:
    pushed: tuple[str, ...]  # tags this process wrote
    unchanged: tuple[str, ...]
    planned: tuple[str, ...]  # dry run
    archs: tuple[str, ...]  # the platforms the lists hold
    attempts: int  # 1 unless another publisher's write was lost and merged again


def list_members(manifest: tuple[str, str, bytes] | None) -> dict[str, Member]:
    """The platforms a manifest list names (architecture -> member); {} for anything else."""
    if manifest is None:
        return {}
    try:
        doc = json.loads(manifest[2])
        entries = doc.get("manifests") if doc.get("mediaType", manifest[1]) in (MANIFEST_LIST_V2, OCI_INDEX) else None
        return {
            str(m["platform"]["architecture"]): Member(
                str(m["platform"]["architecture"]), str(m["digest"]), int(m["size"]), str(m["mediaType"])
            )
            for m in entries or []
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def index_body(members: Iterable[Member]) -> bytes:
    entries = [m.entry() for m in sorted(members, key=lambda m: m.arch)]
    doc = {"schemaVersion": 2, "mediaType": MANIFEST_LIST_V2, "manifests": entries}
    return (json.dumps(doc, indent=3, sort_keys=True) + "\n").encode()


def _published(reg: Registry, group: IndexGroup) -> dict[str, Member]:
    """The group's per-arch exact tags in the registry now: the platforms its lists must name."""
    found: dict[str, Member] = {}
    for tag in reg.tags(group.repo):
        arch = group.arch_of(tag)
        got = reg.manifest(group.repo, tag) if arch else None
        if arch and got is not None and got[1] in (MANIFEST_V2, OCI_MANIFEST):
            found[arch] = Member(arch, got[0], len(got[2]), got[1])
    return found


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0.05, 0.25) * attempt)  # noqa: S311 - jitter, not cryptography


def update_index(
    reg: Registry,
    group: IndexGroup,
    ours: Mapping[str, Member],
    *,
    dry_run: bool = False,
    attempts: int = INDEX_ATTEMPTS,
    pause: Callable[[int], None] = _backoff,
) -> IndexOutcome:
    """Point every tag of ``group`` at one manifest list holding ``ours``, every platform the exact
    list already names, and every platform that has a per-arch exact tag: merge, never replace.

    The registry API has no compare-and-swap, so another publisher (e.g. the arm64 job while this
    is the amd64 one) can overwrite a list between our read and our write. So after writing, each
    tag is read back: it must name ``ours`` and every per-arch exact tag published by then. If not,
    the update was lost: pause (random, growing), read, merge and write again; after ``attempts``
    tries, a RegistryError. Whichever publisher writes last verifies last, and the per-arch tag of
    every other publisher was pushed before that one wrote its list, so the last list has them all.
    """
    written: set[str] = set()
    lost: list[str] = []
    for attempt in range(1, attempts + 1):
        published = _published(reg, group)
        listed = list_members(reg.manifest(group.repo, group.exact))
        wanted = {**listed, **published, **ours}
        for arch in sorted(set(listed) - set(published) - set(ours)):
            if reg.manifest(group.repo, listed[arch].digest) is None:
                raise PublishError(
                    f"{reg.host}/{group.repo}:{group.exact} lists {arch} as {listed[arch].digest}, which is not "
                    "in the repository; no list was written",
                    hint="publish that platform again (or delete the broken list), then publish",
                )
        body = index_body(wanted.values())
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        planned: dict[str, str] = {}
        for tag in group.tags:
            current = reg.manifest(group.repo, tag)
            if current is not None and current[0] == digest:
                continue
            if dry_run:
                planned[tag] = f"point {group.repo}:{tag} at {digest} ({', '.join(sorted(wanted))})"
            else:
                reg.put_manifest(group.repo, tag, body, MANIFEST_LIST_V2)
                written.add(tag)
        if dry_run:
            unchanged = tuple(t for t in group.tags if t not in planned)
            return IndexOutcome((), unchanged, tuple(planned.values()), tuple(sorted(wanted)), attempt)
        lost = _lost_platforms(reg, group, {**_published(reg, group), **ours})
        if not lost:
            pushed = tuple(t for t in group.tags if t in written)
            unchanged = tuple(t for t in group.tags if t not in written)
            return IndexOutcome(pushed, unchanged, (), tuple(sorted(wanted)), attempt)
        if attempt < attempts:
            pause(attempt)
    raise RegistryError(
        f"{reg.host}/{group.repo}: another publisher kept overwriting the manifest lists; after {attempts} "
        "attempts still " + "; ".join(lost[:6]),
        hint="publish again when the other publisher is done: publishing is idempotent and keeps every platform",
    )


def _lost_platforms(reg: Registry, group: IndexGroup, required: Mapping[str, Member]) -> list[str]:
    """Each (tag, platform) that should be in the group's lists and is not, as a phrase."""
    out: list[str] = []
    for tag in group.tags:
        listed = list_members(reg.manifest(group.repo, tag))
        for arch, member in sorted(required.items()):
            if arch not in listed or listed[arch].digest != member.digest:
                out.append(f"{tag} lacks {arch} ({member.digest[:19]})")
    return out


def _config_digest(manifest: bytes) -> str:
    try:
        return str(json.loads(manifest).get("config", {}).get("digest", ""))
    except (json.JSONDecodeError, AttributeError):
        return ""


def _put_if_changed(
    reg: Registry, repo: str, tag: str, body: bytes, media_type: str, result: PublishResult, dry_run: bool
) -> None:
    current = reg.manifest(repo, tag)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    if current is not None and current[0] == digest:
        result.unchanged.append(tag)
    elif dry_run:
        result.planned.append(f"point {repo}:{tag} at {digest}")
    else:
        reg.put_manifest(repo, tag, body, media_type)
        result.pushed.append(tag)


def _push_sbom(
    reg: Registry,
    repo: str,
    body: bytes,
    subject_digest: str,
    subject_type: str,
    subject_size: int,
    result: PublishResult,
) -> None:
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": {"mediaType": EMPTY_CONFIG, "digest": reg.put_blob(repo, config), "size": len(config)},
        "layers": [
            {
                "mediaType": SBOM_TYPE,
                "digest": reg.put_blob(repo, body),
                "size": len(body),
                "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
            }
        ],
        "subject": {"mediaType": subject_type, "digest": subject_digest, "size": subject_size},
    }
    raw = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    tag = subject_digest.replace(":", "-") + ".sbom"
    try:
        _put_if_changed(reg, repo, tag, raw, OCI_MANIFEST, result, dry_run=False)
    except RegistryError as exc:
        result.skipped.append(f"sbom {tag}: registry refused the artifact ({exc.message[:120]})")
