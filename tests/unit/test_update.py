"""`invoke update`: python.org's API, else Debian's Sources; fetch and verify; rewrite matrix.yaml in place.

Real HTTP servers on 127.0.0.1 (a python.org-shaped API and a Debian-shaped mirror), real tarballs, a
real copy of the repository's matrix, templates and Dockerfiles; `invoke update` run as a process.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from cpforge import api, matrix, update
from cpforge.errors import MatrixError, UpdateAvailable
from cpforge.update import UpdateError
from tests.replay import ReplayServer, closed_port_url

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v2/downloads"
RELEASES = f"{API}/release/?is_published=true&pre_release=false&version=3"
OLD_313 = ('"3.13.5"', "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640", "2025-06-11")
TARBALL_DAY = datetime(2026, 3, 3, 9, 30, tzinfo=UTC)  # newest mtime inside the synthetic 3.13.7 tarball


def tarball(version: str, when: datetime = TARBALL_DAY) -> bytes:
    """A small real .tar.xz laid out like a CPython release, its newest member dated ``when``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, mtime in (
            (f"Python-{version}/README.rst", when),
            (f"Python-{version}/LICENSE", datetime(2026, 1, 1, tzinfo=UTC)),
        ):
            data = f"{name}\n".encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(mtime.timestamp())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sources_paragraph(version: str, digest: str, debian_revision: str = "1") -> str:
    minor = ".".join(version.split(".")[:2])
    return (
        f"Package: python{minor}\nBinary: python{minor}, idle-python{minor}\nVersion: {version}-{debian_revision}\n"
        f"Directory: pool/main/p/python{minor}\nChecksums-Sha256:\n"
        f" {'0' * 64} 1234 python{minor}_{version}-{debian_revision}.dsc\n"
        f" {digest} 5678 python{minor}_{version}.orig.tar.xz\n\n"
    )


def release_item(version: str, rid: int, day: str, pre: bool = False) -> dict[str, object]:
    return {
        "name": f"Python {version}",
        "slug": f"python-{version.replace('.', '')}",
        "version": 3,
        "is_published": True,
        "is_latest": False,
        "release_date": f"{day}T12:00:00Z",
        "pre_release": pre,
        "release_page": None,
        "release_notes_url": f"https://docs.python.org/release/{version}/whatsnew/changelog.html",
        "show_on_download_page": True,
        "resource_uri": f"https://www.python.org/api/v2/downloads/release/{rid}/",
    }


def file_item(version: str, rid: int, digest: str) -> dict[str, object]:
    url = f"https://www.python.org/ftp/python/{version}/Python-{version}.tar.xz"
    return {
        "name": "XZ compressed source tarball",
        "slug": f"python-{version.replace('.', '')}-xz-compressed-source-tarball",
        "os": "https://www.python.org/api/v2/downloads/os/3/",
        "release": f"https://www.python.org/api/v2/downloads/release/{rid}/",
        "description": "",
        "is_source": True,
        "url": url,
        "gpg_signature_file": "",
        "md5_sum": "0" * 32,
        "sha256_sum": digest,
        "filesize": 1234,
        "download_button": False,
        "resource_uri": f"https://www.python.org/api/v2/downloads/release_file/{rid}0/",
        "sigstore_signature_file": "",
        "sigstore_cert_file": "",
        "sigstore_bundle_file": f"{url}.sigstore",
        "sbom_spdx2_file": f"{url}.spdx.json",
    }


