"""Merge provision output directories into one: `invoke provision --merge DIR [--merge DIR …] --dest OUT`.

build.yml provisions each entry on a runner of its own, so each job's dist/ holds one tarball, its
metadata, a one-line SHA256SUMS and a versions-manifest.json that knows only that tarball. The
fan-in job (or a user, locally) merges them: every tarball and its metadata file is copied into one
directory, then SHA256SUMS, versions-manifest.json and the channel manifests are written over
everything there by provision's own functions (`slot_rank` picks each slot's build), so the result
is, byte for byte, what one provision of all those entries into that directory would have written.

Nothing is written until every source has been read and checked:
  * each directory is a provision output: it has a SHA256SUMS, every line of it names a tarball
    that is there with its metadata file and has the sha256 listed (a truncated or altered download
    is refused), and every tarball with metadata there is listed;
  * one file name in two places (two sources, or a source and the destination) must be one file:
    the same sha256 and the same metadata. Otherwise the merge refuses the clash, naming both.
Files are copied to a unique temp file, hashed as they are copied, and renamed into place (fsutil);
the manifests are rewritten under the lock provision takes. Merging again changes nothing: files
already in place are not copied, and the manifests come out the same. Files the destination held
before stay, and are listed too, as `invoke provision` keeps earlier tarballs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fsutil import atomic_path, atomic_write_bytes
from .provision import (
    MANIFEST,
    Provisioned,
    ProvisionError,
    Tarball,
    catalogue,
    index_lock,
    write_index,  # provision's own writer: the merged set must equal one provision's
)
from .sources import sha256_file

SUMS = "SHA256SUMS"
# What provision names its tarballs (tarball_name); anything else in a SHA256SUMS (a path, `..`) is refused.
TARBALL = re.compile(r"python-[A-Za-z0-9][A-Za-z0-9._+-]*\.tar\.gz")
SUMS_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")
CHUNK = 1 << 20


def metadata_name(filename: str) -> str:
    """The metadata file provision writes next to a tarball: python-….json."""
    return f"{filename.removesuffix('.tar.gz')}.json"


@dataclass(frozen=True)
class Found:
    """One tarball of a source directory, with its metadata, checked against the directory's SHA256SUMS."""

    directory: Path
    filename: str
    sha256: str
    metadata: dict[str, Any]
    metadata_bytes: bytes

    @property
    def path(self) -> Path:
        return self.directory / self.filename


@dataclass(frozen=True)
class Merged:
    """One tarball of the merged directory: where it came from, and whether this merge copied it."""

    filename: str
    sha256: str
    sources: tuple[Path, ...]  # every source directory that holds it (the same file in each)
    copied: bool  # False: the destination already held this very file
    metadata: dict[str, Any]


@dataclass(frozen=True)
class MergeResult:
    tarballs: list[Merged]  # every tarball of the sources, by file name
    dest: Path
    sums: Path
    manifest: Path  # <dest>/versions-manifest.json
    channels: dict[str, Path]  # channel → its manifest, for every channel in <dest>
    notes: list[str]  # builds versions-manifest.json leaves out (provision's notes), base URL changes


def read_sums(path: Path) -> dict[str, str]:
    """A SHA256SUMS as provision writes it (`<sha256>  <tarball>` per line): file name → sha256."""
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        m = SUMS_LINE.fullmatch(line)
        if m is None or not TARBALL.fullmatch(m[2]):
            raise ProvisionError(
                f"{path}:{number}: not a line provision writes (`<sha256>  python-….tar.gz`): {line[:120]!r}",
                hint="merge only directories `invoke provision` wrote; provision that entry again",
            )
        if sums.setdefault(m[2], m[1]) != m[1]:
            raise ProvisionError(f"{path}:{number}: {m[2]} is listed twice with different sha256")
    return sums


