"""`invoke update` and `invoke outdated` against the real Debian mirror (network to deb.debian.org only).

What the mirror lists changes over time, so the expectations are checked against the mirror itself
(HTTP HEAD of each pool file, hashlib, tarfile, and the real `dpkg --compare-versions`) rather than
hard-coded; the pins judged by `outdated` are a frozen snapshot (tests/fixtures/matrix.lock.2026-11-29),
so Debian's newer security updates keep them stale.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from cpforge import api, outdated, update
from cpforge.update import MinorUpdate
from tests.replay import ReplayServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures"
MIRROR = "http://deb.debian.org/debian"
API = "/api/v2/downloads"


def pool_status(version: str) -> int:
    minor = version.rsplit(".", 1)[0]
    url = f"{MIRROR}/pool/main/p/python{minor}/python{minor}_{version}.orig.tar.xz"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def newest_mtime_day(path: Path) -> date:
    with tarfile.open(path) as tar:
        return datetime.fromtimestamp(max(m.mtime for m in tar.getmembers()), UTC).date()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sources-cache")  # shared: each tarball is downloaded once per module


def repo_copy(tmp: Path, cache: Path) -> Path:
    """The repository's matrix (sources: the Debian mirror only, whether or not python.org's FTP is
    reachable where the test runs), templates, Dockerfiles and the frozen lock."""
    root = tmp / "repo"
    root.mkdir()
    for name in ("templates", "dockerfiles"):
        shutil.copytree(ROOT / name, root / name)
    shutil.copy(FIXTURES / "matrix.lock.2026-11-29", root / "matrix.lock")
    text = (ROOT / "matrix.yaml").read_text(encoding="utf-8")
    text = text.replace("    - https://www.python.org/ftp/python\n", "").replace(
        "  cache: sources", f"  cache: {cache}"
    )
    assert "python.org/ftp" not in text and str(cache) in text
    (root / "matrix.yaml").write_text(text, encoding="utf-8")
    return root


def moved(text: str, u: MinorUpdate) -> str:
    """``text`` with the minor's three values replaced by plain string replacement (each occurs once),
    after checking that the tarball in the cache is the release's."""
    assert u.newest is not None and u.tarball is not None and u.released is not None
    assert hashlib.sha256(u.tarball.read_bytes()).hexdigest() == u.newest.sha256
    old = (f'"{u.current.version}"', u.current.sha256, f"released: {u.current.released.isoformat()}")
    assert all(text.count(x) == 1 for x in old)
    new = (f'"{u.newest.version}"', u.newest.sha256, f"released: {u.released.isoformat()}")
    for a, b in zip(old, new, strict=True):
        text = text.replace(a, b)
    return text


def test_update_from_the_debian_mirror(tmp_path: Path, cache: Path) -> None:
    root = repo_copy(tmp_path, cache)
    ctx = api.Context.create(root / "matrix.yaml", root=root)
    before = (root / "matrix.yaml").read_text(encoding="utf-8")
    lines: list[str] = []
    res = update.update(ctx, python_org_api="off", say=lines.append)
    print("\n".join(lines + update.summary(res)))
    assert {u.minor for u in res.updates} == {"3.14", "3.13"}
    expected = before
    for u in res.updates:
        assert u.source.startswith("Debian http://deb.debian.org/debian")
        for version, why in u.unfetchable:  # listed, newer than what was chosen, and really not in the pool
            assert pool_status(version) == 404, version
            assert "HTTP 404" in why
            assert u.newest is None or update.version_key(version) > update.version_key(u.newest.version)
        if u.newest is not None:
            assert pool_status(u.newest.version) == 200
            assert u.released == newest_mtime_day(u.tarball)  # Debian has no release day: the tarball's
            expected = moved(expected, u)
    assert (root / "matrix.yaml").read_text(encoding="utf-8") == expected  # every other byte as it was
    assert res.written == res.available
    if res.available:
        assert api.render_dockerfiles(api.Context.create(root / "matrix.yaml", root=root), check=True) == []
        assert res.dockerfiles and all(p.startswith("dockerfiles/") for p in res.dockerfiles)