@dataclass
class World:
    root: Path  # a copy of the repository's matrix, lock, templates and Dockerfiles
    matrix_path: Path
    server: ReplayServer
    www: Path
    cache: Path
    t137: bytes  # the 3.13.7 tarball the mirror serves

    @property
    def api(self) -> str:
        return self.server.url + API

    def ctx(self) -> api.Context:
        return api.Context.create(self.matrix_path, root=self.root)

    def write_sources(self, suite: str, text: str, compress: bool = True) -> None:
        d = self.www / "debian/dists" / suite / "main/source"
        d.mkdir(parents=True, exist_ok=True)
        (d / "Sources.xz").write_bytes(lzma.compress(text.encode()) if compress else text.encode())

    def dockerfiles(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted((self.root / "dockerfiles").rglob("Dockerfile*"))
        }


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("templates", "dockerfiles"):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy(ROOT / "matrix.lock", root / "matrix.lock")
    www = tmp_path / "www"
    pool = www / "debian/pool/main/p/python3.13"
    pool.mkdir(parents=True)
    t137 = tarball("3.13.7")
    (pool / "python3.13_3.13.7.orig.tar.xz").write_bytes(t137)
    with ReplayServer(www) as server:
        text = (ROOT / "matrix.yaml").read_text(encoding="utf-8")
        text = text.replace("    - https://www.python.org/ftp/python\n", "").replace(
            "debian+http://deb.debian.org/debian", f"debian+{server.url}/debian"
        )
        text = text.replace("  cache: sources", f"  cache: {tmp_path / 'cache'}")
        assert f"debian+{server.url}/debian" in text and str(tmp_path / "cache") in text
        path = root / "matrix.yaml"
        path.write_text(text, encoding="utf-8")
        yield World(root, path, server, www, tmp_path / "cache", t137)


def python_org(w: World, *, t138_sha: str | None = None, t137_sha: str | None = None) -> None:
    """python.org's API: 3.13.8 (listed, its tarball on no mirror), 3.13.7, 3.13.6, 3.13.5, 3.14.7,
    3.15.0rc1 (a pre-release) and 3.12.11 (not in the matrix)."""
    w.server.routes[RELEASES] = json.dumps(
        [
            release_item("3.12.11", 11, "2025-06-03"),
            release_item("3.13.5", 5, "2025-06-11"),
            release_item("3.13.7", 7, "2026-04-14"),
            release_item("3.13.8", 8, "2026-06-01"),
            release_item("3.13.6", 6, "2026-02-01"),
            release_item("3.14.7", 47, "2026-08-05"),
            {**release_item("3.15.0rc1", 150, "2026-07-01", pre=True), "name": "Python 3.15.0rc1"},
        ]
    ).encode()
    files = {7: ("3.13.7", t137_sha or sha(w.t137)), 8: ("3.13.8", t138_sha or sha(b"3.13.8")), 6: ("3.13.6", "1" * 64)}
    for rid, (version, digest) in files.items():
        w.server.routes[f"{API}/release_file/?release={rid}"] = json.dumps([file_item(version, rid, digest)]).encode()


# ---------------------------------------------------------------------------------- rewriting


def test_rewrite_changes_only_the_three_values_byte_for_byte() -> None:
    text = (ROOT / "matrix.yaml").read_text(encoding="utf-8")
    for old in OLD_313:
        assert text.count(old) == 1
    new = update.rewrite_matrix(text, "matrix.yaml", {"3.13.5": ("3.13.99", "ab" * 32, date(2027, 1, 2))})
    expected = text.replace(OLD_313[0], '"3.13.99"').replace(OLD_313[1], "ab" * 32)
    expected = expected.replace(f"released: {OLD_313[2]}", "released: 2027-01-02")
    assert new == expected
    # every comment line, and every line but the three, is the same
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    assert len(changed) == 3 and all("3.13.5" in a or "93e583" in a or "2025-06-11" in a for a, _ in changed)
    m = matrix.loads(new)
    v = next(v for v in m.versions if v.minor == "3.13")
    assert (v.version, v.sha256, v.released) == ("3.13.99", "ab" * 32, date(2027, 1, 2))


def test_rewrite_keeps_quoting_flow_style_comments_non_ascii_and_crlf() -> None:
    text = (
        "# ünïcode → before the values: positions are characters, not bytes\r\n"
        "versions:\r\n"
        "  - {version: '3.13.5', sha256: " + "c" * 64 + ", released: 2025-06-11}   # flow → kept\r\n"
        "  - version: 3.14.7          # plain\r\n"
        "    sha256: " + "d" * 64 + "\r\n"
        "    released: 2026-08-05\r\n"
    )
    new = update.rewrite_matrix(
        text,
        "m.yaml",
        {"3.13.5": ("3.13.15", "e" * 64, date(2026, 8, 5)), "3.14.7": ("3.14.8", "f" * 64, date(2026, 9, 9))},
    )
    assert new == (
        "# ünïcode → before the values: positions are characters, not bytes\r\n"
        "versions:\r\n"
        "  - {version: '3.13.15', sha256: " + "e" * 64 + ", released: 2026-08-05}   # flow → kept\r\n"
        "  - version: 3.14.8          # plain\r\n"
        "    sha256: " + "f" * 64 + "\r\n"
        "    released: 2026-09-09\r\n"
    )


