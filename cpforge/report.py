"""build/report.json: one line of truth per built entry (id, image, tags, status, durations, facts).

Several cpforge processes may share one report (two `invoke build` runs in one --out): `save` merges
under an exclusive lock, writing only the entries this process updated, so nobody loses anybody's
results. Artifacts the report names are re-hashed before anything uses them (`verified_artifact`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import CpforgeError, ReportError
from .fsutil import atomic_write_text, exclusive_lock

if TYPE_CHECKING:
    from .engine import Engine
    from .matrix import BuildSpec

SCHEMA = 1


@dataclass(kw_only=True)
class EntryResult:
    key: str  # <id>@<profile>
    id: str
    profile: str
    version: str
    variant: str
    platform: str
    status: str = "pending"  # passed | failed | error | interrupted | skipped | pending
    image_id: str | None = None
    artifact_image_id: str | None = None
    build_python_image_id: str | None = None  # a cross build's build-python stage (shared per release)
    # The last layer an artifact build that did not finish (interrupted, failed) committed: a rerun's
    # cache goes on from it instead of starting that chain again. None once the stage is built.
    partial_image_id: str | None = None
    # The platform the artifact (builder) image was built for, e.g. linux/arm64 for a `--native`
    # arm64 build: what a container created from it must ask for. "" in reports from before it was
    # recorded (see `builder_platform`).
    builder_platform: str = ""
    tags: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    log: str | None = None
    artifact: dict[str, Any] = field(default_factory=dict)
    runtime_packages: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # Why a failed entry failed, in one line: the build log's decisive line (a `configure: error:`, the
    # first compiler error, ...) or the first failed smoke fact. Empty for entries that passed.
    reason: str = ""
    reused: bool = False  # True when nothing changed and the earlier smoke result still holds
    smoke_inputs: str = ""  # sha256 of the smoke script and the expectations it was judged by
    # PGO builds: the profile the build used (path, sha256) and, when it reused a pinned one, its sha256
    pgo_profile: dict[str, str] = field(default_factory=dict)
    # The Docker engine that built the entry and holds its images (its URL, e.g. ssh://ci@arm1): smoke,
    # lock, verify, publish and provision find them there. "" in reports from before it was recorded.
    engine: str = ""
    # Earlier attempts of the run that recorded this entry, each on an engine that was lost during it:
    # {"engine", "status", "problem", "seconds", "log"}. The entry itself is the last attempt.
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, spec: BuildSpec, **fields: Any) -> EntryResult:
        """The report line of ``spec``: its identity from the spec, the rest from ``fields``."""
        return cls(
            key=spec.key,
            id=spec.id,
            profile=spec.profile.name,
            version=spec.version,
            variant=spec.variant.name,
            platform=spec.platform.name,
            **fields,
        )

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["durations"] = {k: round(v, 1) for k, v in sorted(self.durations.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _read(path: Path) -> dict[str, EntryResult]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {e["key"]: EntryResult.from_json(e) for e in data.get("entries", [])}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise ReportError(f"{path} is not a cpforge report ({exc})", hint="delete it and rebuild") from None


@dataclass
class Report:
    path: Path
    entries: dict[str, EntryResult] = field(default_factory=dict)
    # keys this object updated since it last saved: the only entries `save` writes
    _updated: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path, missing_ok: bool = True) -> Report:
        if not path.exists():
            if missing_ok:
                return cls(path)
            raise ReportError(f"no build report at {path}", hint="run `invoke build` first")
        return cls(path, _read(path))

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def update(self, result: EntryResult) -> None:
        self.entries[result.key] = result
        self._updated.add(result.key)

    def save(self) -> None:
        """Merge this object's updates into the report on disk.

        Under an exclusive lock on `<report>.lock`: re-read the file, replace only the entries
        `update` was called for, write it atomically (unique temp file, renamed into place). Entries
        another process wrote meanwhile are kept, however old this object's copy of them is; the
        in-memory entries are refreshed to what is now on disk."""
        with exclusive_lock(self.lock_path):
            merged = _read(self.path) if self.path.exists() else {}
            merged.update({k: self.entries[k] for k in self._updated if k in self.entries})
            data = {"schema": SCHEMA, "entries": [merged[k].to_json() for k in sorted(merged)]}
            atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        self.entries = merged
        self._updated.clear()


# ---------------------------------------------------------------------------------------- artifacts


def _rebuild_hint(entry: EntryResult) -> str:
    return (
        f"rebuild it: `invoke build --filter '{entry.id}' --profile {entry.profile}` copies the artifact "
        "out of its builder image again (from the layer cache when nothing else changed)"
    )


@contextlib.contextmanager
def open_verified_artifact(entry: EntryResult, error: type[CpforgeError] = ReportError) -> Iterator[IO[bytes]]:
    """The entry's artifact (cpython.tar), open for reading at offset 0, after re-hashing it against
    the sha256 the build recorded. The bytes hashed are the bytes read: the file is hashed through
    the same open file the caller then reads, so a file replaced in between cannot slip through.

    Raises ``error`` (the caller's own exit code: ProvisionError, VerifyError, …) naming the path,
    both hashes and the fix when the report records no artifact, the file is gone, or it changed."""
    path_s, want = entry.artifact.get("path"), entry.artifact.get("sha256")
    if not path_s or not want:
        raise error(f"{entry.key}: the build report records no artifact for it", hint=_rebuild_hint(entry))
    path = Path(path_s)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise error(
            f"{entry.key}: its artifact {path} cannot be read ({exc.strerror})", hint=_rebuild_hint(entry)
        ) from None
    with f:
        h = hashlib.sha256()
        while chunk := f.read(1 << 20):
            h.update(chunk)
        if h.hexdigest() != want:
            raise error(
                f"{entry.key}: artifact {path} is not the one its build recorded\n"
                f"  sha256 in the report: {want}\n"
                f"  sha256 of the file:   {h.hexdigest()}\n"
                "  It changed after the build (truncated, overwritten or tampered with); it is not used.",
                hint=_rebuild_hint(entry),
            )
        f.seek(0)
        yield f


def verified_artifact(entry: EntryResult, error: type[CpforgeError] = ReportError) -> Path:
    """The path of the entry's artifact, after checking its sha256 against the report (see
    `open_verified_artifact`). For callers that need a path (diffs, uploads); read it right away."""
    with open_verified_artifact(entry, error):
        return Path(entry.artifact["path"])


def builder_platform(entry: EntryResult, engine: Engine, default: str) -> str:
    """The platform to ask for when creating a container from the entry's builder (artifact) image.

    The one the build recorded (a `--native` arm64 build: linux/arm64); for reports written before it
    was recorded, the image's own os/architecture; failing that ``default`` (the matrix's
    build-platform, right for every build that was not `--native`)."""
    if entry.builder_platform:
        return entry.builder_platform
    if entry.artifact_image_id and engine.image_id(entry.artifact_image_id) is not None:
        img = engine.inspect_image(entry.artifact_image_id)
        if img.get("Os") and img.get("Architecture"):
            return f"{img['Os']}/{img['Architecture']}"
    return default
