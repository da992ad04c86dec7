"""matrix.lock: the pinned inputs of every built entry, and the checks `--locked` makes.

Per entry the lock records what went into it: the source sha256, the sha256 of the rendered
Dockerfile and of each script the build runs, the base images (runtime and builder) by name and
image id, the platform the builder ran on, the exact Debian package versions installed in the
builder and runtime stages, and the interpreter tarball it produced. `invoke lock` writes it from
the last build's report and images; `invoke build` warns when it is stale and `invoke build
--locked` refuses to start when any input differs (a base image whose id is not the locked one
included), naming the input.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .builders import Holders
from .engine import Engine, EngineAPI, short_ref
from .errors import LockError as LockError
from .fsutil import atomic_path, atomic_write_text
from .matrix import KNOWN_PLATFORMS, BuildSpec, Platform
from .progress import Progress, fmt_seconds
from .render import CONTEXT_SCRIPTS, Renderer
from .report import EntryResult, Report
from .report import builder_platform as recorded_builder_platform

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
    with atomic_path(pinned) as tmp:
        shutil.copyfile(built, tmp)
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
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

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

    def locked_bases_of(self, key: str) -> dict[str, str]:
        """Base image name -> the image id the lock pins for the entry ``key`` (runtime and builder
        base; a lock written before cpforge recorded them per entry pins the runtime base only)."""
        entry = self.entries.get(key) or {}
        if isinstance(entry.get("bases"), dict):
            return {str(k): str(v) for k, v in sorted(entry["bases"].items())}
        name = (entry.get("inputs") or {}).get("base_image")
        image_id = (self.bases.get(str(name)) or {}).get("image_id") if name else None
        return {str(name): str(image_id)} if image_id else {}

    def base_problems(self, spec: BuildSpec, engine: EngineAPI) -> list[str]:
        """Each base image of ``spec`` whose id on ``engine`` is not the one the lock pins."""
        out: list[str] = []
        for name, locked in self.locked_bases_of(spec.key).items():
            now = engine.image_id(name)
            if now is None:
                out.append(
                    f"base image {name} is not on this engine, so its id cannot be compared with the locked "
                    f"{locked} (fix: create it first, `invoke base`, then build --locked again)"
                )
            elif now != locked:
                out.append(
                    f"base image {name} is {now} on this engine, but {self.path.name} pins {locked} (fix: "
                    "restore the locked base, e.g. pull it by digest or `docker load` it; or accept the new one: "
                    "build without --locked, then `invoke lock`)"
                )
        return out


def packages_in(engine: EngineAPI, image: str, platform: str) -> dict[str, str]:
    res = engine.run(image, DPKG_QUERY, platform=platform)
    if res.exit_code != 0:
        raise LockError(f"cannot list Debian packages in image {short_ref(image)}: {res.stderr.strip()}")
    pkgs: dict[str, str] = {}
    for line in res.stdout.splitlines():
        name, _, version = line.partition("=")
        if name and version:
            pkgs[name] = version
    return dict(sorted(pkgs.items()))


def builder_platform(spec: BuildSpec, res: EntryResult, engine: Engine) -> Platform:
    """The platform the entry's builder ran on (cpforge.report.builder_platform: its own platform for a
    --native build, else the matrix's build platform), as a Platform cpforge knows."""
    name = recorded_builder_platform(res, engine, spec.build_platform.name)
    if name not in KNOWN_PLATFORMS:
        raise LockError(
            f"{spec.key}: the report says its builder ran on {name!r}, which cpforge does not know",
            hint=f"rebuild it (`invoke build --filter '{spec.id}' --profile {spec.profile.name}`), then lock",
        )
    return Platform(name=name)


def base_for(spec: BuildSpec, plat: Platform) -> str:
    """The base image a stage of ``spec`` running on ``plat`` starts FROM."""
    return spec.base_image if plat == spec.platform else spec.distro.base_image(plat)


def _base_id(engine: Engine, spec: BuildSpec, base: str, built: str, stage: str) -> str:
    """The id of ``base``, after checking that ``built`` (the stage's image) was built FROM it."""
    base_id = engine.image_id(base)
    again = f"rebuild {spec.key} (`invoke build --filter '{spec.id}' --profile {spec.profile.name}`), then lock"
    if base_id is None:
        raise LockError(f"{spec.key}: its {stage} base image {base} is no longer on the engine", hint=again)
    layers = (engine.inspect_image(base_id).get("RootFS") or {}).get("Layers") or []
    image_layers = (engine.inspect_image(built).get("RootFS") or {}).get("Layers") or []
    if image_layers[: len(layers)] != layers:
        raise LockError(
            f"{spec.key}: its {stage} image {short_ref(built)} was not built FROM the {base} now on the engine "
            f"({short_ref(base_id)}): the base changed after the build",
            hint=again,
        )
    return base_id