def test_rewrite_refuses_a_block_scalar_and_a_missing_release() -> None:
    text = "versions:\n  - version: |\n      3.13.5\n    sha256: " + "a" * 64 + "\n    released: 2025-06-11\n"
    with pytest.raises(MatrixError, match="block scalar"):
        update.rewrite_matrix(text, "m.yaml", {"3.13.5\n": ("3.13.6", "b" * 64, date(2026, 1, 1))})
    with pytest.raises(MatrixError, match="no `versions:` item"):
        update.rewrite_matrix(text, "m.yaml", {"3.13.4": ("3.13.6", "b" * 64, date(2026, 1, 1))})


def test_version_order() -> None:
    order = ["3.13.9", "3.13.10", "3.14.0a1", "3.14.0b2", "3.14.0rc1", "3.14.0", "3.14.1"]
    assert sorted(reversed(order), key=update.version_key) == order


# ------------------------------------------------------------------------------- the update


def test_python_org_release_is_fetched_verified_and_written(world: World) -> None:
    python_org(world)
    before = world.dockerfiles()
    lines: list[str] = []
    res = update.update(world.ctx(), python_org_api=world.api, say=lines.append)
    u313, u314 = {u.minor: u for u in res.updates}["3.13"], {u.minor: u for u in res.updates}["3.14"]
    assert u313.newest is not None and u313.newest.version == "3.13.7" and u313.newest.origin == "python.org"
    assert u313.released == date(2026, 4, 14)  # python.org's day, not the tarball's (2026-03-03)
    assert u313.newest.sigstore == "https://www.python.org/ftp/python/3.13.7/Python-3.13.7.tar.xz.sigstore"
    assert [v for v, _ in u313.unfetchable] == ["3.13.8"] and "HTTP 404" in u313.unfetchable[0][1]
    assert u314.newest is None and u314.unfetchable == ()
    # only what was needed was asked: the list, and the files of the two newer 3.13 releases
    assert world.server.seen[:3] == [RELEASES, f"{API}/release_file/?release=8", f"{API}/release_file/?release=7"]
    # the verified tarball is in the cache; matrix.yaml holds it, every other byte unchanged
    assert (world.cache / "Python-3.13.7.tar.xz").read_bytes() == world.t137
    text = world.matrix_path.read_text(encoding="utf-8")
    assert '"3.13.7"' in text and sha(world.t137) in text and "released: 2026-04-14" in text
    assert res.written and '+  - version: "3.13.7"' in res.diff and "-    released: 2025-06-11" in res.diff
    # the Dockerfiles of every 3.13 entry were re-rendered, and only those
    after = world.dockerfiles()
    changed = sorted(p for p in after if after[p] != before.get(p))
    assert changed == sorted(res.dockerfiles) and changed and all(p.startswith("dockerfiles/3.13-") for p in changed)
    assert all(b"3.13.7" in after[p] for p in changed)
    assert api.render_dockerfiles(world.ctx(), check=True) == []
    assert any("matrix.lock pins the previous source" in n for n in res.notes)
    printed = "\n".join(update.summary(res))
    assert "3.13: 3.13.5 → 3.13.7" in printed and "3.13.8: listed by python.org, but cannot be fetched" in printed


