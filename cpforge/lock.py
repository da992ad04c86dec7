"""matrix.lock: the pinned inputs of every built entry, and the checks `--locked` makes.

Per entry the lock records what went into it: the source sha256, the sha256 of the rendered
Dockerfile and of each script the build runs, the base image, the exact Debian package versions
installed in the builder and runtime stages, and the interpreter tarball it produced. `invoke lock`
writes it from the last build's report and images; `invoke build` warns when it is stale and
`invoke build --locked` refuses to start when any input differs, naming the input.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import Engine, short_ref
from .errors import LockError as LockError
from .matrix import BuildSpec
from .render import CONTEXT_SCRIPTS, Renderer
from .report import Report

SCHEMA = 1
SCRIPTS = (*CONTEXT_SCRIPTS, "scripts/smoke.py")
DPKG_QUERY = ["dpkg-query", "-W", "-f", "${binary:Package}=${Version}\\n"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Inputs:
    """The hashable inputs of one entry, as they are on disk now."""

    source_sha256: str
    dockerfile_sha256: str
    scripts: dict[str, str]
    base_image: str
    pgo_profile_sha256: str | None = None  # PGO builds: the pinned profile (None: not pinned)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_sha256": self.source_sha256,
            "dockerfile_sha256": self.dockerfile_sha256,
            "scripts": dict(sorted(self.scripts.items())),
            "base_image": self.base_image,
            "pgo_profile_sha256": self.pgo_profile_sha256,
        }


def pinned_pgo_profile(root: Path, spec: BuildSpec) -> Path | None:
    """The committed PGO profile that builds of ``spec`` reuse: None when the spec does not train
    or nothing is pinned yet."""
    if not spec.pgo_profile:
        return None
    path = root / spec.pgo_profile
    return path if path.exists() else None


def current_inputs(root: Path, renderer: Renderer, spec: BuildSpec) -> Inputs:
    pinned = pinned_pgo_profile(root, spec)
    return Inputs(
        source_sha256=spec.source.sha256,
        dockerfile_sha256=sha256_bytes(renderer.dockerfile(spec).encode()),
        scripts={s: sha256_bytes((root / s).read_bytes()) for s in SCRIPTS},
        base_image=spec.base_image,
        pgo_profile_sha256=sha256_bytes(pinned.read_bytes()) if pinned is not None else None,
    )


def pin_pgo_profile(root: Path, spec: BuildSpec, used: dict[str, str]) -> bool:
    """Pin the PGO profile the last build of ``spec`` trained (``used``: its report entry's
    pgo_profile). Returns True when a profile was newly pinned."""
    if not spec.pgo_profile:
        return False
    pinned = root / spec.pgo_profile
    built = Path(used["path"]) if used.get("path") else None
    if built is None or not built.exists():
        raise LockError(
            f"{spec.key}: the last build left no PGO profile to pin",
            hint=f"rebuild it (`invoke build --filter '{spec.id}' --profile {spec.profile.name}`), then lock",
        )
    if pinned.exists():
        if sha256_bytes(pinned.read_bytes()) != used.get("sha256"):
            raise LockError(
                f"{spec.key}: the last build did not use the pinned PGO profile {spec.pgo_profile}",
                hint="rebuild the entry so it reuses the pinned profile, then lock (or delete the file to retrain)",
            )
        return False
    pinned.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, pinned)
    return True


def drop_superseded_pgo_profiles(root: Path, spec: BuildSpec) -> list[str]:
    """Delete the pinned profiles of ``spec``'s entry and profile that were trained for another
    build configuration (the name's config hash differs): no build can use them any more. Returns
    their paths, relative to ``root``."""
    if not spec.pgo_profile:
        return []
    current = root / spec.pgo_profile
    # <entry>.<profile>.<config>.tar.xz, and the config-less name pinned before cpforge named configs
    own = re.compile(re.escape(f"{spec.id}.{spec.profile.name}") + r"(\.[0-9a-f]{12})?\.tar\.xz")
    dropped = []
    for path in sorted(current.parent.iterdir()):
        if path != current and own.fullmatch(path.name):
            path.unlink()
            dropped.append(str(path.relative_to(root)))
    return dropped


@dataclass
class Lock:
    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    bases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Lock:
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LockError(
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg})", hint="restore it from git or run `invoke lock`"
            ) from None
        return cls(path, dict(data.get("entries", {})), dict(data.get("bases", {})))

    def save(self) -> None:
        data = {
            "schema": SCHEMA,
            "bases": dict(sorted(self.bases.items())),
            "entries": dict(sorted(self.entries.items())),
        }
        self.path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def problems(self, spec: BuildSpec, now: Inputs) -> list[str]:
        """Every input of ``spec`` that differs from the lock, as a sentence naming it."""
        entry = self.entries.get(spec.key)
        if entry is None:
            return [f"{spec.key} is not in {self.path.name}"]
        out: list[str] = []
        locked = entry.get("inputs", {})
        if locked.get("source_sha256") != now.source_sha256:
            out.append(
                f"source sha256 of {spec.source.filename}: lock {locked.get('source_sha256')}, "
                f"matrix {now.source_sha256}"
            )
        if locked.get("dockerfile_sha256") != now.dockerfile_sha256:
            out.append(f"{spec.dockerfile}: rendered Dockerfile differs from the locked one")
        for name, digest in now.scripts.items():
            if locked.get("scripts", {}).get(name) != digest:
                out.append(
                    f"{name}: sha256 {digest[:16]}… differs from the locked "
                    f"{str(locked.get('scripts', {}).get(name))[:16]}…"
                )
        if locked.get("base_image") != now.base_image:
            out.append(f"base image {now.base_image} (lock: {locked.get('base_image')})")
        pgo = locked.get("pgo_profile_sha256")
        if pgo != now.pgo_profile_sha256:
            if now.pgo_profile_sha256 is None:
                out.append(
                    f"{spec.pgo_profile}: the pinned PGO profile is missing (lock: sha256 {str(pgo)[:16]}…; "
                    "a changed build configuration changes its name: the build trains afresh)"
                )
            else:
                out.append(
                    f"{spec.pgo_profile}: PGO profile sha256 {now.pgo_profile_sha256[:16]}… differs from the "
                    f"locked {str(pgo)[:16]}…"
                )
        return out


def packages_in(engine: Engine, image: str, platform: str) -> dict[str, str]:
    res = engine.run(image, DPKG_QUERY, platform=platform)
    if res.exit_code != 0:
        raise LockError(f"cannot list Debian packages in image {short_ref(image)}: {res.stderr.strip()}")
    pkgs: dict[str, str] = {}
    for line in res.stdout.splitlines():
        name, _, version = line.partition("=")
        if name and version:
            pkgs[name] = version
    return dict(sorted(pkgs.items()))


def write(
    lock: Lock, root: Path, renderer: Renderer, report: Report, engine: Engine, specs: Sequence[BuildSpec]
) -> tuple[list[str], list[str]]:
    """Record the inputs and package versions of each spec's last passing build, pinning the PGO
    profile of PGO builds that have none yet. Returns the keys written and the profiles pinned."""
    written: list[str] = []
    pinned: list[str] = []
    missing: list[str] = []
    for spec in specs:
        res = report.entries.get(spec.key)
        if res is None or not res.passed or not res.image_id or not res.artifact_image_id:
            missing.append(spec.key)
            continue
        if engine.image_id(res.image_id) is None or engine.image_id(res.artifact_image_id) is None:
            missing.append(spec.key)
            continue
        if pin_pgo_profile(root, spec, res.pgo_profile):
            dropped = drop_superseded_pgo_profiles(root, spec)
            replaces = f" (replaces {', '.join(dropped)})" if dropped else ""
            pinned.append(f"{spec.pgo_profile}{replaces}")
        base_id = engine.image_id(spec.base_image)
        lock.bases[spec.base_image] = {
            "image_id": base_id,
            "packages": packages_in(engine, spec.base_image, spec.platform.name),
        }
        lock.entries[spec.key] = {
            "inputs": current_inputs(root, renderer, spec).as_dict(),
            "builder_packages": packages_in(engine, res.artifact_image_id, spec.build_platform.name),
            "runtime_packages": packages_in(engine, res.image_id, spec.platform.name),
            "artifact_sha256": res.artifact.get("sha256"),
        }
        written.append(spec.key)
    if missing:
        raise LockError(
            f"no passing build to lock for: {', '.join(missing)}",
            hint="run `invoke build` for these entries first, then `invoke lock`",
        )
    lock.save()
    return written, pinned


def check_locked(
    lock: Lock, root: Path, renderer: Renderer, specs: Sequence[BuildSpec], index: MirrorIndex | None = None
) -> None:
    """--locked: refuse to build when any input differs from the lock or a pin cannot be met."""
    problems = [f"{spec.key}: {p}" for spec in specs for p in lock.problems(spec, current_inputs(root, renderer, spec))]
    if not problems and index is not None:
        problems = unavailable_pins(lock, specs, index)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise LockError(
            f"--locked: inputs differ from {lock.path.name}:\n{listing}",
            hint="revert the change, or run `invoke lock` after a build to accept it",
        )


def stale(lock: Lock, root: Path, renderer: Renderer, specs: Sequence[BuildSpec]) -> list[str]:
    """Locked entries whose inputs changed (an entry never locked is not stale, only unlocked)."""
    return [
        f"{spec.key}: {p}"
        for spec in specs
        if spec.key in lock.entries
        for p in lock.problems(spec, current_inputs(root, renderer, spec))
    ]


def package_drift(locked: dict[str, str], actual: dict[str, str], stage: str) -> list[str]:
    """Packages whose installed version differs from the lock (for --locked builds)."""
    out = []
    for name in sorted(set(locked) | set(actual)):
        a, b = locked.get(name), actual.get(name)
        if a != b:
            out.append(f"{stage} package {name}: lock {a or 'absent'}, built {b or 'absent'}")
    return out


class MirrorIndex:
    """Which package versions a Debian mirror carries for a suite and architecture (main only)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self._indexes: dict[tuple[str, str, str], dict[str, set[str]]] = {}

    def versions(self, mirror: str, suite: str, arch: str) -> dict[str, set[str]]:
        key = (mirror, suite, arch)
        if key not in self._indexes:
            url = f"{mirror.rstrip('/')}/dists/{suite}/main/binary-{arch}/Packages.xz"
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
                    text = lzma.decompress(resp.read()).decode("utf-8", "replace")
            except (urllib.error.URLError, OSError, lzma.LZMAError) as exc:
                raise LockError(
                    f"cannot read the package index {url}: {exc}", hint="check that the distro mirror is reachable"
                ) from None
            index: dict[str, set[str]] = {}
            name = ""
            for line in text.splitlines():
                if line.startswith("Package: "):
                    name = line[9:].strip()
                elif line.startswith("Version: ") and name:
                    index.setdefault(name, set()).add(line[9:].strip())
            self._indexes[key] = index
        return self._indexes[key]


def unavailable_pins(lock: Lock, specs: Sequence[BuildSpec], index: MirrorIndex) -> list[str]:
    """Pinned package versions the distro mirror does not carry: building cannot reproduce them."""
    out: list[str] = []
    for spec in specs:
        entry = lock.entries.get(spec.key)
        if entry is None:
            continue
        for stage, default_arch in (("builder", spec.build_platform.arch), ("runtime", spec.platform.arch)):
            for pkg, version in entry.get(f"{stage}_packages", {}).items():
                name, _, arch = pkg.partition(":")
                available = index.versions(spec.distro.mirror, spec.distro.suite, arch or default_arch).get(name, set())
                if version not in available:
                    have = ", ".join(sorted(available)) or "nothing"
                    out.append(
                        f"{spec.key}: {lock.path.name} pins {stage} package {pkg}={version}, but "
                        f"{spec.distro.mirror} {spec.distro.suite} has {have}"
                    )
    return out
