"""matrix.yaml: schema, validation with file:line errors, and expansion into frozen BuildSpecs.

Knows nothing about Docker or Jinja. Every value that later reaches a Dockerfile or a shell is
validated here against a strict pattern, so nothing a user writes in the matrix is ever
interpolated into a shell unchecked.

Loading is table-driven: SECTIONS maps each top-level key to its loader, and one table per nested
mapping (VERSION_KEYS, VARIANT_KEYS, DISTRO_KEYS, PROFILE_KEYS, ...) lists its keys. To add a key,
add it to its table, read it in its section's loader, and describe it in schema/matrix.schema.json
(the JSON Schema editors use; tests/unit/test_schema.py fails until the two agree).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from . import releases
from .errors import MatrixError, SelectionError

JitMode = Literal["no", "yes", "yes-off", "interpreter"]
JIT_MODES: tuple[str, ...] = ("no", "yes", "yes-off", "interpreter")

# A configure flag is `--name` or `--name=value`; the value may not contain shell metacharacters.
FLAG_RE = re.compile(r"^--[a-z0-9][a-z0-9-]*(=[A-Za-z0-9._,+/:@%=-]*)?$")
VERSION_RE = re.compile(r"^(3)\.(\d+)\.(\d+)((a|b|rc)\d+)?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SHA256_ANY_CASE_RE = re.compile(r"^[0-9a-fA-F]{64}$")  # as written in matrix.yaml (cpforge lower-cases it)
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
LLVM_RE = re.compile(r"^[0-9]+$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
REPO_RE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
URL_RE = re.compile(r"^(https?|file)://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+$")
DEBIAN_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# A source mirror: a local directory, a URL with python.org's layout, or debian+URL of a Debian mirror.
MIRROR_RE = re.compile(r"^(/|\.\.?/)|^(debian\+)?" + URL_RE.pattern.removeprefix("^"))
# A base image to pull: NAME[:TAG], optionally pinned by digest (NAME[:TAG]@sha256:<64 hex>).
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
PULL_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")
TAG_SUFFIX_RE = re.compile(r"^[a-z0-9._-]*$")
# A Docker engine a build may use (cpforge/transport.py): a local socket, tcp:// (TLS), ssh://.
# No password can be written: URLs are printed and recorded in the build report.
_HOST = r"([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
ENGINE_URL_RE = re.compile(
    r"^(unix:///[A-Za-z0-9._/-]+|tcp://" + _HOST + r"|ssh://([A-Za-z_][A-Za-z0-9_.-]*@)?" + _HOST + r")$"
)
NULL_TAG = "tag:yaml.org,2002:null"

# platform -> (docker arch, uname machine, GNU triplet, ELF e_machine name)
KNOWN_PLATFORMS: dict[str, tuple[str, str, str]] = {
    "linux/amd64": ("amd64", "x86_64", "x86_64-linux-gnu"),
    "linux/arm64": ("arm64", "aarch64", "aarch64-linux-gnu"),
}
PLATFORM_NAMES: tuple[str, ...] = tuple(KNOWN_PLATFORMS)
PLATFORM_NAME_RE = re.compile("^(" + "|".join(PLATFORM_NAMES) + ")$")

# Flags that cpforge derives itself from typed fields; writing them by hand would let the
# expectation (derived from the typed field) disagree with the build.
DERIVED_FLAGS = {
    "--disable-gil": "set `freethreaded: true` on the variant instead",
    "--enable-experimental-jit": "set `jit: yes` (or yes-off, interpreter) on the variant instead",
    "--prefix": "cpforge installs into /usr/local; remove the flag",
    "--host": "cpforge sets --host for cross builds; remove the flag",
    "--build": "cpforge sets --build; remove the flag",
    "--enable-shared": "set `shared: true` on the profile instead (cpforge then relinks python with an rpath)",
    "--enable-static-libpython-for-interpreter": "set `static-interpreter: true` on the profile instead",
}
# A compiler or linker flag for cflags-nodist / ldflags-nodist: one token, no shell metacharacters
# (GCC's tuning parameters are one token too: --param=NAME=VALUE).
CC_FLAG_RE = re.compile(r"^-[A-Za-z0-9][A-Za-z0-9_=,.+:/-]*$|^--param=[a-z0-9-]+=[0-9]+$")
FRAME_POINTER_FLAGS = ("-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer")
# An x86-64 ISA level above the baseline. Code built for one runs on an older CPU until its first
# wider instruction (SIGILL) unless -mneeded marks it, so that glibc's loader refuses it up front.
X86_ISA_LEVEL_RE = re.compile(r"^-march=x86-64-v[2-4]$")
# One word of the PGO training command (CPython's Makefile runs PROFILE_TASK through a shell).
PGO_TASK_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_=.,:/+-]*$|^-[A-Za-z0-9_=.,:/+-]+$")
MODULE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The C compiler a profile builds with: the distro's gcc, or clang-N (the Debian package clang-N).
COMPILER_RE = re.compile(r"^(gcc|clang-[0-9]+)$")
# A key of a profile's `overrides:`: a glob over entry ids, as in `exclude:` (e.g. "3.14-*-trixie-*").
ENTRY_GLOB_RE = re.compile(r"^[a-z0-9*?][a-z0-9*?.-]*$")


# --------------------------------------------------------------------------------------------
# Typed model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Signer:
    identity: str
    issuer: str


@dataclass(frozen=True, kw_only=True)
class PythonVersion:
    version: str  # full, e.g. 3.13.5
    sha256: str
    llvm: int
    released: date  # python.org's release day: the build date (SOURCE_DATE_EPOCH) of its builds
    signer: Signer | None = None
    modules: tuple[str, ...] = ()  # extra modules the smoke test must import for this version

    @property
    def minor(self) -> str:
        major, minor, *_ = self.version.split(".")
        return f"{major}.{minor}"

    @property
    def epoch(self) -> int:
        """SOURCE_DATE_EPOCH of every build of this release: its release day, 00:00 UTC."""
        return int(datetime.combine(self.released, time(), UTC).timestamp())

    @property
    def minor_tuple(self) -> tuple[int, int]:
        major, minor, *_ = self.version.split(".")
        return int(major), int(minor)


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    freethreaded: bool = False
    jit: JitMode = "no"
    configure: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        out: list[str] = []
        if self.freethreaded:
            out.append("--disable-gil")
        if self.jit != "no":
            out.append(f"--enable-experimental-jit={self.jit}")
        return (*out, *self.configure)


@dataclass(frozen=True, kw_only=True)
class Platform:
    name: str  # linux/amd64

    @property
    def arch(self) -> str:
        return KNOWN_PLATFORMS[self.name][0]

    @property
    def machine(self) -> str:
        return KNOWN_PLATFORMS[self.name][1]

    @property
    def triplet(self) -> str:
        return KNOWN_PLATFORMS[self.name][2]


DEFAULT_BUILD_PLATFORM = Platform(name="linux/amd64")  # where compilers run unless `build-platform:` says otherwise


@dataclass(frozen=True, kw_only=True)
class Distro:
    name: str
    suite: str
    mirror: str
    pull: str | None = None  # registry image tried before bootstrapping, e.g. debian:trixie-slim
    # Built only when a filter names it (e.g. `*-bullseye-*`): an old distro for portable CI
    # interpreters stays out of `build --matrix` and of globs like `3.13-*-amd64`.
    opt_in: bool = False

    def base_image(self, platform: Platform) -> str:
        return f"cpforge/debian:{self.suite}-{platform.arch}"


NO_OPTIMISATION = "OPT=-DNDEBUG -O0"  # configure's OPT for `optimize: false` (its default: -g -O3 -Wall)


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    configure: tuple[str, ...] = ()
    tag_suffix: str = ""
    shared: bool = False  # --enable-shared, with `python` relinked to find libpython via $ORIGIN/../lib
    # With `shared`: python itself links libpython's objects statically (as Debian's python3.X does;
    # CPython 3.15's --enable-static-libpython-for-interpreter) while libpython.so is still built and
    # shipped for embedders. Its thread-local state then costs one %fs-relative load, not a
    # __tls_get_addr call.
    static_interpreter: bool = False
    frame_pointers: bool = False  # -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer
    # False: OPT=-DNDEBUG -O0, no optimisation and no debug info (the image is stripped anyway); about
    # 3x faster to compile than configure's default -O3 -g, for builds that only tests run.
    optimize: bool = True
    cflags_nodist: tuple[str, ...] = ()  # CPython's own objects only: never leaks into extension builds
    ldflags_nodist: tuple[str, ...] = ()
    pgo_task: tuple[str, ...] = ()  # PROFILE_TASK: what the instrumented python runs to train PGO
    # Stdlib extension modules linked into libpython (and so into a static interpreter) instead of
    # shipped as .so files, as Debian's python3.X does: importing them opens and maps no file, and
    # LTO sees them with the core (measured here: faster startup, the same benchmark times).
    builtin_modules: tuple[str, ...] = ()
    compiler: str = "gcc"  # gcc (the distro's), or clang-N: COMPILER_RE
    # `overrides:` in the matrix, in order: (entry glob, the complete profile the entries it matches
    # build with: the profile's own keys, each key the override gives replacing its own). Only the
    # profile as written has them; the effective profile of an entry (for_entry) has none.
    overrides: tuple[tuple[str, Profile], ...] = ()

    def override_for(self, entry_id: str) -> str | None:
        """The first `overrides:` glob that matches ``entry_id`` (None: the profile as written)."""
        return next((g for g, _ in self.overrides if fnmatch.fnmatchcase(entry_id, g)), None)

    def for_entry(self, entry_id: str) -> Profile:
        """The profile entry ``entry_id`` builds with: its first matching override, else this one."""
        glob = self.override_for(entry_id)
        if glob is None:
            return dataclasses.replace(self, overrides=()) if self.overrides else self
        return next(p for g, p in self.overrides if g == glob)

    @property
    def clang(self) -> int | None:
        """The clang major this profile compiles with (None: gcc)."""
        return int(self.compiler.removeprefix("clang-")) if self.compiler.startswith("clang-") else None

    def compiler_flags(self) -> tuple[str, ...]:
        """Configure variables naming the compiler and the LLVM tools a clang build needs by path
        (Debian installs them as /usr/lib/llvm-N/bin/llvm-ar, not on PATH, where configure looks
        for them): llvm-ar for --with-lto, llvm-profdata to merge PGO's raw profiles. Nothing for gcc,
        configure's default."""
        if self.clang is None:
            return ()
        tools = f"/usr/lib/llvm-{self.clang}/bin"
        return (
            f"CC={self.compiler}",
            f"CXX=clang++-{self.clang}",
            f"LLVM_AR={tools}/llvm-ar",
            f"LLVM_PROFDATA={tools}/llvm-profdata",
        )

    def build_flags(self) -> tuple[str, ...]:
        """The configure arguments this profile adds: its flags, then derived ones."""
        cflags = (*(FRAME_POINTER_FLAGS if self.frame_pointers else ()), *self.cflags_nodist)
        return (
            *self.configure,
            *(() if self.optimize else (NO_OPTIMISATION,)),
            *(("--enable-shared",) if self.shared else ()),
            *(("--enable-static-libpython-for-interpreter",) if self.static_interpreter else ()),
            *self.compiler_flags(),
            *((f"CFLAGS_NODIST={' '.join(cflags)}",) if cflags else ()),
            *((f"LDFLAGS_NODIST={' '.join(self.ldflags_nodist)}",) if self.ldflags_nodist else ()),
            *((f"PROFILE_TASK={' '.join(self.pgo_task)}",) if self.pgo_task else ()),
        )