def test_debian_fallback_when_python_org_cannot_be_reached(world: World) -> None:
    digest = sha(world.t137)
    world.write_sources("sid", sources_paragraph("3.13.8", sha(b"gone")) + sources_paragraph("3.13.7", digest))
    world.write_sources("forky", sources_paragraph("3.13.7", digest) + sources_paragraph("3.15.0~rc1", "2" * 64))
    world.write_sources("trixie", sources_paragraph("3.13.5", OLD_313[1], "2+deb13u5"))
    lines: list[str] = []
    res = update.update(world.ctx(), python_org_api=closed_port_url() + API, say=lines.append)
    u313 = {u.minor: u for u in res.updates}["3.13"]
    assert u313.newest is not None and u313.newest.origin == "Debian sid"
    assert u313.released == TARBALL_DAY.date()  # Debian has no release day: the tarball's newest mtime
    assert [v for v, _ in u313.unfetchable] == ["3.13.8"]
    assert any("python.org's release metadata" in line and "unreachable" in line for line in lines)
    assert any("has no suite experimental (HTTP 404)" in line for line in lines)
    assert "released: 2026-03-03" in world.matrix_path.read_text(encoding="utf-8")


def test_nothing_fetchable_leaves_everything_as_it_is(world: World) -> None:
    world.write_sources("sid", sources_paragraph("3.13.9", sha(b"x")) + sources_paragraph("3.14.10", sha(b"y")))
    before, dockerfiles = world.matrix_path.read_bytes(), world.dockerfiles()
    res = update.update(world.ctx(), python_org_api="off", say=lambda _: None)
    assert not res.available and not res.written and res.diff == ""
    assert {u.minor: [v for v, _ in u.unfetchable] for u in res.updates} == {"3.14": ["3.14.10"], "3.13": ["3.13.9"]}
    assert world.matrix_path.read_bytes() == before and world.dockerfiles() == dockerfiles
    assert "is current" in update.summary(res)[-1]


def test_check_changes_nothing(world: World) -> None:
    python_org(world)
    before, dockerfiles = world.matrix_path.read_bytes(), world.dockerfiles()
    res = update.update(world.ctx(), check=True, python_org_api=world.api, say=lambda _: None)
    assert res.available and not res.written and '+  - version: "3.13.7"' in res.diff
    assert res.dockerfiles and all(p.startswith("dockerfiles/3.13-") for p in res.dockerfiles)
    assert world.matrix_path.read_bytes() == before and world.dockerfiles() == dockerfiles


def test_a_hash_that_does_not_match_is_an_error_and_changes_nothing(world: World) -> None:
    python_org(world, t137_sha="9" * 64)
    before = world.matrix_path.read_bytes()
    with pytest.raises(UpdateError, match="sha256 mismatch") as err:
        update.update(world.ctx(), python_org_api=world.api, say=lambda _: None)
    assert err.value.exit_code == 17 and "nothing was changed" in str(err.value)
    assert world.matrix_path.read_bytes() == before
    assert not (world.cache / "Python-3.13.7.tar.xz").exists() and not list(world.cache.glob(".partial-*"))


@pytest.mark.parametrize(
    ("minor", "message"),
    [
        ("3.12", "has no 3.12 release \\(it has 3.14, 3.13\\)"),
        ("3", "'3' is not a minor version"),
        ("3.13.5", "not a minor"),
    ],
)
def test_an_unknown_minor_is_an_error(world: World, minor: str, message: str) -> None:
    with pytest.raises(UpdateError, match=message):
        update.update(world.ctx(), [minor], python_org_api=world.api)
    assert world.server.seen == []  # refused before anything was asked


def test_only_the_named_minor_is_updated(world: World) -> None:
    python_org(world)
    res = update.update(world.ctx(), ["3.14"], python_org_api=world.api, say=lambda _: None)
    assert [u.minor for u in res.updates] == ["3.14"] and not res.available
    assert '"3.13.5"' in world.matrix_path.read_text(encoding="utf-8")


def test_a_malformed_sources_index_is_an_error(world: World) -> None:
    world.write_sources("sid", "<html><body>Welcome to the proxy</body></html>\n")
    with pytest.raises(UpdateError, match=r"dists/sid/main/source/Sources.xz is malformed: line 1"):
        update.update(world.ctx(), python_org_api="off")
    world.write_sources("sid", sources_paragraph("3.13.7", sha(world.t137)), compress=False)
    with pytest.raises(UpdateError, match="is not valid xz"):
        update.update(world.ctx(), python_org_api="off")
    bad = sources_paragraph("3.13.7", sha(world.t137)).replace("orig.tar.xz", "orig.tar.gz")
    world.write_sources("sid", "Package: zlib\nVersion: 1\n\n" + bad)
    with pytest.raises(UpdateError, match=r"line 4: python3.13 3.13.7-1 lists no sha256 for python3.13_3.13.7.orig"):
        update.update(world.ctx(), python_org_api="off")


