"""Debian archive indexes (`Sources`, `Packages`) and dpkg's version order. Pure: no network.

`update` reads a mirror's `Sources` index for the `pythonX.Y` source packages, whose
`.orig.tar.xz` is python.org's tarball byte for byte (the same sha256); `outdated` reads `Packages`
indexes to see whether a pinned package has a newer version. Both are deb822 files: paragraphs of
`Field: value` lines, continuation lines starting with a space, separated by blank lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

FIELD_NAME_RE = re.compile(r"[!-9;-~]+")  # printable ASCII without ':' or space
PACKAGE_LINE_RE = re.compile(r"^Package:[ \t]*(\S+)[ \t]*$", re.M)
DIGITS = frozenset("0123456789")
UPSTREAM_RELEASE_RE = re.compile(r"^\d+\.\d+\.\d+$")  # final releases only: 3.14.0~rc1 is skipped


class MalformedIndex(ValueError):
    """The text is not a deb822 index, or a paragraph lacks what every index paragraph has."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Paragraph:
    fields: Mapping[str, str]  # multi-line values keep their continuation lines, joined by "\n"
    line: int  # 1-based line of the paragraph's first field

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


def paragraphs(text: str, first_line: int = 1) -> Iterator[Paragraph]:
    """The paragraphs of a deb822 file. Raises MalformedIndex naming the line of any other line."""
    fields: dict[str, str] = {}
    start = 0
    last = ""
    for n, line in enumerate(text.split("\n"), first_line):
        if not line or line.isspace():
            if fields:
                yield Paragraph(fields, start)
            fields, last = {}, ""
            continue
        if line[0] in " \t":
            if not last:
                raise MalformedIndex(n, "a continuation line outside a field")
            fields[last] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not FIELD_NAME_RE.fullmatch(name):
            raise MalformedIndex(n, f"not a `Field: value` line: {line[:80]!r}")
        if not fields:
            start = n
        last = name
        fields[name] = value.strip()
    if fields:
        yield Paragraph(fields, start)


def selected(text: str, wanted: Callable[[str], bool]) -> Iterator[Paragraph]:
    """The paragraphs whose Package is ``wanted``, parsed (and validated) alone: a 60 MB index is
    scanned at C speed instead of parsed line by line. The first paragraph is always validated, so
    that an HTML error page is caught; raises MalformedIndex. An empty index has no paragraphs."""
    if text.isspace() or not text:
        return  # an empty index (a suite with nothing in it yet) is valid
    head_end = text.lstrip("\n").find("\n\n")
    head = next(paragraphs(text.lstrip("\n")[: head_end if head_end >= 0 else len(text)]), None)
    if head is None or not head.get("Package"):
        raise MalformedIndex(1, "the first paragraph has no Package field (not a Debian index?)")
    pos, line = 0, 1
    for m in PACKAGE_LINE_RE.finditer(text):
        if not wanted(m.group(1)):
            continue
        start = text.rfind("\n\n", 0, m.start())
        start = 0 if start < 0 else start + 2
        end = text.find("\n\n", m.end())
        line += text.count("\n", pos, start)
        pos = start
        yield from paragraphs(text[start : end if end >= 0 else len(text)], line)


# ------------------------------------------------------------------------------------ dpkg versions


def split_version(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of a Debian version: 1:2.41-12+deb13u5 → (1, 2.41, 12+deb13u5)."""
    epoch = 0
    rest = version.strip()
    if ":" in rest:
        head, rest = rest.split(":", 1)
        if not head.isdigit():
            raise ValueError(f"bad epoch in Debian version {version!r}")
        epoch = int(head)
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    elif not revision:
        raise ValueError(f"a Debian version's revision is empty after '-': {version!r}")
    if not upstream:
        raise ValueError(f"a Debian version needs an upstream part: {version!r}")
    return epoch, upstream, revision


def _order(c: str) -> int:
    """dpkg's weight of one character of a non-digit run: ~ sorts before everything, even the end."""
    if not c:
        return 0
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _non_digit(s: str, i: int) -> str:
    """s[i] when it is part of a non-digit run, else "" (a digit or the end weighs 0)."""
    return s[i] if i < len(s) and s[i] not in DIGITS else ""


def _digits_end(s: str, i: int) -> int:
    while i < len(s) and s[i] in DIGITS:
        i += 1
    return i


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's verrevcmp(): alternate non-digit runs (by _order) and digit runs (numerically)."""
    i = j = 0
    while i < len(a) or j < len(b):
        while _non_digit(a, i) or _non_digit(b, j):
            ac, bc = _order(_non_digit(a, i)), _order(_non_digit(b, j))
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        n, m = _digits_end(a, i), _digits_end(b, j)
        x, y = int(a[i:n] or "0"), int(b[j:m] or "0")
        if x != y:
            return -1 if x < y else 1
        i, j = n, m
    return 0


def compare_versions(a: str, b: str) -> int:
    """dpkg --compare-versions: negative when a < b, 0 when equal, positive when a > b."""
    ea, ua, ra = split_version(a)
    eb, ub, rb = split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def upstream_version(version: str) -> str:
    """The upstream part of a Debian version: 3.13.15-1 → 3.13.15, 1:2.41-12 → 2.41."""
    return split_version(version)[1]


# ------------------------------------------------------------------------------------- Sources


@dataclass(frozen=True)
class SourceRelease:
    """One CPython release as a suite's `Sources` index lists it."""

    minor: str  # 3.14
    version: str  # upstream: 3.14.10
    debian_version: str  # 3.14.10-1
    sha256: str  # of the .orig.tar.xz, python.org's Python-<version>.tar.xz
    filename: str  # python3.14_3.14.10.orig.tar.xz
    directory: str  # pool/main/p/python3.14


def _sha256_of(paragraph: Paragraph, filename: str) -> str | None:
    for line in paragraph.get("Checksums-Sha256").split("\n"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == filename:
            return parts[0].lower()
    return None


def python_releases(text: str, minors: Sequence[str]) -> list[SourceRelease]:
    """The final CPython releases of ``minors`` a `Sources` index lists (`pythonX.Y` packages).

    Raises MalformedIndex when the text is not a Sources index or a listed pythonX.Y names no
    sha256 for its .orig.tar.xz."""
    wanted = {f"python{m}": m for m in minors}
    out: list[SourceRelease] = []
    for p in selected(text, wanted.__contains__):
        name, dversion = p.get("Package"), p.get("Version")
        try:
            upstream = upstream_version(dversion)
        except ValueError as exc:
            raise MalformedIndex(p.line, f"{name}: {exc}") from None
        if not UPSTREAM_RELEASE_RE.match(upstream):
            continue  # a pre-release (3.15.0~rc1) or a repack: not a patch release
        filename = f"{name}_{upstream}.orig.tar.xz"
        sha = _sha256_of(p, filename)
        if sha is None or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise MalformedIndex(p.line, f"{name} {dversion} lists no sha256 for {filename} in Checksums-Sha256")
        out.append(SourceRelease(wanted[name], upstream, dversion, sha, filename, p.get("Directory")))
    return out


# ------------------------------------------------------------------------------------- Packages


def package_versions(text: str, names: Collection[str]) -> dict[str, list[tuple[str, str]]]:
    """Package name → [(version, architecture)] for the ``names`` a `Packages` index lists."""
    out: dict[str, list[tuple[str, str]]] = {}
    for p in selected(text, names.__contains__):
        name, version = p.get("Package"), p.get("Version")
        if not version:
            raise MalformedIndex(p.line, f"{name} has no Version")
        out.setdefault(name, []).append((version, p.get("Architecture")))
    return out