@dataclass(frozen=True, kw_only=True)
class BuilderEngine:
    """One Docker engine that builds the entries of one platform (the `builders:` section, or a
    `--builder PLATFORM=URL[,jobs=N]` flag). An engine may be declared for several platforms."""

    platform: str  # linux/amd64
    url: str  # unix:///…, tcp://HOST:PORT, ssh://USER@HOST[:PORT] (cpforge/transport.py)
    jobs: int | None = None  # entries it builds at once; None: --jobs
    where: str = ""  # where it was declared, for messages: "matrix.yaml:42", "--builder"


@dataclass(frozen=True, kw_only=True)
class Source:
    version: str
    sha256: str
    signer: Signer | None

    @property
    def filename(self) -> str:
        return f"Python-{self.version}.tar.xz"


@dataclass(frozen=True, kw_only=True)
class BuildSpec:
    """One expanded matrix entry built with one profile: everything a build needs to know."""

    id: str
    version: str
    minor: str
    variant: Variant
    platform: Platform
    distro: Distro
    profile: Profile
    llvm: int
    source: Source
    epoch: int  # SOURCE_DATE_EPOCH: the release's day, so builds are reproducible and dated truthfully
    base_image: str
    build_platform: Platform  # where the compiler runs: cross-compiles when it differs from platform
    # The matrix file's name when it is not matrix.yaml (Matrix.namespace): names its Dockerfiles
    # directory and pinned PGO profiles, so that two matrix files never share them.
    namespace: str = ""
    repository: str
    smoke_modules: tuple[str, ...]

    @property
    def cross(self) -> bool:
        return self.build_platform != self.platform

    @property
    def builder_image(self) -> str:
        return self.distro.base_image(self.build_platform)

    @property
    def configure_flags(self) -> tuple[str, ...]:
        return (*self.variant.flags, *self.profile.build_flags())

    @property
    def tags(self) -> tuple[str, ...]:
        sfx = self.profile.tag_suffix
        exact = f"{self.version}-{self.variant.name}-{self.distro.name}-{self.platform.arch}"
        return (f"{self.repository}:{self.id}{sfx}", f"{self.repository}:{exact}{sfx}")

    @property
    def dockerfile(self) -> str:
        """Path of the committed Dockerfile, relative to the matrix file's directory (for the repository's
        own matrix.yaml: the repository root)."""
        return f"{self.dockerfiles_dir}/{self.id}/Dockerfile.{self.profile.name}"

    @property
    def dockerfiles_dir(self) -> str:
        return f"dockerfiles-{self.namespace}" if self.namespace else "dockerfiles"

    @property
    def key(self) -> str:
        """Unique across profiles: the report key."""
        return f"{self.id}@{self.profile.name}"

    @property
    def pgo(self) -> bool:
        """A profile-guided build (--enable-optimizations): it trains on CPython's test suite."""
        return "--enable-optimizations" in self.configure_flags

    @property
    def pgo_profile(self) -> str | None:
        """Where this entry's pinned PGO profile (GCC's .gcda files, or clang's merged code.profclangd)
        lives, relative to the repository root: `invoke lock` pins the one a build trained, and later
        builds reuse it instead of training again, so a release build is reproducible. None for builds
        without PGO."""
        if not self.pgo:
            return None
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"pgo/{ns}{self.id}.{self.profile.name}.{self.pgo_config}.tar.xz"

    @property
    def pgo_config(self) -> str:
        """12 hex digits naming everything that shapes the instrumented build a PGO profile was
        trained on: source, platforms, builder, configure and compiler flags (the compiler itself is
        one: CC=clang-N), training task, built-in modules. Change any of them and the pinned profile
        no longer matches the code compiled (GCC fails with -Werror=coverage-mismatch, clang silently
        drops what no longer matches), so its file name changes too: the build trains afresh
        instead, and `invoke lock` pins the new profile in place of the old one. A gcc profile's
        configure flags are the same as before cpforge knew compilers, so its name is too."""
        shape = "\n".join(
            (
                self.source.sha256,
                self.platform.name,
                self.build_platform.name,
                self.builder_image,
                *self.configure_flags,
                "builtin-modules:",
                *self.profile.builtin_modules,
            )
        )
        return hashlib.sha256(shape.encode()).hexdigest()[:12]


