"""`invoke verify --rebuild`: rebuild entries from scratch and compare bits with the earlier build.

Compared: the interpreter tarball's sha256 and every layer digest of the runtime image. On a
mismatch the first differing files are named (tar members compared by metadata and content hash)
and, when diffoscope is installed, its report is written next to the rebuild's logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from . import api
from .build import Builder, BuildOptions
from .builders import Holders
from .engine import Engine
from .errors import VerifyError as VerifyError
from .fsutil import atomic_write_text
from .lock import pinned_pgo_profile
from .matrix import BuildSpec
from .progress import Progress
from .report import Report, verified_artifact
from .sources import sha256_file


@dataclass
class VerifyResult:
    key: str
    artifact_sha256: tuple[str | None, str | None]
    layers: tuple[list[str], list[str]]
    artifact_same: bool = False
    layers_same: bool = False
    differences: list[str] = field(default_factory=list)
    diffoscope: str | None = None
    error: str | None = None

    @property
    def reproducible(self) -> bool:
        return self.error is None and self.artifact_same and self.layers_same

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "reproducible": self.reproducible}


def member_digest(tar: tarfile.TarFile) -> dict[str, str]:
    """name → a digest of everything that makes the member what it is (metadata + content)."""
    out: dict[str, str] = {}
    for m in tar:
        h = hashlib.sha256(f"{m.type!r} {m.mode:o} {m.uid} {m.gid} {m.mtime} {m.size} {m.linkname}".encode())
        if m.isfile():
            f = tar.extractfile(m)
            if f is not None:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        out[m.name] = h.hexdigest()
    return out


def bytes_differing(a: bytes, b: bytes) -> int:
    """How many bytes differ: position by position, plus the length difference."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def diff_tars(a: IO[bytes], b: IO[bytes], limit: int = 20) -> list[str]:
    """The members that differ, first ``limit`` of them; for a file whose content differs, how many
    of its bytes do."""
    with tarfile.open(fileobj=a, mode="r:*") as ta, tarfile.open(fileobj=b, mode="r:*") as tb:
        da, db = member_digest(ta), member_digest(tb)
        diffs = []
        for name in sorted(set(da) | set(db)):
            if name not in da:
                diffs.append(f"only in rebuild: {name}")
            elif name not in db:
                diffs.append(f"only in original: {name}")
            elif da[name] != db[name]:
                ma, mb = ta.getmember(name), tb.getmember(name)
                fa = ta.extractfile(ma) if ma.isfile() else None
                fb = tb.extractfile(mb) if mb.isfile() else None
                if fa is not None and fb is not None and len(diffs) < limit:
                    xa, xb = fa.read(), fb.read()
                    n = bytes_differing(xa, xb)
                    diffs.append(
                        f"differs: {name} ({n} of {max(len(xa), len(xb))} bytes)"
                        if n
                        else f"differs: {name} (metadata)"
                    )
                else:
                    diffs.append(f"differs: {name}")
    return diffs[:limit] + ([f"… and {len(diffs) - limit} more"] if len(diffs) > limit else [])


def layer_tar(engine: Engine, image: str, index: int, dest: Path) -> Path:
    """Extract the index-th layer of ``image`` (docker save format) to ``dest``."""
    with tempfile.TemporaryFile() as saved:
        for chunk in engine.save(image):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as tar:
            manifest_file = tar.extractfile("manifest.json")
            assert manifest_file is not None
            layers = json.load(manifest_file)[0]["Layers"]
            src = tar.extractfile(layers[index])
            assert src is not None
            with dest.open("wb") as out:
                shutil.copyfileobj(src, out)
    return dest


def run_diffoscope(a: Path, b: Path, out: Path) -> str | None:
    tool = shutil.which("diffoscope")
    if tool is None:
        return None
    subprocess.run(
        [tool, "--text", str(out), "--max-report-size", "2000000", str(a), str(b)],
        capture_output=True,
        check=False,
        timeout=900,
    )
    return str(out) if out.exists() else None