def test_update_from_a_recorded_python_org_response(tmp_path: Path, cache: Path) -> None:
    recorded = json.loads((FIXTURES / "python_org_api.json").read_text())
    www = tmp_path / "www"
    www.mkdir()
    routes = {f"{API}/{k}": json.dumps(v).encode() for k, v in recorded.items() if not k.startswith("_")}
    root = repo_copy(tmp_path, cache)
    before = (root / "matrix.yaml").read_text(encoding="utf-8")
    with ReplayServer(www, routes) as server:
        ctx = api.Context.create(root / "matrix.yaml", root=root)
        res = update.update(ctx, python_org_api=server.url + API, say=print)
        seen = list(server.seen)
    print("\n".join(update.summary(res)))
    # the list, then the files of the releases newer than the matrix's, newest first; nothing else
    assert seen == [
        f"{API}/release/?is_published=true&pre_release=false&version=3",
        f"{API}/release_file/?release=1093",
        f"{API}/release_file/?release=1091",
    ]
    by = {u.minor: u for u in res.updates}
    expected = before
    for minor, version, day in (("3.14", "3.14.8", date(2026, 10, 7)), ("3.13", "3.13.15", date(2026, 8, 5))):
        u = by[minor]
        assert u.source == f"python.org ({server.url}{API})"
        if pool_status(version) == 200:  # fetchable from the mirror: taken, dated by python.org
            assert u.newest is not None and u.newest.version == version and u.released == day
            assert u.newest.sigstore == f"https://www.python.org/ftp/python/{version}/Python-{version}.tar.xz.sigstore"
            expected = moved(expected, u)
        else:  # listed by python.org, not on the mirror: reported, and the minor stays
            assert u.newest is None and [v for v, _ in u.unfetchable] == [version]
            assert "listed by python.org, but cannot be fetched" in u.unfetchable[0][1]
    assert (root / "matrix.yaml").read_text(encoding="utf-8") == expected


def dpkg_newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


@pytest.fixture
def judged_root(tmp_path: Path, cache: Path) -> Path:
    return repo_copy(tmp_path, cache)


def check_package_findings(entry: outdated.EntryStatus) -> None:
    for f in entry.findings:
        if f.kind != "cpython":
            assert f.where in ("trixie", "trixie-updates", "trixie-security")
            if shutil.which("dpkg"):
                assert dpkg_newer(f.newer, f.have), f


def test_outdated_judges_the_locked_pins_against_the_mirror(judged_root: Path) -> None:
    ctx = api.Context.create(judged_root / "matrix.yaml", root=judged_root)
    res = outdated.outdated(ctx, use_lock=True, python_org_api="off", say=print)
    print("\n".join(outdated.table(res)))
    (entry,) = res.entries
    assert entry.key == "3.13-default-trixie-amd64@release" and entry.checked == 87
    assert entry.stale and any(f.kind == "base-package" for f in entry.findings)
    check_package_findings(entry)
    assert res.indexes == (
        f"{MIRROR}/dists/trixie/main/binary-amd64/Packages.xz",
        f"{MIRROR}/dists/trixie-updates/main/binary-amd64/Packages.xz",
        "http://deb.debian.org/debian-security/dists/trixie-security/main/binary-amd64/Packages.xz",
    )


def test_outdated_judges_a_built_entrys_runtime_debs(judged_root: Path, tmp_path: Path) -> None:
    """A report entry whose cpython.tar pins two .deb files Debian has since superseded: libzstd1 by a
    security update, libssl3t64 (pinned from the security archive) by a newer point release in trixie."""
    lines = [
        f"libzstd1:amd64 {MIRROR}/pool/main/libz/libzstd/libzstd1_1.5.7+dfsg-1_amd64.deb "
        "2f6a2aeacfc925eba8b00ac9139bc4bfccf8cacb09eb93de067074b26948eef9",
        "libssl3t64:amd64 http://deb.debian.org/debian-security/pool/updates/main/o/openssl/"
        "libssl3t64_3.5.7-1~deb13u3_amd64.deb ff16bc048bcd7d1b256094450b79c77947d8e76fe2a24bd99b91021d591fa074",
        f"readline-common {MIRROR}/pool/main/r/readline/readline-common_8.2-6_all.deb "
        "f77e8aa0bf0de618f11cb0b21658a4ed60f177d63b3cf26d7fc3706b6d0eaaa9",
    ]
    data = "".join(f"{line}\n" for line in lines).encode()
    tarball = tmp_path / "cpython.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo(outdated.RUNTIME_DEBS)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = "3.13-default-trixie-amd64@quick"
    entry = {"key": key, "id": key.split("@")[0], "profile": "quick", "version": "3.13.5", "variant": "default"}
    entry |= {"platform": "linux/amd64", "status": "passed", "artifact": {"path": str(tarball)}}
    (judged_root / "build").mkdir()
    (judged_root / "build/report.json").write_text(json.dumps({"schema": 1, "entries": [entry]}))
    ctx = api.Context.create(judged_root / "matrix.yaml", root=judged_root, out=judged_root / "build")
    res = outdated.outdated(ctx, python_org_api="off", say=print)
    print("\n".join(outdated.table(res)))
    (judged,) = res.entries
    assert judged.checked == 3 + 81  # the three .deb pins and the locked base image's packages
    debs = {f.name: f for f in judged.findings if f.kind == "runtime-deb"}
    assert {"libzstd1:amd64", "libssl3t64:amd64"} <= set(debs)
    assert debs["libzstd1:amd64"].have == "1.5.7+dfsg-1" and debs["libssl3t64:amd64"].have == "3.5.7-1~deb13u3"
    check_package_findings(judged)
