"""Publish images that passed their smoke test: per-arch tags, multi-arch indexes, SBOMs.

Tags (for repository REGISTRY/NAMESPACE/python; `<sfx>` is the profile's tag suffix, `-quick` for quick):
  per architecture, exact   3.13.5-freethreaded-trixie-amd64<sfx>   immutable: refused if it moves
  per architecture, moving  3.13-freethreaded-trixie-amd64<sfx>
  multi-arch, exact         3.13.5-freethreaded-trixie<sfx>         platforms may be added, never changed
  multi-arch, moving        3.13-freethreaded-trixie<sfx>, 3.13-freethreaded<sfx>, and aliases
                            3.13<sfx> (default), 3.13t<sfx> (freethreaded), 3.13t-jit<sfx> (freethreaded-jit)
Every multi-arch tag is a manifest list whose members were verified to exist first. Nothing that did
not pass its smoke test, no longer exists locally, or whose architecture is not the entry's is pushed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engine import Engine
from .errors import PublishError as PublishError
from .matrix import BuildSpec
from .registry import MANIFEST_LIST_V2, OCI_MANIFEST, Registry, RegistryError, credentials_for, parse_reference
from .report import Report

SBOM_TYPE = "application/vnd.cyclonedx+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


@dataclass
class PublishResult:
    pushed: list[str] = field(default_factory=list)  # tags that changed
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "entry: why"
    sboms: dict[str, str] = field(default_factory=dict)  # entry key -> sbom file
    planned: list[str] = field(default_factory=list)  # dry run: what would happen


def arch_tags(spec: BuildSpec) -> tuple[str, list[str]]:
    sfx = spec.profile.tag_suffix
    d, a = spec.distro.name, spec.platform.arch
    return f"{spec.version}-{spec.variant.name}-{d}-{a}{sfx}", [f"{spec.minor}-{spec.variant.name}-{d}-{a}{sfx}"]


def index_tags(spec: BuildSpec) -> tuple[str, list[str]]:
    sfx, v, m, d = spec.profile.tag_suffix, spec.variant.name, spec.minor, spec.distro.name
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


def publish(
    engine: Engine,
    report: Report,
    specs: Sequence[BuildSpec],
    target: str,
    *,
    out: Path,
    dry_run: bool = False,
    force: bool = False,
    insecure: bool = False,
    push_attempts: int = 3,
    say: Callable[[str], None] = print,
) -> PublishResult:
    host, ns = parse_reference(target)
    name = specs[0].repository.rsplit("/", 1)[-1] if specs else "python"
    repo = f"{ns}/{name}" if ns else name
    creds = credentials_for(host)
    reg = Registry(host, insecure=insecure, credentials=creds)
    result = PublishResult()

    # 1. only what passed, still exists, and is what it claims to be
    good: list[Candidate] = []
    for spec in specs:
        res = report.entries.get(spec.key)
        why = None
        if res is None:
            why = "not built (no entry in the report)"
        elif not res.passed:
            why = f"smoke test {res.status}: {(res.problems or ['?'])[0].splitlines()[0][:160]}"
        elif not res.image_id or engine.image_id(res.image_id) is None:
            why = f"image {res.image_id} no longer exists locally"
        else:
            info = engine.inspect_image(res.image_id)
            labels = info.get("Config", {}).get("Labels") or {}
            if info.get("Architecture") != spec.platform.arch:
                why = f"image architecture is {info.get('Architecture')}, not {spec.platform.arch}"
            elif labels.get("io.cpforge.entry") != spec.id:
                why = f"image label io.cpforge.entry is {labels.get('io.cpforge.entry')!r}, not {spec.id!r}"
        if why:
            result.skipped.append(f"{spec.key}: {why}")
            continue
        assert res is not None and res.image_id is not None
        good.append(Candidate(spec, res.image_id, spec.platform.arch))
    if not good:
        return result

    reg.ping()

    # 2. plan: exact tags must not move (unless --force)
    refusals: list[str] = []
    remote_exact: dict[str, tuple[str, str, bytes] | None] = {}
    for c in good:
        exact, _ = arch_tags(c.spec)
        remote = reg.manifest(repo, exact)
        remote_exact[exact] = remote
        if remote is not None and _config_digest(remote[2]) != c.image_id and not force:
            refusals.append(
                f"{host}/{repo}:{exact} already points to {remote[0]} (image "
                f"{_config_digest(remote[2])[:19]}), this build is image {c.image_id[:19]}"
            )
    groups: dict[tuple[str, str, str, str], list[Candidate]] = defaultdict(list)
    for c in good:
        s = c.spec
        groups[(s.version, s.variant.name, s.distro.name, s.profile.name)].append(c)
    for members in groups.values():
        exact_index, _ = index_tags(members[0].spec)
        remote = reg.manifest(repo, exact_index)
        if remote is not None and not force:
            existing = {m["platform"]["architecture"]: m["digest"] for m in json.loads(remote[2]).get("manifests", [])}
            for c in members:
                ex = remote_exact.get(arch_tags(c.spec)[0])
                if c.arch in existing and ex is not None and existing[c.arch] != ex[0]:
                    refusals.append(
                        f"{host}/{repo}:{exact_index} lists {c.arch} as {existing[c.arch]}, "
                        f"which is not the published {arch_tags(c.spec)[0]}"
                    )
    if refusals:
        raise PublishError(
            "refusing to move exact tags:\n" + "\n".join(f"  - {r}" for r in refusals),
            hint="exact tags are immutable; publish with --force only if you mean to replace them",
        )

    # 3. per-architecture images
    digests: dict[str, tuple[str, int, str]] = {}  # exact arch tag -> (digest, size, arch)
    auth = {"username": creds.username, "password": creds.password} if creds else None
    for c in good:
        exact, moving = arch_tags(c.spec)
        remote = remote_exact[exact]
        if remote is not None and _config_digest(remote[2]) == c.image_id:
            result.unchanged.append(exact)
        elif dry_run:
            result.planned.append(f"push {c.spec.key} → {host}/{repo}:{exact}")
        else:
            ref = f"{host}/{repo}:{exact}"
            engine.tag(c.image_id, ref)
            say(f"… pushing {c.spec.key} → {ref}")
            engine.push(ref, auth, retries=push_attempts)
            result.pushed.append(exact)
        if dry_run and remote is None:
            continue
        got = reg.manifest(repo, exact)
        if got is None:
            raise PublishError(f"{host}/{repo}:{exact} is missing right after its push", hint="retry the publish")
        digests[exact] = (got[0], len(got[2]), c.arch)
        for tag in moving:
            _put_if_changed(reg, repo, tag, got[2], got[1], result, dry_run)
        # SBOM next to the image: a file, and an OCI artifact tagged sha256-<digest>.sbom
        doc = sbom(engine, c.image_id, c.spec)
        body = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        path = out / "sbom" / f"{c.spec.id}.{c.spec.profile.name}.cdx.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        result.sboms[c.spec.key] = str(path)
        if not dry_run:
            _push_sbom(reg, repo, body, got[0], got[1], len(got[2]), result)

    # 4. multi-arch indexes, only over manifests verified to exist
    for members in groups.values():
        exact_index, moving = index_tags(members[0].spec)
        entries = []
        remote = reg.manifest(repo, exact_index)
        keep = {}
        if remote is not None:
            keep = {m["platform"]["architecture"]: m for m in json.loads(remote[2]).get("manifests", [])}
        for c in members:
            tag = arch_tags(c.spec)[0]
            if tag not in digests:
                continue
            digest, size, arch = digests[tag]
            keep[arch] = {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": size,
                "digest": digest,
                "platform": {"architecture": arch, "os": "linux"},
            }
        for arch in sorted(keep):
            if reg.manifest(repo, keep[arch]["digest"]) is None:
                raise PublishError(
                    f"{keep[arch]['digest']} ({arch}) is not in {host}/{repo}; no index written",
                    hint="re-run the publish; nothing points at the missing manifest",
                )
            entries.append(keep[arch])
        if not entries:
            continue
        body = (
            json.dumps(
                {"schemaVersion": 2, "mediaType": MANIFEST_LIST_V2, "manifests": entries}, indent=3, sort_keys=True
            )
            + "\n"
        ).encode()
        for tag in (exact_index, *moving):
            _put_if_changed(reg, repo, tag, body, MANIFEST_LIST_V2, result, dry_run)
    return result


def _config_digest(manifest: bytes) -> str:
    try:
        return str(json.loads(manifest).get("config", {}).get("digest", ""))
    except json.JSONDecodeError:
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