def read_source(directory: Path) -> tuple[list[Found], list[str]]:
    """The tarballs of one provision output directory, and what is wrong with it (empty: nothing)."""
    if not directory.is_dir():
        return [], [f"{directory} is not a directory"]
    sums_path = directory / SUMS
    if not sums_path.is_file():
        return [], [f"{directory} holds no {SUMS}: it is not a provision output directory"]
    try:
        sums = read_sums(sums_path)
        listed = catalogue(directory)
    except ProvisionError as exc:
        return [], [exc.message]
    problems = [
        f"{directory / t.filename} has metadata but is not listed in {sums_path}"
        for t in listed
        if t.filename not in sums
    ]
    found: list[Found] = []
    for name, digest in sorted(sums.items()):
        tarball, meta_path = directory / name, directory / metadata_name(name)
        if not tarball.is_file():
            problems.append(f"{tarball} is listed in {sums_path} but missing")
        elif not meta_path.is_file():
            problems.append(f"{meta_path} is missing: the metadata of {name}")
        else:
            raw = meta_path.read_bytes()
            meta, why = _metadata(raw, name)
            if why:
                problems.append(f"{meta_path} {why}")
            elif (actual := sha256_file(tarball)) != digest:
                problems.append(f"{tarball} has sha256 {actual}, but {sums_path} lists {digest}")
            else:
                found.append(Found(directory, name, digest, meta, raw))
    return found, problems


def _metadata(raw: bytes, filename: str) -> tuple[dict[str, Any], str]:
    """Parsed tarball metadata, and "" or why it is not what provision writes."""
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or meta.get("format") != "cpforge-1":
            return {}, "is not cpforge tarball metadata (format cpforge-1)"
        Tarball.from_metadata(filename, meta)  # what the manifests will read from it
        return meta, ""
    except (ValueError, KeyError, TypeError) as exc:
        return {}, f"is not cpforge tarball metadata ({exc})"


def _clashes(by_name: dict[str, list[Found]]) -> list[str]:
    """Each file name the sources hold as different files (sha256 or metadata), with where and what."""
    out: list[str] = []
    for name, copies in sorted(by_name.items()):
        first = copies[0]
        for other in copies[1:]:
            if other.sha256 != first.sha256:
                out.append(f"{name}: {first.directory} has sha256 {first.sha256}, {other.directory} has {other.sha256}")
            elif other.metadata != first.metadata:
                out.append(
                    f"{name}: the same tarball, but {first.directory} and {other.directory} differ in "
                    f"{metadata_name(name)}"
                )
    return out


def _in_place(dest: Path, names: Sequence[str]) -> dict[str, str]:
    """The sha256 of each of ``names`` the destination already holds."""
    return {name: sha256_file(dest / name) for name in names if (dest / name).is_file()}


def _dest_clashes(dest: Path, by_name: dict[str, list[Found]], there: dict[str, str]) -> list[str]:
    """Each file name the destination already holds (``there``) as a different file than the sources'."""
    out: list[str] = []
    for name, digest in sorted(there.items()):
        first = by_name[name][0]
        meta = dest / metadata_name(name)
        if digest != first.sha256:
            out.append(f"{name}: {dest} already has sha256 {digest}, {first.directory} has {first.sha256}")
        elif meta.is_file() and _metadata(meta.read_bytes(), name)[0] != first.metadata:
            out.append(f"{name}: the same tarball, but {dest} and {first.directory} differ in {meta.name}")
    return out


def _refuse(what: str, lines: Sequence[str], hint: str) -> ProvisionError:
    return ProvisionError(f"{what}:\n" + "\n".join(f"  - {line}" for line in lines), hint=hint)


CLASH_HINT = (
    "one file name must always mean one file: find out which build is the right one (SHA256SUMS and the "
    "metadata's artifact_sha256 say which build each is), then merge without the other, or into a new --dest"
)