def write(
    lock: Lock,
    root: Path,
    renderer: Renderer,
    report: Report,
    engine: Engine | Holders,
    specs: Sequence[BuildSpec],
    progress: Progress | None = None,
) -> tuple[list[str], list[str]]:
    """Record the inputs, base image ids and package versions of each spec's last passing build,
    pinning the PGO profile of PGO builds that have none yet. Returns the keys written and the
    profiles pinned. ``progress`` (optional) gets a line per entry."""
    written: list[str] = []
    pinned: list[str] = []
    holders = Holders.wrap(engine)  # each entry's images are on the engine that built it
    missing = [spec.key for spec in specs if not _lockable(holders, report.entries.get(spec.key))]
    if missing:
        raise LockError(
            f"no passing build to lock for: {', '.join(missing)}",
            hint="run `invoke build` for these entries first, then `invoke lock`",
        )
    for spec in specs:
        res = report.entries[spec.key]
        assert res.image_id is not None and res.artifact_image_id is not None
        engine = holders.of(res)
        t0 = time.monotonic()
        if progress:
            progress.start(spec.key, "reading base images and package versions")
        if pin_pgo_profile(root, spec, res.pgo_profile):
            dropped = drop_superseded_pgo_profiles(root, spec)
            replaces = f" (replaces {', '.join(dropped)})" if dropped else ""
            pinned.append(f"{spec.pgo_profile}{replaces}")
        builder = builder_platform(spec, res, engine)
        stages = ((spec.platform, res.image_id, "runtime"), (builder, res.artifact_image_id, "builder"))
        bases: dict[str, str] = {}
        for plat, built, stage in stages:
            name = base_for(spec, plat)
            bases[name] = _base_id(engine, spec, name, built, stage)
            if lock.bases.get(name, {}).get("image_id") != bases[name] or "packages" not in lock.bases[name]:
                lock.bases[name] = {"image_id": bases[name], "packages": packages_in(engine, name, plat.name)}
        lock.entries[spec.key] = {
            "inputs": current_inputs(root, renderer, spec).as_dict(),
            "bases": dict(sorted(bases.items())),
            "builder_platform": builder.name,
            "builder_packages": packages_in(engine, res.artifact_image_id, builder.name),
            "runtime_packages": packages_in(engine, res.image_id, spec.platform.name),
            "artifact_sha256": res.artifact.get("sha256"),
        }
        written.append(spec.key)
        if progress:
            progress.done(spec.key, True, f"locked in {fmt_seconds(time.monotonic() - t0)}")
    used = {name for key in lock.entries for name in lock.locked_bases_of(key)}
    lock.bases = {name: base for name, base in lock.bases.items() if name in used}
    lock.save()
    return written, pinned


def _lockable(holders: Holders, res: EntryResult | None) -> bool:
    """A passing build whose runtime and artifact images are both still on its engine."""
    if res is None or not res.passed or not res.image_id or not res.artifact_image_id:
        return False
    engine = holders.of(res)
    return engine.image_id(res.image_id) is not None and engine.image_id(res.artifact_image_id) is not None


def check_locked(
    lock: Lock,
    root: Path,
    renderer: Renderer,
    specs: Sequence[BuildSpec],
    index: MirrorIndex | None = None,
    engine: EngineAPI | None = None,
) -> None:
    """--locked: refuse to build when any input differs from the lock or a pin cannot be met. With
    ``engine``, each base image's id there must be the id the lock pins."""
    problems = [f"{spec.key}: {p}" for spec in specs for p in lock.problems(spec, current_inputs(root, renderer, spec))]
    if engine is not None:
        problems += [
            f"{spec.key}: {p}" for spec in specs if spec.key in lock.entries for p in lock.base_problems(spec, engine)
        ]
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
        builder = str(entry.get("builder_platform") or spec.build_platform.name)
        builder_arch = KNOWN_PLATFORMS[builder][0] if builder in KNOWN_PLATFORMS else spec.build_platform.arch
        for stage, default_arch in (("builder", builder_arch), ("runtime", spec.platform.arch)):
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
