"""Debian indexes (deb822 paragraphs, Sources, Packages) and dpkg's version order, checked against dpkg itself."""

from __future__ import annotations

import functools
import itertools
import shutil
import subprocess

import pytest

from cpforge import debian_index as di

# Every kind of difference dpkg orders: epochs, ~ (before everything, even the end), letters before
# other characters, numeric digit runs, revisions, and the versions matrix.lock pins today.
VERSIONS = [
    "0",
    "1.0",
    "1.0-0",
    "1.0-1",
    "1.0~rc1",
    "1.0~rc1-1",
    "1.0~",
    "1.0~~",
    "1.0~a",
    "1.0a",
    "1.0+",
    "1.0.",
    "1.0.1",
    "1.00",
    "1.0+deb13u1",
    "1.0-1+deb13u1",
    "1.0-1~deb13u1",
    "1.0-1+b1",
    "1:0.1",
    "2:1",
    "a1",
    "2.41-12+deb13u5",
    "2.41-12+deb13u10",
    "1.5.7+dfsg-1",
    "1.5.7+dfsg-1+deb13u1",
    "10.46-1~deb13u3",
    "1:4.16.0-2+really2.41.5-0+deb13u1",
    "1:4.17.4-2",
    "1:4.17.4-2+deb13u1",
    "3.14.9",
    "3.14.10",
    "1.2.3-1ubuntu0.1",
    "1.2.3-1build1",
]


def test_known_orders() -> None:
    assert di.compare_versions("1.0~rc1", "1.0") < 0
    assert di.compare_versions("1.0", "1.0+deb13u1") < 0
    assert di.compare_versions("1:0.1", "9.9") > 0
    assert di.compare_versions("3.14.10", "3.14.9") > 0
    assert di.compare_versions("1.5.7+dfsg-1+deb13u1", "1.5.7+dfsg-1") > 0
    assert di.compare_versions("1.00", "1.0") == 0
    assert di.compare_versions("1.0-0", "1.0") == 0
    assert di.compare_versions("10.46-1~deb13u3", "10.46-1") < 0


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (Debian/Ubuntu)")
def test_the_order_is_dpkgs() -> None:
    """Sorted by our comparison, each neighbour is `lt` or `eq` exactly as the real `dpkg
    --compare-versions` says, and every pair compares as the positions in that order do. (dpkg's
    order is total, so this is every pair against dpkg, without a process per pair.)"""
    ordered = sorted(VERSIONS, key=functools.cmp_to_key(di.compare_versions))
    wrong = []
    for a, b in itertools.pairwise(ordered):
        mine = di.compare_versions(a, b)
        dpkg = "lt" if subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0 else "ge"
        if dpkg == "ge" and subprocess.run(["dpkg", "--compare-versions", a, "eq", b], check=False).returncode == 0:
            dpkg = "eq"
        if (mine < 0, mine == 0) != (dpkg == "lt", dpkg == "eq"):
            wrong.append((a, b, mine, dpkg))
    assert wrong == []
    rank = {v: min(i for i, w in enumerate(ordered) if di.compare_versions(v, w) == 0) for v in ordered}
    for a, b in itertools.product(VERSIONS, VERSIONS):
        mine = di.compare_versions(a, b)
        assert (mine > 0) - (mine < 0) == (rank[a] > rank[b]) - (rank[a] < rank[b]), (a, b)


@pytest.mark.parametrize("bad", ["x:1.0", "1.0-", ":1", ""])
def test_versions_dpkg_refuses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="Debian version"):
        di.compare_versions(bad, "1.0")


def test_split_and_upstream() -> None:
    assert di.split_version("1:2.41-12+deb13u5") == (1, "2.41", "12+deb13u5")
    assert di.split_version("1:4.16.0-2+really2.41.5-0+deb13u1") == (1, "4.16.0-2+really2.41.5", "0+deb13u1")
    assert di.upstream_version("3.13.15-1") == "3.13.15"
    assert di.upstream_version("3.15.0~rc1-1") == "3.15.0~rc1"


