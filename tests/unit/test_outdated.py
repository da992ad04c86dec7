"""`invoke outdated`: stale CPython, runtime .deb pins and base packages, against a Debian-shaped mirror.

A real HTTP server on 127.0.0.1 serves Packages.xz for trixie, trixie-updates and (on the
debian-security path) trixie-security, plus a Sources index and a tarball for CPython; the entries come
from a real report with a real cpython.tar, or from a matrix.lock; `invoke outdated` runs as a process.
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
from pathlib import Path

import pytest

from cpforge import api, outdated
from cpforge.errors import EntriesStale, ReportError
from cpforge.update import UpdateError
from tests.replay import ReplayServer

ROOT = Path(__file__).resolve().parents[2]
KEY = "3.13-default-trixie-amd64@quick"
SHA_3135 = "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640"

TRIXIE = {  # (package, version, architecture)
    "libc6": ("2.41-12", "amd64"),
    "passwd": ("1:4.17.4-2", "amd64"),
    "login.defs": ("1:4.17.4-2", "all"),
    "libssl3t64": ("3.5.1-1", "amd64"),
    "libffi8": ("3.4.8-2", "amd64"),
    "readline-common": ("8.2-6", "all"),
}
UPDATES = {"libc6": ("2.41-12+deb13u1", "amd64")}
SECURITY = {"libssl3t64": ("3.5.1-1+deb13u1", "amd64"), "passwd": ("1:4.17.4-1+deb13u1", "amd64")}  # passwd: older
BASE = {"libc6:amd64": "2.41-12", "passwd": "1:4.17.4-2", "login.defs": "1:4.17.4-2"}
DEBS = [
    ("libffi8:amd64", "pool/main/libf/libffi/libffi8_3.4.8-2_amd64.deb"),
    ("libssl3t64:amd64", "pool/main/o/openssl/libssl3t64_3.5.1-1_amd64.deb"),
    ("readline-common", "pool/main/r/readline/readline-common_8.2-6_all.deb"),
]


def packages(entries: dict[str, tuple[str, str]]) -> bytes:
    text = "".join(
        f"Package: {n}\nVersion: {v}\nArchitecture: {a}\nPriority: optional\n\n" for n, (v, a) in entries.items()
    )
    return lzma.compress(text.encode())


def cpython_tar(path: Path, lines: list[str]) -> Path:
    data = "".join(f"{line}\n" for line in lines).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(outdated.RUNTIME_DEBS)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class Mirror:
    root: Path
    matrix_path: Path
    server: ReplayServer
    www: Path
    tarball: Path

    def ctx(self) -> api.Context:
        return api.Context.create(self.matrix_path, root=self.root, out=self.root / "build")

    def report(self, **entry: object) -> Path:
        data = {
            "key": KEY,
            "id": KEY.split("@")[0],
            "profile": "quick",
            "version": "3.13.5",
            "variant": "default",
            "platform": "linux/amd64",
            "status": "passed",
            "artifact": {"path": str(self.tarball), "sha256": "0" * 64},
            **entry,
        }
        path = self.root / "build/report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"schema": 1, "entries": [data]}))
        return path


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    www = tmp_path / "www"
    for base, suite, entries in (
        ("debian", "trixie", TRIXIE),
        ("debian", "trixie-updates", UPDATES),
        ("debian-security", "trixie-security", SECURITY),
    ):
        d = www / base / "dists" / suite / "main/binary-amd64"
        d.mkdir(parents=True)
        (d / "Packages.xz").write_bytes(packages(entries))
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(ROOT / "templates", root / "templates")
    with ReplayServer(www) as server:
        text = (ROOT / "matrix.yaml").read_text(encoding="utf-8")
        text = text.replace("http://deb.debian.org/debian", f"{server.url}/debian")
        text = text.replace("    - https://www.python.org/ftp/python\n", "").replace(
            "cache: sources", f"cache: {tmp_path}/c"
        )
        path = root / "matrix.yaml"
        path.write_text(text, encoding="utf-8")
        lock = {
            "schema": 1,
            "bases": {"cpforge/debian:trixie-amd64": {"image_id": "sha256:0", "packages": BASE}},
            "entries": {
                "3.13-default-trixie-amd64@release": {
                    "inputs": {"source_sha256": SHA_3135},
                    "runtime_packages": {**BASE, "libffi8:amd64": "3.4.8-2", "libssl3t64:amd64": "3.5.1-1"},
                }
            },
        }
        (root / "matrix.lock").write_text(json.dumps(lock))
        lines = [f"{pkg} {server.url}/debian/{uri} {'a' * 64}" for pkg, uri in DEBS]
        yield Mirror(root, path, server, www, cpython_tar(tmp_path / "cpython.tar", lines))


def add_cpython_release(m: Mirror, version: str) -> None:
    """List ``version`` in sid's Sources and put its tarball in the pool."""
    data = f"a tarball of {version}".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        info = tarfile.TarInfo(f"Python-{version}/README.rst")
        info.size, info.mtime = len(data), 1_770_000_000
        tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    pool = m.www / "debian/pool/main/p/python3.13"
    pool.mkdir(parents=True, exist_ok=True)
    (pool / f"python3.13_{version}.orig.tar.xz").write_bytes(blob)
    sources = (
        f"Package: python3.13\nVersion: {version}-1\nDirectory: pool/main/p/python3.13\nChecksums-Sha256:\n"
        f" {hashlib.sha256(blob).hexdigest()} {len(blob)} python3.13_{version}.orig.tar.xz\n"
    )
    d = m.www / "debian/dists/sid/main/source"
    d.mkdir(parents=True, exist_ok=True)
    (d / "Sources.xz").write_bytes(lzma.compress(sources.encode()))