def _entries(
    versions: Sequence[PythonVersion],
    variants: Sequence[Variant],
    distros: Sequence[Distro],
    platforms: Sequence[Platform],
    exclude: Sequence[str],
) -> Iterator[tuple[str, PythonVersion, Variant, Distro, Platform]]:
    """Every entry of a matrix that `exclude` leaves, in matrix order, with its id: minor-variant-distro-arch."""
    for ver in versions:
        for var in variants:
            for dist in distros:
                for plat in platforms:
                    eid = f"{ver.minor}-{var.name}-{dist.name}-{plat.arch}"
                    if not any(fnmatch.fnmatchcase(eid, pat) for pat in exclude):
                        yield eid, ver, var, dist, plat


@dataclass(frozen=True, kw_only=True)
class Matrix:
    path: str
    versions: tuple[PythonVersion, ...]
    variants: tuple[Variant, ...]
    platforms: tuple[Platform, ...]
    distros: tuple[Distro, ...]
    profiles: tuple[Profile, ...]
    repository: str
    default_entry: str
    default_profile: str
    mirrors: tuple[str, ...]
    cache_dir: str
    smoke_modules: tuple[str, ...]
    build_platform: Platform = DEFAULT_BUILD_PLATFORM
    exclude: tuple[str, ...] = ()
    builders: tuple[BuilderEngine, ...] = ()  # the `builders:` section; () when there is none

    @property
    def namespace(self) -> str:
        """"" for a file named matrix.yaml, else the file's stem: what this matrix's outputs are named by,
        so that a second matrix file can never overwrite what another one rendered, locked or built."""
        stem = Path(self.path).stem
        return "" if stem == "matrix" else stem

    def profile(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise SelectionError(
            f"unknown profile {name!r} in {self.path}",
            hint=f"use one of: {', '.join(p.name for p in self.profiles)}",
        )

    def expand(self, profile: str | None = None) -> list[BuildSpec]:
        """Every entry of the matrix, for one profile (default: the matrix's default profile). Each
        BuildSpec gets the profile its entry builds with (Profile.for_entry: `overrides:` applied)."""
        prof = self.profile(profile or self.default_profile)
        specs: list[BuildSpec] = []
        entries = _entries(self.versions, self.variants, self.distros, self.platforms, self.exclude)
        for eid, ver, var, dist, plat in entries:
            specs.append(
                BuildSpec(
                    id=eid,
                    version=ver.version,
                    minor=ver.minor,
                    variant=var,
                    platform=plat,
                    distro=dist,
                    profile=prof.for_entry(eid),
                    llvm=ver.llvm,
                    source=Source(version=ver.version, sha256=ver.sha256, signer=ver.signer),
                    epoch=ver.epoch,
                    base_image=dist.base_image(plat),
                    build_platform=self.build_platform,
                    repository=self.repository,
                    smoke_modules=(*self.smoke_modules, *ver.modules),
                    namespace=self.namespace,
                )
            )
        return specs

    def expand_all(self) -> list[BuildSpec]:
        return [s for p in self.profiles for s in self.expand(p.name)]


def select(
    specs: Sequence[BuildSpec],
    filters: Iterable[str] = (),
    platforms: Iterable[str] = (),
) -> list[BuildSpec]:
    """Entries whose id matches any glob in ``filters`` (all if none) and any platform given.

    Entries of an opt-in distro match only a glob that names the distro (``-<name>-``)."""
    pats = list(filters)
    plats = list(platforms)

    def wanted(s: BuildSpec) -> bool:
        globs = [p for p in pats if f"-{s.distro.name}-" in p] if s.distro.opt_in else pats
        if s.distro.opt_in and not globs:
            return False
        return (not globs or any(fnmatch.fnmatchcase(s.id, p) for p in globs)) and (
            not plats or s.platform.name in plats
        )

    out = [s for s in specs if wanted(s)]
    if not out:
        ids = ", ".join(sorted({s.id for s in specs})[:6])
        raise SelectionError(
            f"no matrix entry matches filter {pats or '*'} platform {plats or 'any'}",
            hint=f"run `invoke matrix` to list entries (e.g. {ids}, …)",
        )
    return out


# --------------------------------------------------------------------------------------------
# The keys of matrix.yaml: one table per mapping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Key:
    """One key of a mapping in matrix.yaml.

    These tables are the one place that says which keys each mapping has: the loader accepts exactly
    these (an unknown key is an error naming its line and the closest key), requires the required
    ones, and tests/unit/test_schema.py checks that schema/matrix.schema.json describes the same
    keys, the same required ones, and the same patterns, enums and name patterns."""

    name: str
    required: bool = False
    pattern: re.Pattern[str] | None = None  # what the value (or each item of its list) must match
    enum: tuple[str, ...] = ()  # the values it (or each item of its list) may take
    keys: tuple[Key, ...] = ()  # the keys of the mapping it holds (itself, each item, or each name's)
    names: re.Pattern[str] | None = None  # a mapping of name → options: what each name must match


SIGNER_KEYS = (Key(name="identity", required=True), Key(name="issuer", required=True))
VERSION_KEYS = (
    Key(name="version", required=True, pattern=VERSION_RE),
    Key(name="sha256", required=True, pattern=SHA256_ANY_CASE_RE),
    Key(name="released", required=True, pattern=DATE_RE),
    Key(name="llvm", required=True, pattern=LLVM_RE),
    Key(name="signer", keys=SIGNER_KEYS),
    Key(name="modules", pattern=MODULE_RE),
)
VARIANT_KEYS = (
    Key(name="freethreaded"),
    Key(name="jit", enum=JIT_MODES),
    Key(name="configure", pattern=FLAG_RE),
)
DISTRO_KEYS = (
    Key(name="suite", required=True, pattern=NAME_RE),
    Key(name="mirror", pattern=URL_RE),
    Key(name="pull", pattern=PULL_RE),
    Key(name="opt-in"),
)
# What a profile's `overrides:` may change for the entries a glob matches: all but the image tag suffix.
PROFILE_OVERRIDE_KEYS = (
    Key(name="configure", pattern=FLAG_RE),
    Key(name="compiler", pattern=COMPILER_RE),
    Key(name="shared"),
    Key(name="static-interpreter"),
    Key(name="frame-pointers"),
    Key(name="optimize"),
    Key(name="cflags-nodist", pattern=CC_FLAG_RE),
    Key(name="ldflags-nodist", pattern=CC_FLAG_RE),
    Key(name="pgo-task", pattern=PGO_TASK_RE),
    Key(name="builtin-modules", pattern=MODULE_NAME_RE),
)
PROFILE_KEYS = (
    Key(name="tag-suffix", pattern=TAG_SUFFIX_RE),
    *PROFILE_OVERRIDE_KEYS,
    Key(name="overrides", keys=PROFILE_OVERRIDE_KEYS, names=ENTRY_GLOB_RE),
)
SOURCES_KEYS = (Key(name="mirrors", pattern=MIRROR_RE), Key(name="cache"))
SMOKE_KEYS = (Key(name="modules", pattern=MODULE_RE),)
DEFAULT_KEYS = (Key(name="entry"), Key(name="profile"))
BUILDER_KEYS = (Key(name="url", required=True, pattern=ENGINE_URL_RE), Key(name="jobs"))


# --------------------------------------------------------------------------------------------
# Loading with line numbers
# --------------------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, message: str, hint: str | None = None) -> MatrixError:
        line = node.start_mark.line + 1 if node is not None else None
        return MatrixError(message, path=self.path, line=line, hint=hint)


@dataclass
class _Draft:
    """What the section loaders have read so far (mutable while loading; the frozen Matrix is built
    from it once every section is read). Each field starts as the default of its optional key."""

    repository: str = "cpforge/python"
    versions: list[PythonVersion] = field(default_factory=list)
    version_nodes: dict[str, tuple[yaml.Node, yaml.Node]] = field(default_factory=dict)  # its version:, llvm:
    variants: list[Variant] = field(default_factory=list)
    variant_nodes: dict[str, yaml.Node] = field(default_factory=dict)
    platforms: tuple[Platform, ...] = ()
    build_platform: Platform = DEFAULT_BUILD_PLATFORM
    distros: list[Distro] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    # (profile, override glob) → the keys that profile has where the glob matches ("": as written),
    # with their nodes: what a refusal at load names the line of; and each glob's own node.
    profile_nodes: dict[tuple[str, str], dict[str, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict)
    override_nodes: dict[tuple[str, str], yaml.Node] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ("https://www.python.org/ftp/python",)
    cache_dir: str = "sources"
    smoke_modules: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default_entry: str = ""
    default_node: yaml.Node | None = None
    default_profile: str = ""  # "": the first profile
    builders: list[BuilderEngine] = field(default_factory=list)


def _scalar(ctx: _Ctx, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise ctx.fail(node, f"{what} must be a single value, not a {_kind(node)}")
    return str(node.value)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "value"


def _is_null(node: yaml.Node) -> bool:
    """`name:` with nothing after it (or ~ or null): a variant or profile with no options."""
    return isinstance(node, yaml.ScalarNode) and (node.tag == NULL_TAG or node.value in ("", "~", "null"))


def _mapping(ctx: _Ctx, node: yaml.Node, what: str, keys: Sequence[Key]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """The mapping ``what``: each key once, only ``keys``, every required one."""
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, f"{what} must be a mapping, not a {_kind(node)}")
    allowed = [k.name for k in keys]
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for k, v in node.value:
        key = _scalar(ctx, k, f"a key in {what}")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"allowed keys: {', '.join(allowed)}"
            raise ctx.fail(k, f"unknown key `{key}` in {what}", hint)
        if key in out:
            raise ctx.fail(k, f"duplicate key `{key}` in {what}", "keep only one of them")
        out[key] = (k, v)
    for req in (k.name for k in keys if k.required):
        if req not in out:
            raise ctx.fail(node, f"{what} is missing the required key `{req}`", f"add `{req}: …`")
    return out


def _named(
    ctx: _Ctx, node: yaml.Node, section: str, noun: str, example: str, name_hint: str
) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """The (name, name node, options node) of a mapping of name → options: variants, distros, profiles."""
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, f"{section} must be a mapping of name → options", example)
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    for k, v in node.value:
        name = _text(ctx, k, f"{noun} name", NAME_RE, name_hint)
        if any(name == seen for seen, _, _ in out):
            raise ctx.fail(k, f"{noun} `{name}` is defined twice", "rename or remove one")
        out.append((name, k, v))
    if not out:
        raise ctx.fail(node, f"{section} is empty", f"define at least one of the {section}")
    return out


def _seq(ctx: _Ctx, node: yaml.Node, what: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        raise ctx.fail(node, f"{what} must be a list, not a {_kind(node)}")
    return list(node.value)


def _str_list(ctx: _Ctx, node: yaml.Node, what: str, check: Callable[[yaml.Node, str], None]) -> tuple[str, ...]:
    out = []
    for item in _seq(ctx, node, what):
        value = _scalar(ctx, item, f"an item of {what}")
        check(item, value)
        out.append(value)
    return tuple(out)


def _match(ctx: _Ctx, node: yaml.Node, value: str, regex: re.Pattern[str], what: str, hint: str) -> str:
    if not regex.match(value):
        raise ctx.fail(node, f"{what} {value!r} is not valid", hint)
    return value


def _text(ctx: _Ctx, node: yaml.Node, what: str, regex: re.Pattern[str], hint: str) -> str:
    """A single value that must match ``regex``."""
    return _match(ctx, node, _scalar(ctx, node, what), regex, what, hint)


def _bool(ctx: _Ctx, node: yaml.Node, what: str) -> bool:
    raw = _scalar(ctx, node, what).lower()
    if raw in ("true", "yes", "on"):
        return True
    if raw in ("false", "no", "off"):
        return False
    raise ctx.fail(node, f"{what} must be true or false, not {raw!r}", "write `true` or `false`")


def _flags(ctx: _Ctx, node: yaml.Node, what: str) -> tuple[str, ...]:
    def check(item: yaml.Node, flag: str) -> None:
        if not FLAG_RE.match(flag):
            raise ctx.fail(
                item,
                f"configure flag {flag!r} in {what} is not a plain `--flag` or `--flag=value`",
                "use lower-case `--name` or `--name=value`; values may hold letters, digits and ._,+/:@%=- "
                "only (no spaces, quotes or shell metacharacters)",
            )
        name = flag.split("=", 1)[0]
        if name in DERIVED_FLAGS:
            raise ctx.fail(item, f"configure flag {name} in {what} is managed by cpforge", DERIVED_FLAGS[name])

    return _str_list(ctx, node, what, check)


def _words(ctx: _Ctx, node: yaml.Node, what: str, pattern: re.Pattern[str], problem: str, hint: str) -> tuple[str, ...]:
    """The list ``what`` of single words, each matching ``pattern``; ``problem`` gets the bad word."""

    def check(item: yaml.Node, word: str) -> None:
        if not pattern.match(word):
            raise ctx.fail(item, problem.format(word=repr(word)), hint)

    return _str_list(ctx, node, what, check)


def _cc_flags(ctx: _Ctx, node: yaml.Node, what: str) -> tuple[str, ...]:
    return _words(
        ctx,
        node,
        what,
        CC_FLAG_RE,
        f"compiler flag {{word}} in {what} is not a single `-flag` token",
        "write one flag per list item, e.g. `-fstack-protector-strong`, `-Wl,-z,now` or `--param=NAME=VALUE`; "
        "no spaces, quotes or shell metacharacters",
    )


def _pgo_task(ctx: _Ctx, node: yaml.Node, what: str) -> tuple[str, ...]:
    return _words(
        ctx,
        node,
        what,
        PGO_TASK_RE,
        f"word {{word}} of {what} is not a plain argument",
        "one argument per list item, e.g. [-m, test, --pgo-extended]; letters, digits and "
        "._=,:/+- only (CPython's Makefile runs the task through a shell)",
    )


def _module_names(ctx: _Ctx, node: yaml.Node, what: str) -> tuple[str, ...]:
    names = _words(
        ctx,
        node,
        what,
        MODULE_NAME_RE,
        f"{{word}} in {what} is not a module name",
        "list top-level stdlib extension modules by import name, e.g. [math, _json, _pickle]",
    )
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ctx.fail(node, f"{what} lists {', '.join(twice)} twice", "list each module once")
    return names


def _module_check(ctx: _Ctx) -> Callable[[yaml.Node, str], None]:
    def check(item: yaml.Node, value: str) -> None:
        if not MODULE_RE.match(value):
            raise ctx.fail(item, f"{value!r} is not a module name", "write a dotted module name such as `dbm.gnu`")

    return check


def _mirror_check(ctx: _Ctx) -> Callable[[yaml.Node, str], None]:
    def check(item: yaml.Node, value: str) -> None:
        if not MIRROR_RE.match(value):
            raise ctx.fail(
                item,
                f"mirror {value!r} is neither a URL nor a local directory",
                "use https://host/path (python.org layout), debian+http://host/debian (a Debian mirror), "
                "or /a/local/dir",
            )

    return check


def _platform_check(ctx: _Ctx) -> Callable[[yaml.Node, str], None]:
    def check(item: yaml.Node, value: str) -> None:
        if value not in KNOWN_PLATFORMS:
            close = difflib.get_close_matches(value, list(KNOWN_PLATFORMS), n=1)
            raise ctx.fail(
                item,
                f"unknown platform {value!r}",
                f"did you mean `{close[0]}`?" if close else f"use one of {', '.join(KNOWN_PLATFORMS)}",
            )

    return check


# -- one loader per top-level section ----------------------------------------------------------


def _load_repository(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    d.repository = _text(ctx, node, "repository", REPO_RE, "use a lower-case image name such as `cpforge/python`")


def _load_versions(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    for item in _seq(ctx, node, "versions"):
        pv, vnode, lnode = _version(ctx, item)
        if any(v.minor == pv.minor for v in d.versions):
            raise ctx.fail(vnode, f"version {pv.minor} is listed twice", "keep one release per minor version")
        if pv.minor_tuple < (3, 13):
            raise ctx.fail(
                vnode,
                f"version {pv.version} is too old: cpforge builds 3.13 and newer",
                "free-threading and the JIT need CPython 3.13+",
            )
        d.versions.append(pv)
        d.version_nodes[pv.version] = (vnode, lnode)
    if not d.versions:
        raise ctx.fail(node, "versions is empty", "list at least one version")


def _version(ctx: _Ctx, item: yaml.Node) -> tuple[PythonVersion, yaml.Node, yaml.Node]:
    """One item of `versions:`, with the nodes of its `version:` and `llvm:` values for later errors."""
    m = _mapping(ctx, item, "a version", VERSION_KEYS)
    vnode, snode, rnode, lnode = (m[k][1] for k in ("version", "sha256", "released", "llvm"))
    version = _text(ctx, vnode, "version", VERSION_RE, "write the full release, e.g. `3.13.5` (quote it in YAML)")
    sha = _match(
        ctx,
        snode,
        _scalar(ctx, snode, "sha256").lower(),
        SHA256_ANY_CASE_RE,
        "sha256",
        "paste the 64 hex digits published for the release",
    )
    released = _released(ctx, rnode)
    llvm = _scalar(ctx, lnode, "llvm")
    if not LLVM_RE.match(llvm):
        raise ctx.fail(lnode, f"llvm must be a major version number, not {llvm!r}", "e.g. `llvm: 19`")
    signer = None
    if "signer" in m:
        sm = _mapping(ctx, m["signer"][1], "signer", SIGNER_KEYS)
        identity, issuer = (_scalar(ctx, sm[k][1], k) for k in ("identity", "issuer"))
        signer = Signer(identity=identity, issuer=issuer)
    modules = _str_list(ctx, m["modules"][1], "modules", _module_check(ctx)) if "modules" in m else ()
    pv = PythonVersion(version=version, sha256=sha, released=released, llvm=int(llvm), signer=signer, modules=modules)
    return pv, vnode, lnode


def _released(ctx: _Ctx, node: yaml.Node) -> date:
    raw = _scalar(ctx, node, "released")
    day = None
    if DATE_RE.match(raw):
        with contextlib.suppress(ValueError):
            day = date.fromisoformat(raw)
    if day is None:
        raise ctx.fail(
            node,
            f"released must be a date, not {raw!r}",
            "write python.org's release day as YYYY-MM-DD, e.g. `released: 2025-06-11`",
        )
    return day


def _load_variants(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    example, name_hint = "e.g. `freethreaded: {freethreaded: true}`", "use lower-case letters, digits and dashes"
    for name, knode, vnode in _named(ctx, node, "variants", "variant", example, name_hint):
        d.variants.append(_variant(ctx, name, vnode))
        d.variant_nodes[name] = knode


def _variant(ctx: _Ctx, name: str, node: yaml.Node) -> Variant:
    if _is_null(node):
        return Variant(name=name)
    m = _mapping(ctx, node, f"variant `{name}`", VARIANT_KEYS)
    return Variant(
        name=name,
        freethreaded=_bool(ctx, m["freethreaded"][1], "freethreaded") if "freethreaded" in m else False,
        jit=_jit(ctx, m["jit"][1]) if "jit" in m else "no",
        configure=_flags(ctx, m["configure"][1], f"variant `{name}`") if "configure" in m else (),
    )


def _jit(ctx: _Ctx, node: yaml.Node) -> JitMode:
    raw = _scalar(ctx, node, "jit")
    jit = {"true": "yes", "false": "no"}.get(raw.lower(), raw)
    if jit not in JIT_MODES:
        close = difflib.get_close_matches(jit, JIT_MODES, n=1)
        raise ctx.fail(
            node,
            f"jit must be one of {', '.join(JIT_MODES)}, not {raw!r}",
            f"did you mean `{close[0]}`?" if close else None,
        )
    return cast(JitMode, jit)


def _load_platforms(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    d.platforms = tuple(Platform(name=x) for x in _str_list(ctx, node, "platforms", _platform_check(ctx)))
    if not d.platforms:
        raise ctx.fail(node, "platforms is empty", "define at least one of the platforms")


def _load_build_platform(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    value = _scalar(ctx, node, "build-platform")
    _platform_check(ctx)(node, value)
    d.build_platform = Platform(name=value)


def _load_distros(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    example = "e.g. `trixie: {suite: trixie}`"
    for name, _, options in _named(ctx, node, "distros", "distro", example, "use lower-case letters"):
        d.distros.append(_distro(ctx, name, options))


def _distro(ctx: _Ctx, name: str, node: yaml.Node) -> Distro:
    m = _mapping(ctx, node, f"distro `{name}`", DISTRO_KEYS)
    suite = _text(ctx, m["suite"][1], "suite", NAME_RE, "a Debian suite codename such as `trixie`")
    mirror = "http://deb.debian.org/debian"
    if "mirror" in m:
        mirror = _text(ctx, m["mirror"][1], "mirror", URL_RE, "an http(s) URL of a Debian mirror")
    pull = _pull(ctx, m["pull"][1]) if "pull" in m else None
    opt_in = _bool(ctx, m["opt-in"][1], f"distro `{name}` opt-in") if "opt-in" in m else False
    return Distro(name=name, suite=suite, mirror=mirror, pull=pull, opt_in=opt_in)


def _pull(ctx: _Ctx, node: yaml.Node) -> str:
    """An image reference, NAME[:TAG] or pinned by digest: NAME[:TAG]@sha256:<64 hex digits>."""
    value = _scalar(ctx, node, "pull")
    name, at, digest = value.partition("@")
    if at and PULL_RE.match(name) and not DIGEST_RE.match(digest):
        raise ctx.fail(
            node,
            f"pull {value!r} has a malformed digest {digest!r}",
            "a digest is `sha256:` and 64 lower-case hex digits, e.g. "
            "debian:trixie-slim@sha256:<digest from `docker images --digests`>; or drop `@…` to pull by tag",
        )
    hint = "an image reference like debian:trixie-slim, or one pinned by digest: debian:trixie-slim@sha256:<64 hex>"
    return _match(ctx, node, value, PULL_RE, "pull", hint)


def _load_profiles(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    for name, _, options in _named(ctx, node, "profiles", "profile", "e.g. `quick: {}`", "use lower-case letters"):
        d.profiles.append(_profile(ctx, name, options, d))


def _profile(ctx: _Ctx, name: str, node: yaml.Node, d: _Draft) -> Profile:
    """A profile as written, with the complete profile of each of its `overrides:`."""
    if _is_null(node):
        d.profile_nodes[(name, "")] = {}
        return Profile(name=name)
    m = _mapping(ctx, node, f"profile `{name}`", PROFILE_KEYS)
    own = {k: v for k, v in m.items() if k != "overrides"}
    d.profile_nodes[(name, "")] = own
    base = _profile_of(ctx, name, own, d.platforms, f"profile `{name}`")
    if "overrides" not in m:
        return base
    overrides: list[tuple[str, Profile]] = []
    for glob, knode, onode in _overrides(ctx, name, m["overrides"][1]):
        what = f'profile `{name}` for "{glob}"'
        changed = _mapping(ctx, onode, what, PROFILE_OVERRIDE_KEYS)
        if not changed:
            raise ctx.fail(onode, f"{what} changes nothing", f'drop `"{glob}":` or give it keys')
        merged = {**own, **changed}  # each key it gives replaces the profile's own, lists included
        d.profile_nodes[(name, glob)] = merged
        d.override_nodes[(name, glob)] = knode
        overrides.append((glob, _profile_of(ctx, name, merged, d.platforms, what)))
    return dataclasses.replace(base, overrides=tuple(overrides))


def _overrides(ctx: _Ctx, name: str, node: yaml.Node) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """The (glob, glob node, keys node) items of a profile's `overrides:`, in order."""
    example = 'e.g. `overrides: {"3.14-*-trixie-*": {compiler: clang-19}}`'
    if not isinstance(node, yaml.MappingNode) or not node.value:
        raise ctx.fail(node, f"profile `{name}` overrides must be a mapping of entry glob → keys", example)
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    for knode, onode in node.value:
        hint = f"a glob over entry ids (<minor>-<variant>-<distro>-<arch>), quoted, {example}"
        glob = _text(ctx, knode, f"entry glob in profile `{name}` overrides", ENTRY_GLOB_RE, hint)
        if any(glob == seen for seen, _, _ in out):
            raise ctx.fail(knode, f'profile `{name}` lists "{glob}" twice in overrides', "keep one of them")
        out.append((glob, knode, onode))
    return out


def _profile_of(
    ctx: _Ctx, name: str, m: dict[str, tuple[yaml.Node, yaml.Node]], platforms: Sequence[Platform], what: str
) -> Profile:
    """The profile ``name`` that the keys ``m`` describe (``what`` names it in errors)."""
    conf = _flags(ctx, m["configure"][1], what) if "configure" in m else ()
    sfx = _text(ctx, m["tag-suffix"][1], "tag-suffix", TAG_SUFFIX_RE, "e.g. `-quick`") if "tag-suffix" in m else ""
    cc: dict[str, tuple[str, ...]] = {
        key: _cc_flags(ctx, m[key][1], f"{what} {key}") for key in ("cflags-nodist", "ldflags-nodist") if key in m
    }
    _check_isa_level(ctx, name, m, cc, platforms)
    shared = _bool(ctx, m["shared"][1], f"{what} shared") if "shared" in m else False
    static_interpreter = False
    if "static-interpreter" in m:
        static_interpreter = _bool(ctx, m["static-interpreter"][1], f"{what} static-interpreter")
        if static_interpreter and not shared:
            raise ctx.fail(
                m["static-interpreter"][1],
                f"{what} sets static-interpreter without shared",
                "static-interpreter only applies to `shared: true` (without shared, python is static anyway)",
            )
    pgo_task: tuple[str, ...] = ()
    if "pgo-task" in m:
        pgo_task = _pgo_task(ctx, m["pgo-task"][1], f"{what} pgo-task")
        if "--enable-optimizations" not in conf:
            raise ctx.fail(
                m["pgo-task"][1],
                f"{what} sets pgo-task without --enable-optimizations",
                "add --enable-optimizations to the profile's configure flags, or drop pgo-task",
            )
    builtin = _module_names(ctx, m["builtin-modules"][1], f"{what} builtin-modules") if "builtin-modules" in m else ()
    optimize = _bool(ctx, m["optimize"][1], f"{what} optimize") if "optimize" in m else True
    if not optimize and {"--enable-optimizations", "--with-lto"} & {f.split("=", 1)[0] for f in conf}:
        raise ctx.fail(
            m["optimize"][1],
            f"{what} sets optimize: false with --enable-optimizations or --with-lto",
            "optimize: false compiles at -O0 for fast test builds; drop it, or drop PGO/LTO from configure",
        )
    return Profile(
        name=name,
        configure=conf,
        tag_suffix=sfx,
        pgo_task=pgo_task,
        builtin_modules=builtin,
        shared=shared,
        static_interpreter=static_interpreter,
        frame_pointers=_bool(ctx, m["frame-pointers"][1], f"{what} frame-pointers") if "frame-pointers" in m else False,
        optimize=optimize,
        cflags_nodist=cc.get("cflags-nodist", ()),
        ldflags_nodist=cc.get("ldflags-nodist", ()),
        compiler=_compiler(ctx, m["compiler"][1], what) if "compiler" in m else "gcc",
    )


def _compiler(ctx: _Ctx, node: yaml.Node, what: str) -> str:
    raw = _scalar(ctx, node, f"{what} compiler")
    if not COMPILER_RE.match(raw):
        raise ctx.fail(
            node,
            f"{what} compiler {raw!r} is neither gcc nor clang-N",
            "write `gcc` (the distro's, the default) or `clang-N` with N the major version of a clang the "
            "distro packages (Debian's clang-N), e.g. `clang-19` on trixie",
        )
    return raw


def _check_isa_level(
    ctx: _Ctx,
    name: str,
    m: dict[str, tuple[yaml.Node, yaml.Node]],
    cc: dict[str, tuple[str, ...]],
    platforms: Sequence[Platform],
) -> None:
    """An x86-64 ISA level above the baseline needs amd64-only platforms and -mneeded in both flag lists."""
    level = next(((key, f) for key, flags in cc.items() for f in flags if X86_ISA_LEVEL_RE.match(f)), None)
    if not level:
        return
    key, isa = level[0], level[1].split("=", 1)[1]
    others = [p.name for p in platforms if p.arch != "amd64"]
    if others:
        raise ctx.fail(
            m[key][1],
            f"profile `{name}` builds for {isa}, which {others[0]} cannot run",
            "an x86-64 ISA level needs a matrix whose platforms are linux/amd64 only (e.g. a separate "
            "matrix file for such profiles, passed with --matrix-file), or drop the -march flag",
        )
    unmarked = [k for k in ("cflags-nodist", "ldflags-nodist") if "-mneeded" not in cc.get(k, ())]
    if unmarked:
        raise ctx.fail(
            m[key][1],
            f"profile `{name}` builds for {isa} without -mneeded in {' and '.join(unmarked)}",
            "add -mneeded to both cflags-nodist and ldflags-nodist: the binaries are then marked with the "
            'ISA level they need, and glibc refuses them on an older CPU ("CPU ISA level is lower than '
            'required") instead of crashing with SIGILL at the first wider instruction',
        )


def _load_sources(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    sm = _mapping(ctx, node, "sources", SOURCES_KEYS)
    if "mirrors" in sm:
        d.mirrors = _str_list(ctx, sm["mirrors"][1], "sources.mirrors", _mirror_check(ctx))
    if "cache" in sm:
        d.cache_dir = _scalar(ctx, sm["cache"][1], "sources.cache")


def _load_smoke(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    sm = _mapping(ctx, node, "smoke", SMOKE_KEYS)
    if "modules" in sm:
        d.smoke_modules = _str_list(ctx, sm["modules"][1], "smoke.modules", _module_check(ctx))


def _load_exclude(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    d.exclude = _str_list(ctx, node, "exclude", lambda n, v: None)


def _load_default(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    dm = _mapping(ctx, node, "default", DEFAULT_KEYS)
    if "entry" in dm:
        d.default_node = dm["entry"][1]
        d.default_entry = _scalar(ctx, d.default_node, "default.entry")
    if "profile" in dm:
        d.default_profile = _scalar(ctx, dm["profile"][1], "default.profile")
        if d.default_profile not in [p.name for p in d.profiles]:
            raise ctx.fail(
                dm["profile"][1],
                f"default profile {d.default_profile!r} is not defined",
                f"use one of {', '.join(p.name for p in d.profiles)}",
            )


def _load_builders(ctx: _Ctx, node: yaml.Node, d: _Draft) -> None:
    """`builders:` platform → list of {url, jobs}; one job limit per engine, each engine once per platform."""
    example = "e.g. `linux/amd64: [{url: unix:///var/run/docker.sock, jobs: 2}]`"
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, "builders must be a mapping of platform → list of engines", example)
    jobs_of: dict[str, tuple[int, yaml.Node]] = {}
    for knode, vnode in node.value:
        plat = _scalar(ctx, knode, "a platform in builders")
        _platform_check(ctx)(knode, plat)
        if any(b.platform == plat for b in d.builders):
            raise ctx.fail(knode, f"builders for {plat} are declared twice", "list all its engines under one key")
        seen: set[str] = set()
        for item in _seq(ctx, vnode, f"builders of {plat}"):
            eng = _builder(ctx, item, plat)
            if eng.url in seen:
                raise ctx.fail(item, f"engine {eng.url} is listed twice for {plat}", "keep one of them")
            seen.add(eng.url)
            if eng.jobs is not None:
                first = jobs_of.setdefault(eng.url, (eng.jobs, item))
                if first[0] != eng.jobs:
                    raise ctx.fail(
                        item,
                        f"engine {eng.url} has jobs {eng.jobs} here and jobs {first[0]} on line "
                        f"{first[1].start_mark.line + 1}",
                        "an engine has one job limit, however many platforms it builds: give the same number",
                    )
            d.builders.append(eng)
        if not seen:
            raise ctx.fail(vnode, f"builders of {plat} is empty", example)


def _builder(ctx: _Ctx, node: yaml.Node, plat: str) -> BuilderEngine:
    m = _mapping(ctx, node, f"a builder of {plat}", BUILDER_KEYS)
    url = _scalar(ctx, m["url"][1], "url")
    if "@" in url and ":" in url.split("://", 1)[-1].split("@", 1)[0]:
        raise ctx.fail(m["url"][1], "an engine URL may not hold a password", "use ssh keys or TLS certificates")
    _match(
        ctx,
        m["url"][1],
        url,
        ENGINE_URL_RE,
        "url",
        "unix:///var/run/docker.sock, tcp://HOST:2376 (TLS client certificates) or ssh://USER@HOST[:PORT]",
    )
    jobs = None
    if "jobs" in m:
        raw = _scalar(ctx, m["jobs"][1], "jobs")
        if not raw.isdigit() or int(raw) < 1:
            raise ctx.fail(m["jobs"][1], f"jobs must be a whole number of at least 1, not {raw!r}", "e.g. `jobs: 2`")
        jobs = int(raw)
    return BuilderEngine(platform=plat, url=url, jobs=jobs, where=f"{ctx.path}:{node.start_mark.line + 1}")


# -- the table of top-level keys ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Section:
    """A top-level key of matrix.yaml and the function that reads its value into the draft."""

    key: Key
    load: Callable[[_Ctx, yaml.Node, _Draft], None]


# Sections load in this order: profiles check their flags against the platforms, and `default`
# names a profile. Absent optional sections keep _Draft's defaults.
SECTIONS = (
    Section(key=Key(name="repository", pattern=REPO_RE), load=_load_repository),
    Section(key=Key(name="versions", required=True, keys=VERSION_KEYS), load=_load_versions),
    Section(key=Key(name="variants", required=True, keys=VARIANT_KEYS, names=NAME_RE), load=_load_variants),
    Section(key=Key(name="platforms", required=True, enum=PLATFORM_NAMES), load=_load_platforms),
    Section(key=Key(name="build-platform", enum=PLATFORM_NAMES), load=_load_build_platform),
    Section(key=Key(name="distros", required=True, keys=DISTRO_KEYS, names=NAME_RE), load=_load_distros),
    Section(key=Key(name="profiles", required=True, keys=PROFILE_KEYS, names=NAME_RE), load=_load_profiles),
    Section(key=Key(name="sources", keys=SOURCES_KEYS), load=_load_sources),
    Section(key=Key(name="smoke", keys=SMOKE_KEYS), load=_load_smoke),
    Section(key=Key(name="exclude"), load=_load_exclude),
    Section(key=Key(name="default", keys=DEFAULT_KEYS), load=_load_default),
    Section(key=Key(name="builders", keys=BUILDER_KEYS, names=PLATFORM_NAME_RE), load=_load_builders),
)
TOP_KEYS = tuple(s.key for s in SECTIONS)


def load(path: str | Path) -> Matrix:
    """Load and validate a matrix file. Raises MatrixError with file:line on any problem."""
    p = Path(path)
    spath = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatrixError("file not found", path=spath, hint="create it, or pass --matrix-file PATH") from None
    return loads(text, spath)


def loads(text: str, path: str = "matrix.yaml") -> Matrix:
    """Validate matrix text section by section (SECTIONS), then the matrix as a whole."""
    ctx = _Ctx(path)
    root = _compose(text, path)
    top = _mapping(ctx, root, "the matrix", TOP_KEYS)
    draft = _Draft()
    for section in SECTIONS:
        if section.key.name in top:
            section.load(ctx, top[section.key.name][1], draft)
    return _matrix(ctx, root, draft)


# libyaml's parser when PyYAML has it (about ten times faster); its marks carry the same line numbers
_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str, path: str) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise MatrixError(
            f"YAML syntax error: {exc.problem}", path=path, line=line, hint="check indentation and quoting on that line"
        ) from None
    if root is None:
        raise MatrixError("the file is empty", path=path, hint="see README.md for the matrix format")
    return root


def _matrix(ctx: _Ctx, root: yaml.Node, d: _Draft) -> Matrix:
    """The frozen Matrix of a fully read draft, after the checks that span sections."""
    ids = sorted(eid for eid, *_ in _entries(d.versions, d.variants, d.distros, d.platforms, d.exclude))
    matrix = Matrix(
        path=ctx.path,
        versions=tuple(d.versions),
        variants=tuple(d.variants),
        platforms=d.platforms,
        distros=tuple(d.distros),
        profiles=tuple(d.profiles),
        repository=d.repository,
        default_entry=d.default_entry or (ids[0] if ids else ""),
        default_profile=d.default_profile or d.profiles[0].name,
        mirrors=d.mirrors,
        cache_dir=d.cache_dir,
        smoke_modules=d.smoke_modules,
        build_platform=d.build_platform,
        exclude=d.exclude,
        builders=tuple(d.builders),
    )
    _check_releases(ctx, matrix, d.version_nodes, d.variant_nodes)
    _check_overrides(ctx, matrix, ids, d)
    _check_compilers(ctx, matrix, d)
    if not ids:
        raise ctx.fail(root, "the matrix expands to no entries", "check `exclude`")
    if matrix.default_entry not in ids:
        close = difflib.get_close_matches(matrix.default_entry, ids, n=1)
        raise ctx.fail(
            d.default_node,
            f"default entry {matrix.default_entry!r} is not in the matrix",
            f"did you mean `{close[0]}`?" if close else "run `invoke matrix` to list entries",
        )
    return matrix


def _check_releases(
    ctx: _Ctx,
    matrix: Matrix,
    version_nodes: dict[str, tuple[yaml.Node, yaml.Node]],
    variant_nodes: dict[str, yaml.Node],
) -> None:
    """Refuse what a release's configure refuses, before anything is built (cpforge/releases.py)."""
    has_jit = any(v.jit != "no" for v in matrix.variants)
    for ver in matrix.versions:
        vnode, lnode = version_nodes[ver.version]
        need = releases.jit_llvm(ver.minor_tuple)
        if has_jit and need is not None and ver.llvm != need:
            raise ctx.fail(
                lnode,
                f"CPython {ver.minor}'s JIT needs LLVM {need}, not {ver.llvm} (Tools/jit/_llvm.py in the release)",
                f"write `llvm: {need}`",
            )
        for var in matrix.variants:
            rule = releases.refusal(ver.minor_tuple, var.freethreaded, var.jit != "no", var.configure)
            if rule is None:
                continue
            eids = [f"{ver.minor}-{var.name}-{d.name}-{p.arch}" for d in matrix.distros for p in matrix.platforms]
            if all(any(fnmatch.fnmatchcase(e, pat) for pat in matrix.exclude) for e in eids):
                continue
            raise ctx.fail(
                variant_nodes[var.name],
                f"variant `{var.name}` cannot be built for CPython {ver.version} "
                f"(line {vnode.start_mark.line + 1}): its configure refuses it with "
                f'"{rule.reason}" ({rule.source})',
                f'add "{ver.minor}-{var.name}-*" to `exclude:` (or drop the variant)',
            )


def _check_overrides(ctx: _Ctx, matrix: Matrix, ids: Sequence[str], d: _Draft) -> None:
    """Each `overrides:` glob matches an entry (a typo otherwise changes nothing, silently) that no
    earlier glob of the profile takes first."""
    for prof in matrix.profiles:
        for glob, _ in prof.overrides:
            if not any(prof.override_for(eid) == glob for eid in ids):
                matched = [eid for eid in ids if fnmatch.fnmatchcase(eid, glob)]
                raise ctx.fail(
                    d.override_nodes[(prof.name, glob)],
                    f'profile `{prof.name}` overrides "{glob}", which '
                    + ("matches no entry of the matrix" if not matched else "an earlier glob of it takes first"),
                    "run `invoke matrix` to list entry ids, and fix or drop the glob"
                    if not matched
                    else "order the overrides from the most specific glob to the least",
                )


def _check_compilers(ctx: _Ctx, matrix: Matrix, d: _Draft) -> None:
    """Refuse a configure flag that an entry's release line lacks or that its profile's compiler
    cannot build (releases.COMPILER_RULES), naming the flag's line: the profile's, or the variant's."""
    entries = _entries(matrix.versions, matrix.variants, matrix.distros, matrix.platforms, matrix.exclude)
    for eid, ver, var, _, _ in entries:
        for prof in matrix.profiles:
            eff = prof.for_entry(eid)
            nodes = d.profile_nodes[(prof.name, prof.override_for(eid) or "")]
            rule = releases.compiler_refusal(ver.minor_tuple, eff.compiler, (*var.configure, *eff.configure))
            if rule is None:
                continue
            flag_node = _flag_node(nodes, rule.flag)
            where = f"profile `{prof.name}`" if flag_node else f"variant `{var.name}` (in profile `{prof.name}`)"
            raise ctx.fail(
                flag_node or d.variant_nodes[var.name],
                f"{where} builds {eid} (CPython {ver.version}) with {rule.flag} and {eff.compiler}: "
                f"{rule.problem} ({rule.source})",
                rule.fix,
            )


def _flag_node(nodes: dict[str, tuple[yaml.Node, yaml.Node]], flag: str) -> yaml.Node | None:
    """The item of a profile's `configure:` list that sets ``flag`` (`--flag` or `--flag=…`)."""
    if "configure" not in nodes or not isinstance(nodes["configure"][1], yaml.SequenceNode):
        return None
    return next((n for n in nodes["configure"][1].value if str(n.value).split("=", 1)[0] == flag), None)


def spec_json(s: BuildSpec) -> dict[str, Any]:
    """The JSON view of an entry for `invoke matrix --json` (CI fan-out)."""
    return {
        "id": s.id,
        "version": s.version,
        "minor": s.minor,
        "variant": s.variant.name,
        "freethreaded": s.variant.freethreaded,
        "jit": s.variant.jit,
        "platform": s.platform.name,
        "arch": s.platform.arch,
        "distro": s.distro.name,
        "profile": s.profile.name,
        "compiler": s.profile.compiler,
        "configure_flags": list(s.configure_flags),
        "llvm": s.llvm,
        "base_image": s.base_image,
        "build_platform": s.build_platform.name,
        "cross": s.cross,
        "dockerfile": s.dockerfile,
        "tags": list(s.tags),
    }