def verify(
    ctx: api.Context, engine: Engine | Holders, specs: Sequence[BuildSpec], progress: Progress
) -> list[VerifyResult]:
    """Each entry is rebuilt on the engine that holds its last build (the one the report records)."""
    report = Report.load(ctx.report_path, missing_ok=False)
    vws = dataclasses.replace(ctx.ws, out=ctx.ws.out / "verify")
    vreport = Report(vws.out / "report.json")
    holders = Holders.wrap(engine)
    for spec in specs:  # before rebuilding anything: the originals must be the bits their builds recorded
        prev = report.entries.get(spec.key)
        if prev is not None and prev.passed:
            verified_artifact(prev, VerifyError)
    results: list[VerifyResult] = []
    for spec in specs:
        prev = report.entries.get(spec.key)
        engine = holders.of(prev)
        if prev is None or not prev.passed or not prev.image_id or engine.image_id(prev.image_id) is None:
            raise VerifyError(
                f"{spec.key} has no passing build to compare with",
                hint=f"run `invoke build --filter {spec.id} --profile {spec.profile.name}` first",
            )
        pinned = pinned_pgo_profile(ctx.ws.root, spec)
        if spec.pgo_profile and pinned is None:
            progress.say(
                f"! {spec.key}: no pinned PGO profile, so the rebuild trains again and cannot match. Pin the "
                f"last build's first: `invoke lock --filter '{spec.id}' --profile {spec.profile.name}`"
            )
        elif pinned is not None and sha256_file(pinned) != prev.pgo_profile.get("sha256"):
            progress.say(f"! {spec.key}: the last build used another PGO profile than {spec.pgo_profile}")
        progress.say(f"… {spec.key}: rebuilding from scratch (no layer cache) to compare with {prev.image_id[:19]}")
        options = BuildOptions(nocache=True, keep_going=True, promote=False)
        builder = Builder(engine, vws, ctx.renderer, ctx.sources(progress), vreport, progress, options)
        new = builder.build_one(spec)
        old_layers = list(engine.inspect_image(prev.image_id)["RootFS"]["Layers"])
        if new.image_id is None:
            results.append(
                VerifyResult(
                    spec.key,
                    (prev.artifact.get("sha256"), None),
                    (old_layers, []),
                    error=f"rebuild {new.status}: {'; '.join(new.problems)[:500]}",
                )
            )
            continue
        new_layers = list(engine.inspect_image(new.image_id)["RootFS"]["Layers"])
        vr = VerifyResult(spec.key, (prev.artifact.get("sha256"), new.artifact.get("sha256")), (old_layers, new_layers))
        vr.artifact_same = vr.artifact_sha256[0] == vr.artifact_sha256[1]
        vr.layers_same = old_layers == new_layers
        outdir = vws.out / "diff" / spec.key
        if not vr.artifact_same:
            outdir.mkdir(parents=True, exist_ok=True)
            a, b = verified_artifact(prev, VerifyError), verified_artifact(new, VerifyError)
            with a.open("rb") as fa, b.open("rb") as fb:
                vr.differences += [f"cpython.tar {d}" for d in diff_tars(fa, fb)]
            vr.diffoscope = run_diffoscope(a, b, outdir / "cpython.tar.diffoscope.txt")
        if not vr.layers_same:
            outdir.mkdir(parents=True, exist_ok=True)
            for i, (x, y) in enumerate(zip(old_layers, new_layers, strict=False)):
                if x == y:
                    continue
                la = layer_tar(engine, prev.image_id, i, outdir / f"layer{i}-original.tar")
                lb = layer_tar(engine, new.image_id, i, outdir / f"layer{i}-rebuild.tar")
                with la.open("rb") as fa, lb.open("rb") as fb:
                    vr.differences += [f"layer {i} {d}" for d in diff_tars(fa, fb)]
                if vr.diffoscope is None:
                    vr.diffoscope = run_diffoscope(la, lb, outdir / f"layer{i}.diffoscope.txt")
            if len(old_layers) != len(new_layers):
                vr.differences.append(f"layer count {len(old_layers)} vs {len(new_layers)}")
        if new.image_id != prev.image_id:
            engine.remove_image(new.image_id)
        # Drop the rebuilt artifact image and, with it, its untagged builder layers: left behind they
        # compete with the originals as layer-cache parents, and later cached builds of other
        # variants then miss the cache and recompile.
        if new.artifact_image_id and new.artifact_image_id != prev.artifact_image_id:
            engine.remove_image(new.artifact_image_id)
        results.append(vr)
    out = vws.out / "verify.json"
    atomic_write_text(out, json.dumps([r.to_json() for r in results], indent=2, sort_keys=True) + "\n")
    return results