def findings(status: outdated.EntryStatus) -> set[tuple[str, str, str, str, str]]:
    return {(f.kind, f.name, f.have, f.newer, f.where) for f in status.findings}


def test_report_entry_stale_for_cpython_a_runtime_deb_and_a_base_package(mirror: Mirror) -> None:
    add_cpython_release(mirror, "3.13.7")
    mirror.report()
    res = outdated.outdated(mirror.ctx(), python_org_api="off", say=lambda _: None)
    (entry,) = res.entries
    assert entry.key == KEY and entry.stale and res.stale and entry.checked == 6
    assert findings(entry) == {
        ("cpython", "cpython", "3.13.5", "3.13.7", "listed by Debian sid; `invoke update` moves the matrix to it"),
        ("runtime-deb", "libssl3t64:amd64", "3.5.1-1", "3.5.1-1+deb13u1", "trixie-security"),
        ("base-package", "libc6:amd64", "2.41-12", "2.41-12+deb13u1", "trixie-updates"),
    }  # passwd's security version is older than the pin: not a finding
    assert res.indexes == (
        f"{mirror.server.url}/debian/dists/trixie/main/binary-amd64/Packages.xz",
        f"{mirror.server.url}/debian/dists/trixie-updates/main/binary-amd64/Packages.xz",
        f"{mirror.server.url}/debian-security/dists/trixie-security/main/binary-amd64/Packages.xz",
    )
    table = "\n".join(outdated.table(res))
    assert "runtime-deb libssl3t64:amd64 3.5.1-1 → 3.5.1-1+deb13u1 (trixie-security)" in table
    assert "1 of 1 entry stale" in table
    data = res.to_json()
    assert data["stale"] is True and data["entries"][0]["packages_checked"] == 6
    assert {f["name"] for f in data["entries"][0]["findings"]} == {"cpython", "libssl3t64:amd64", "libc6:amd64"}


def test_a_current_entry_is_not_stale(mirror: Mirror) -> None:
    for suite in ("trixie-updates",):
        (mirror.www / "debian/dists" / suite / "main/binary-amd64/Packages.xz").write_bytes(packages({}))
    sec = mirror.www / "debian-security/dists/trixie-security/main/binary-amd64/Packages.xz"
    sec.write_bytes(packages({"passwd": SECURITY["passwd"]}))
    add_cpython_release(mirror, "3.13.5")  # nothing newer than the matrix
    mirror.report()
    res = outdated.outdated(mirror.ctx(), python_org_api="off", say=lambda _: None)
    assert not res.stale and res.entries[0].findings == ()
    assert "current (6 Debian packages checked)" in "\n".join(outdated.table(res))


def test_lock_entries_are_judged_without_a_report(mirror: Mirror) -> None:
    add_cpython_release(mirror, "3.13.5")
    res = outdated.outdated(mirror.ctx(), use_lock=True, python_org_api="off", say=lambda _: None)
    (entry,) = res.entries
    assert entry.origin == "matrix.lock" and entry.version == "3.13.5" and entry.checked == 5
    assert findings(entry) == {
        ("runtime-package", "libssl3t64:amd64", "3.5.1-1", "3.5.1-1+deb13u1", "trixie-security"),
        ("base-package", "libc6:amd64", "2.41-12", "2.41-12+deb13u1", "trixie-updates"),
    }