def test_paragraphs_keep_continuations_and_name_the_bad_line() -> None:
    text = "Package: a\nChecksums-Sha256:\n abc 1 a.dsc\n def 2 a.tar\n\n\nPackage: b\nVersion: 2\n"
    ps = list(di.paragraphs(text))
    assert [p.line for p in ps] == [1, 7]
    assert ps[0].get("Checksums-Sha256") == "\nabc 1 a.dsc\ndef 2 a.tar" and ps[1].get("Version") == "2"
    with pytest.raises(di.MalformedIndex, match=r"line 3: not a `Field: value` line: '<p>oops'"):
        list(di.paragraphs("Package: a\n\n<p>oops\n"))
    with pytest.raises(di.MalformedIndex, match="line 1: a continuation line outside a field"):
        list(di.paragraphs(" orphan\n"))


SOURCES = """Package: aalib
Version: 1.4p5-51
Directory: pool/main/a/aalib

Package: python3.13
Version: 3.13.15-1
Directory: pool/main/p/python3.13
Checksums-Sha256:
 1111111111111111111111111111111111111111111111111111111111111111 3000 python3.13_3.13.15-1.dsc
 1E66A7945A48390EE4C2A4268A0E4185884059A13C4AAB6D148AA208DEEA4A76 23160540 python3.13_3.13.15.orig.tar.xz

Package: python3.15
Version: 3.15.0~rc1-1
Checksums-Sha256:
 2222222222222222222222222222222222222222222222222222222222222222 1 python3.15_3.15.0~rc1.orig.tar.xz

Package: python3.13-defaults
Version: 3.13.5-1
"""


def test_python_releases_from_a_sources_index() -> None:
    (rel,) = di.python_releases(SOURCES, ["3.13", "3.15"])  # 3.15.0~rc1 is a pre-release: skipped
    assert rel == di.SourceRelease(
        minor="3.13",
        version="3.13.15",
        debian_version="3.13.15-1",
        sha256="1e66a7945a48390ee4c2a4268a0e4185884059a13c4aab6d148aa208deea4a76",
        filename="python3.13_3.13.15.orig.tar.xz",
        directory="pool/main/p/python3.13",
    )
    assert di.python_releases(SOURCES, ["3.14"]) == []


def test_a_sources_index_without_the_orig_sha256_or_paragraphs_is_malformed() -> None:
    broken = SOURCES.replace("python3.13_3.13.15.orig.tar.xz", "python3.13_3.13.15.orig.tar.gz")
    with pytest.raises(di.MalformedIndex, match=r"line 5: python3.13 3.13.15-1 lists no sha256"):
        di.python_releases(broken, ["3.13"])
    for text in ("Version: 1\n\nPackage: python3.13\n", "<!DOCTYPE html>\n<html>\n"):
        with pytest.raises(di.MalformedIndex, match=r"line 1: .*(not a Debian index|Field: value)"):
            di.python_releases(text, ["3.13"])
    assert di.python_releases("", ["3.13"]) == di.python_releases("\n\n", ["3.13"]) == []  # an empty suite


def test_package_versions_for_the_names_asked() -> None:
    text = (
        "Package: libc6\nVersion: 2.41-12\nArchitecture: amd64\n\n"
        "Package: passwd\nVersion: 1:4.17.4-2\nArchitecture: amd64\n\n"
        "Package: libc6\nVersion: 2.41-12+deb13u5\nArchitecture: amd64\n\n"
        "Package: login.defs\nArchitecture: all\n"
    )
    assert di.package_versions(text, {"libc6", "nothing"}) == {
        "libc6": [("2.41-12", "amd64"), ("2.41-12+deb13u5", "amd64")]
    }
    with pytest.raises(di.MalformedIndex, match=r"line 13: login\.defs has no Version"):
        di.package_versions(text, {"login.defs"})
