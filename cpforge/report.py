"""build/report.json: one line of truth per built entry (id, image, tags, status, durations, facts)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReportError

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
    builder_platform: str = ""  # the platform the artifact stage ran on (linux/arm64 for --native arm64)
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


@dataclass
class Report:
    path: Path
    entries: dict[str, EntryResult] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, missing_ok: bool = True) -> Report:
        if not path.exists():
            if missing_ok:
                return cls(path)
            raise ReportError(f"no build report at {path}", hint="run `invoke build` first")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {e["key"]: EntryResult.from_json(e) for e in data.get("entries", [])}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ReportError(f"{path} is not a cpforge report ({exc})", hint="delete it and rebuild") from None
        return cls(path, entries)

    def update(self, result: EntryResult) -> None:
        self.entries[result.key] = result

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"schema": SCHEMA, "entries": [self.entries[k].to_json() for k in sorted(self.entries)]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