def test_malformed_python_org_metadata_is_an_error(world: World) -> None:
    world.server.routes[RELEASES] = b"<html>maintenance</html>"
    with pytest.raises(UpdateError, match="not JSON"):
        update.update(world.ctx(), python_org_api=world.api)
    world.server.routes[RELEASES] = json.dumps([{"name": "Python 3.13.9", "resource_uri": "nope"}]).encode()
    with pytest.raises(UpdateError, match="names no release id"):
        update.update(world.ctx(), python_org_api=world.api)
    world.server.routes[RELEASES] = json.dumps({"detail": "throttled"}).encode()
    with pytest.raises(UpdateError, match="dict, not a list"):
        update.update(world.ctx(), python_org_api=world.api)


def test_unreachable_sources_are_an_error(world: World) -> None:
    text = world.matrix_path.read_text(encoding="utf-8").replace(world.server.url, closed_port_url())
    world.matrix_path.write_text(text, encoding="utf-8")
    with pytest.raises(UpdateError, match=r"cannot read the Debian index .*unreachable"):
        update.update(world.ctx(), python_org_api="off")


def test_a_failed_render_restores_matrix_yaml(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    python_org(world)
    before = world.matrix_path.read_bytes()
    real = api.render_dockerfiles
    calls: list[str] = []

    def flaky(ctx: api.Context, check: bool = False) -> list[str]:
        calls.append(next(v.version for v in ctx.matrix.versions if v.minor == "3.13"))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(ctx, check)

    monkeypatch.setattr(api, "render_dockerfiles", flaky)
    with pytest.raises(KeyboardInterrupt):
        update.update(world.ctx(), python_org_api=world.api, say=lambda _: None)
    assert world.matrix_path.read_bytes() == before and calls == ["3.13.7", "3.13.5"]


def test_invoke_update_exit_codes(world: World) -> None:
    python_org(world)
    env = {**os.environ, "CPFORGE_PYTHON_ORG_API": world.api, "PYTHONPATH": str(ROOT)}
    invoke = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]
    before = world.matrix_path.read_bytes()
    check = subprocess.run(
        [*invoke, "update", "--check", "--matrix-file", str(world.matrix_path)], env=env, capture_output=True, text=True
    )
    assert check.returncode == UpdateAvailable.exit_code == 18, check.stderr
    assert "an update exists" in check.stdout and world.matrix_path.read_bytes() == before
    bad = subprocess.run(
        [*invoke, "update", "--minor", "3.11", "--matrix-file", str(world.matrix_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 17 and "cpforge: error: --minor 3.11" in bad.stderr and "fix:" in bad.stderr


def test_a_python_org_release_without_a_tarball_sha256_is_skipped_with_the_reason(world: World) -> None:
    python_org(world)
    world.server.routes[f"{API}/release_file/?release=8"] = json.dumps([file_item("3.13.8", 8, "")]).encode()
    world.server.routes[f"{API}/release_file/?release=7"] = json.dumps(
        [
            {
                **file_item("3.13.7", 7, sha(world.t137)),
                "url": "https://www.python.org/ftp/python/3.13.7/Python-3.13.7.tgz",
            }
        ]
    ).encode()
    res = update.update(world.ctx(), ["3.13"], check=True, python_org_api=world.api, say=lambda _: None)
    (u,) = res.updates
    assert u.newest is None and u.unfetchable == (
        ("3.13.8", "python.org lists no sha256 for Python-3.13.8.tar.xz"),
        ("3.13.7", "python.org lists no Python-3.13.7.tar.xz for Python 3.13.7"),
        ("3.13.6", u.unfetchable[2][1]),
    )
    assert "listed by python.org, but cannot be fetched" in u.unfetchable[2][1]
