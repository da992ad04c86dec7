"""Source fetching: mirrors in order, sha256 verification, nothing unverified in the cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpforge.errors import SourceError
from cpforge.matrix import Source
from cpforge.sources import Sources, candidates, debian_version

PAYLOAD = b"not really a tarball, but bytes with a known hash\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SRC = Source(version="3.13.5", sha256=SHA, signer=None)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_candidate_layouts() -> None:
    assert candidates("https://www.python.org/ftp/python/", SRC) == [
        "https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz"
    ]
    assert candidates("debian+http://deb.debian.org/debian", SRC) == [
        "http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz"
    ]
    assert candidates("/srv/src", SRC) == ["/srv/src/Python-3.13.5.tar.xz", "/srv/src/python3.13_3.13.5.orig.tar.xz"]
    assert debian_version("3.14.0rc1") == "3.14.0~rc1"


def test_local_directory_mirror_with_debian_name(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "python3.13_3.13.5.orig.tar.xz").write_bytes(PAYLOAD)
    got = Sources(tmp_path / "cache", [str(mirror)], log=lambda s: None).ensure(SRC)
    assert got.path.read_bytes() == PAYLOAD and got.path.name == "Python-3.13.5.tar.xz"
    again = Sources(tmp_path / "cache", [], log=lambda s: None).ensure(SRC)
    assert again.origin == "cache"


def test_a_verified_tarball_is_world_readable_as_the_build_context_has_it(tmp_path: Path) -> None:
    """The legacy builder's COPY cache key includes the file mode: a 0600 tarball in sources/ would make
    a plain `docker build` of a committed Dockerfile miss the layers cpforge's own build left (0644)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "Python-3.13.5.tar.xz").write_bytes(PAYLOAD)
    got = Sources(tmp_path / "cache", [str(mirror)], log=lambda s: None).ensure(SRC)
    assert got.path.stat().st_mode & 0o777 == 0o644
    got.path.chmod(0o600)  # fetched by an older cpforge
    again = Sources(tmp_path / "cache", [], log=lambda s: None).ensure(SRC)
    assert again.origin == "cache" and again.path.stat().st_mode & 0o777 == 0o644


def test_tampered_tarball_is_refused_and_never_cached(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "Python-3.13.5.tar.xz").write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(SourceError) as err:
        Sources(tmp_path / "cache", [str(mirror)], log=lambda s: None).ensure(SRC)
    assert "sha256 mismatch" in str(err.value) and "refused" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_mirrors_tried_in_order_over_http(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    url, root = http_root
    pool = root / "debian/pool/main/p/python3.13"
    pool.mkdir(parents=True)
    (pool / "python3.13_3.13.5.orig.tar.xz").write_bytes(PAYLOAD)
    mirrors = [f"{url}/python-org-layout", str(tmp_path / "missing-dir"), f"debian+{url}/debian"]
    got = Sources(tmp_path / "cache", mirrors, log=lambda s: None).ensure(SRC)
    assert got.origin.endswith("python3.13_3.13.5.orig.tar.xz")
    assert got.path.read_bytes() == PAYLOAD


def test_all_mirrors_failing_lists_every_attempt(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    url, _ = http_root
    with pytest.raises(SourceError) as err:
        Sources(tmp_path / "cache", [url, str(tmp_path / "nowhere")], log=lambda s: None).ensure(SRC)
    text = str(err.value)
    assert "HTTP 404" in text and "not found" in text and "fix:" in text


def test_corrupt_cache_entry_is_replaced(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "Python-3.13.5.tar.xz").write_bytes(b"garbage")
    mirror = tmp_path / "m"
    mirror.mkdir()
    (mirror / "Python-3.13.5.tar.xz").write_bytes(PAYLOAD)
    got = Sources(cache, [str(mirror)], log=lambda s: None).ensure(SRC)
    assert got.path.read_bytes() == PAYLOAD