def merge(sources: Sequence[Path], dest: Path, base_url: str, say: Callable[[str], None] = print) -> MergeResult:
    """Copy every tarball of ``sources`` (provision output directories) into ``dest`` and write one
    SHA256SUMS, versions-manifest.json and the channel manifests there (see the module docstring).
    Refuses, before writing anything, a source that is not an intact provision output, and a file
    name that stands for two different files."""
    if not sources:
        raise ProvisionError("nothing to merge: no source directory given", hint="--merge DIR (repeatable)")
    directories = list(dict.fromkeys(p.absolute() for p in sources))
    found: list[Found] = []
    problems: list[str] = []
    for directory in directories:
        got, wrong = read_source(directory)
        found += got
        problems += wrong
    if problems:
        raise _refuse(
            "refusing to merge",
            problems,
            "merge only complete provision outputs: provision those entries again, or download their artifacts again",
        )
    by_name: dict[str, list[Found]] = {}
    for f in found:
        by_name.setdefault(f.filename, []).append(f)
    clashes = _clashes(by_name)
    if clashes:
        raise _refuse("refusing to merge: the same file name stands for different files", clashes, CLASH_HINT)
    n = len(directories)
    say(f"… merging {len(by_name)} tarball(s) from {n} director{'y' if n == 1 else 'ies'} into {dest}")
    with index_lock(dest):
        there = _in_place(dest, sorted(by_name))
        clashes = _dest_clashes(dest, by_name, there)
        if clashes:
            raise _refuse(f"refusing to merge into {dest}", clashes, CLASH_HINT)
        merged = [_place(copies, dest, name in there, say) for name, copies in sorted(by_name.items())]
        done = [
            Provisioned(
                f"{m.metadata.get('entry')}@{m.metadata.get('profile')}",
                m.filename,
                dest / m.filename,
                m.sha256,
                m.metadata,
            )
            for m in merged
        ]
        channels, notes = write_index(dest, base_url, done)
    return MergeResult(merged, dest, dest / SUMS, dest / MANIFEST, channels, notes + _url_notes(directories, base_url))


def _place(copies: Sequence[Found], dest: Path, present: bool, say: Callable[[str], None]) -> Merged:
    """Put one tarball and its metadata into ``dest`` unless the very file is already there (``present``:
    checked by `_dest_clashes`)."""
    first = copies[0]
    target, meta = dest / first.filename, dest / metadata_name(first.filename)
    if not present:
        say(f"… copying {first.filename} from {first.directory}")
        copy_verified(first.path, target, first.sha256)
    if not meta.is_file() or meta.read_bytes() != first.metadata_bytes:
        atomic_write_bytes(meta, first.metadata_bytes)  # after the tarball: catalogue() needs both
    return Merged(first.filename, first.sha256, tuple(c.directory for c in copies), not present, first.metadata)


def copy_verified(src: Path, target: Path, sha256: str) -> None:
    """Copy ``src`` to ``target`` through a unique temp file renamed into place, hashing what was
    copied: a file that is not (any more) the one checked is refused, and nothing is left behind."""
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            for chunk in iter(lambda: fin.read(CHUNK), b""):
                digest.update(chunk)
                fout.write(chunk)
        if digest.hexdigest() != sha256:
            raise ProvisionError(
                f"{src} changed while it was merged (sha256 {digest.hexdigest()}, checked as {sha256}); "
                f"{target} was not written",
                hint="let whatever writes the source directory finish, then merge again",
            )


def _url_notes(directories: Sequence[Path], base_url: str) -> list[str]:
    """A note for each other base URL the sources' manifests pointed at: the merged manifests use
    ``base_url`` (--base-url), which is right only if the files will be served from there."""
    seen: dict[str, list[Path]] = {}
    for directory in directories:
        try:
            releases = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
            url = str(releases[0]["release_url"]) if releases else ""
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue  # no or an unreadable manifest: it is rewritten from the metadata anyway
        if url and url.rstrip("/") != base_url.rstrip("/"):
            seen.setdefault(url, []).append(directory)
    return [
        f"{len(dirs)} source(s) (e.g. {dirs[0]}) were provisioned for {url}; the merged manifests point at "
        f"{base_url} (--base-url)"
        for url, dirs in sorted(seen.items())
    ]
