"""Source tarballs: mirrors tried in order, a local cache, sha256 verification.

A mirror is one of:
  * an http(s)/file URL laid out like python.org: <url>/<version>/Python-<version>.tar.xz
  * ``debian+<url>``: a Debian mirror, read from its pool:
    <url>/pool/main/p/python<minor>/python<minor>_<version>.orig.tar.xz (same bytes as python.org's)
  * a local directory holding Python-<version>.tar.xz or python<minor>_<version>.orig.tar.xz
Nothing unverified ever lands in the cache: downloads go to a temporary file that is hashed while
it is written and renamed into place only when its sha256 matches the matrix.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError
from .matrix import Source

CHUNK = 1 << 20
TIMEOUT = 30


@dataclass(frozen=True)
class Fetched:
    source: Source
    path: Path
    origin: str  # where the verified bytes came from ("cache" or a mirror location)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def debian_version(version: str) -> str:
    """Debian's spelling of a pre-release: 3.14.0rc1 → 3.14.0~rc1."""
    return re.sub(r"(a|b|rc)(\d+)$", r"~\1\2", version)


def candidates(mirror: str, source: Source) -> list[str]:
    """Locations of ``source`` at one mirror, in the order they are tried."""
    v = source.version
    minor = ".".join(v.split(".")[:2])
    debian_name = f"python{minor}_{debian_version(v)}.orig.tar.xz"
    if mirror.startswith("debian+"):
        base = mirror.removeprefix("debian+").rstrip("/")
        return [f"{base}/pool/main/p/python{minor}/{debian_name}"]
    if re.match(r"^(https?|file)://", mirror):
        return [f"{mirror.rstrip('/')}/{v}/{source.filename}"]
    d = Path(mirror)
    return [str(d / source.filename), str(d / debian_name)]


SOURCE_MODE = 0o644


class Sources:
    """Fetches and verifies source tarballs into ``cache_dir``."""

    def __init__(self, cache_dir: Path, mirrors: Sequence[str], log: Callable[[str], None] = print) -> None:
        self.cache_dir = cache_dir
        self.mirrors = list(mirrors)
        self.log = log

    def cached_path(self, source: Source) -> Path:
        return self.cache_dir / source.filename

    def ensure(self, source: Source) -> Fetched:
        """Return a verified local copy of ``source``, fetching it if needed."""
        path = self.cached_path(source)
        if path.exists():
            got = sha256_file(path)
            if got == source.sha256:
                path.chmod(SOURCE_MODE)  # a copy fetched by an older cpforge may be 0600
                return Fetched(source, path, "cache")
            self.log(f"! {path}: sha256 {got} does not match the matrix ({source.sha256}); discarding it")
            path.unlink()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        attempts: list[str] = []
        for mirror in self.mirrors:
            for location in candidates(mirror, source):
                problem = self._fetch_verified(location, source, path)
                if problem is None:
                    self.log(f"✓ {source.filename} sha256 ok ({location})")
                    return Fetched(source, path, location)
                attempts.append(f"{location}: {problem}")
        tried = "\n".join(f"  - {a}" for a in attempts) or "  (no mirrors configured)"
        raise SourceError(
            f"no verified copy of {source.filename} (sha256 {source.sha256}). Tried:\n{tried}",
            hint="add a reachable mirror under `sources.mirrors` in matrix.yaml or pass --mirror "
            "(a URL, debian+URL, or a directory holding the tarball); a sha256 mismatch means the "
            "file is not the release the matrix pins: do not use it",
        )

    def _fetch_verified(self, location: str, source: Source, dest: Path) -> str | None:
        """Copy ``location`` to ``dest`` if its sha256 matches; else return why not."""
        fd, tmpname = tempfile.mkstemp(prefix=".partial-", dir=self.cache_dir)
        tmp = Path(tmpname)
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    if re.match(r"^(https?|file)://", location):
                        with urllib.request.urlopen(location, timeout=TIMEOUT) as resp:  # noqa: S310
                            for chunk in iter(lambda: resp.read(CHUNK), b""):
                                h.update(chunk)
                                out.write(chunk)
                    else:
                        src = Path(location)
                        if not src.is_file():
                            return "not found"
                        with src.open("rb") as f:
                            for chunk in iter(lambda: f.read(CHUNK), b""):
                                h.update(chunk)
                                out.write(chunk)
                except urllib.error.HTTPError as exc:
                    return f"HTTP {exc.code}"
                except (urllib.error.URLError, OSError, TimeoutError) as exc:
                    reason = getattr(exc, "reason", exc)
                    return f"unreachable ({reason})"
            got = h.hexdigest()
            if got != source.sha256:
                return f"sha256 mismatch: got {got}, expected {source.sha256} (refused)"
            # World-readable, as the build context cpforge sends has it: a plain `docker build` of a
            # committed Dockerfile from the repository then hits the layers cpforge's build left.
            tmp.chmod(SOURCE_MODE)
            os.replace(tmp, dest)
            return None
        finally:
            tmp.unlink(missing_ok=True)

    def ensure_all(self, sources: Sequence[Source]) -> list[Fetched]:
        """Verify every distinct source before anything is built: fail early, fail whole."""
        seen: dict[str, Fetched] = {}
        for s in sources:
            if s.filename not in seen:
                seen[s.filename] = self.ensure(s)
        return list(seen.values())