def test_a_lock_whose_source_the_matrix_replaced_is_stale(mirror: Mirror) -> None:
    add_cpython_release(mirror, "3.13.5")
    lock = json.loads((mirror.root / "matrix.lock").read_text())
    lock["entries"]["3.13-default-trixie-amd64@release"]["inputs"]["source_sha256"] = "f" * 64
    (mirror.root / "matrix.lock").write_text(json.dumps(lock))
    (entry,) = outdated.outdated(mirror.ctx(), use_lock=True, python_org_api="off", say=lambda _: None).entries
    assert ("cpython", "cpython", "sha256 ffffffffffff…", "3.13.5", "matrix.yaml pins it") in findings(entry)


def test_missing_suites_pins_and_artifacts_are_noted(mirror: Mirror) -> None:
    add_cpython_release(mirror, "3.13.5")
    shutil.rmtree(mirror.www / "debian/dists/trixie-updates")
    mirror.report(artifact={"path": str(mirror.root / "gone.tar")})
    other = json.loads((mirror.root / "build/report.json").read_text())
    other["entries"].append({**other["entries"][0], "key": "3.12-default-trixie-amd64@quick"})
    (mirror.root / "build/report.json").write_text(json.dumps(other))
    res = outdated.outdated(mirror.ctx(), python_org_api="off", say=lambda _: None)
    (entry,) = res.entries
    assert any("runtime .deb pins unknown" in n for n in entry.notes) and entry.checked == 3
    assert any("trixie-updates/main/binary-amd64/Packages.xz: HTTP 404" in n for n in res.notes)
    assert any(n.startswith("3.12-default-trixie-amd64@quick: not in matrix.yaml") for n in res.notes)


def test_no_report_says_how_to_get_one(mirror: Mirror) -> None:
    with pytest.raises(ReportError, match="no build report") as err:
        outdated.outdated(mirror.ctx(), python_org_api="off")
    assert "--lock" in str(err.value) and err.value.exit_code == 9


def test_a_malformed_runtime_debs_line_names_the_file_and_line(mirror: Mirror) -> None:
    add_cpython_release(mirror, "3.13.5")
    cpython_tar(mirror.tarball, [f"libffi8:amd64 {mirror.server.url}/debian/{DEBS[0][1]} {'a' * 64}", "garbage"])
    mirror.report()
    with pytest.raises(UpdateError, match=r"cpython.tar:usr/local/share/cpforge/runtime-debs.txt:2: not `PACKAGE"):
        outdated.outdated(mirror.ctx(), python_org_api="off", say=lambda _: None)


def test_runtime_debs_parse_epochs_from_the_file_name(tmp_path: Path) -> None:
    tar = cpython_tar(
        tmp_path / "c.tar",
        [
            f"libcap2:amd64 http://m/debian/pool/main/libc/libcap2/libcap2_1%3a2.75-10_amd64.deb {'b' * 64}",
            f"netbase http://m/debian/pool/main/n/netbase/netbase_6.5_all.deb {'c' * 64}",
        ],
    )
    assert outdated.runtime_debs(tar) == [("libcap2:amd64", "1:2.75-10"), ("netbase", "6.5")]
    empty = tmp_path / "old.tar"
    with tarfile.open(empty, "w"):
        pass
    assert outdated.runtime_debs(empty) is None


def test_security_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(outdated.SECURITY_ENV, raising=False)
    assert outdated.security_mirror("http://deb.debian.org/debian/") == "http://deb.debian.org/debian-security"
    assert outdated.security_mirror("http://mirror.example/ubuntu") == "http://mirror.example/ubuntu"
    monkeypatch.setenv(outdated.SECURITY_ENV, "http://security.example/debian-security/")
    assert outdated.security_mirror("http://deb.debian.org/debian") == "http://security.example/debian-security"


def test_invoke_outdated_exit_codes_and_json(mirror: Mirror) -> None:
    add_cpython_release(mirror, "3.13.5")
    mirror.report()
    invoke = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "outdated"]
    args = ["--matrix-file", str(mirror.matrix_path), "--out", str(mirror.root / "build"), "--python-org-api", "off"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*invoke, "--json", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == EntriesStale.exit_code == 19, proc.stderr
    data = json.loads(proc.stdout)  # only JSON on stdout; progress went to stderr
    assert data["stale"] and "reading" in proc.stderr
    proc = subprocess.run([*invoke, *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 19 and "reading" in proc.stdout and "ENTRY" in proc.stdout
    assert json.loads(proc.stdout[proc.stdout.index("\n{") :])["stale"] is True
    for suite, entries in (("debian/dists/trixie-updates", {}), ("debian-security/dists/trixie-security", {})):
        (mirror.www / suite / "main/binary-amd64/Packages.xz").write_bytes(packages(entries))
    proc = subprocess.run([*invoke, "--json", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["stale"] is False
