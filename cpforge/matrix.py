"""matrix.yaml: schema, validation with file:line errors, and expansion into frozen BuildSpecs.

Knows nothing about Docker or Jinja. Every value that later reaches a Dockerfile or a shell is
validated here against a strict pattern, so nothing a user writes in the matrix is ever
interpolated into a shell unchecked.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal

import yaml

from . import releases
from .errors import MatrixError, SelectionError

JitMode = Literal["no", "yes", "yes-off", "interpreter"]
JIT_MODES: tuple[str, ...] = ("no", "yes", "yes-off", "interpreter")

# A configure flag is `--name` or `--name=value`; the value may not contain shell metacharacters.
FLAG_RE = re.compile(r"^--[a-z0-9][a-z0-9-]*(=[A-Za-z0-9._,+/:@%=-]*)?$")
VERSION_RE = re.compile(r"^(3)\.(\d+)\.(\d+)((a|b|rc)\d+)?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
REPO_RE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
URL_RE = re.compile(r"^(https?|file)://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+$")
DEBIAN_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")

# platform -> (docker arch, uname machine, GNU triplet, ELF e_machine name)
KNOWN_PLATFORMS: dict[str, tuple[str, str, str]] = {
    "linux/amd64": ("amd64", "x86_64", "x86_64-linux-gnu"),
    "linux/arm64": ("arm64", "aarch64", "aarch64-linux-gnu"),
}

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
    cflags_nodist: tuple[str, ...] = ()  # CPython's own objects only: never leaks into extension builds
    ldflags_nodist: tuple[str, ...] = ()
    pgo_task: tuple[str, ...] = ()  # PROFILE_TASK: what the instrumented python runs to train PGO
    # Stdlib extension modules linked into libpython (and so into a static interpreter) instead of
    # shipped as .so files, as Debian's python3.X does: importing them opens and maps no file, and
    # LTO sees them with the core (measured here: faster startup, the same benchmark times).
    builtin_modules: tuple[str, ...] = ()

    def build_flags(self) -> tuple[str, ...]:
        """The configure arguments this profile adds: its flags, then derived ones."""
        cflags = (*(FRAME_POINTER_FLAGS if self.frame_pointers else ()), *self.cflags_nodist)
        return (
            *self.configure,
            *(("--enable-shared",) if self.shared else ()),
            *(("--enable-static-libpython-for-interpreter",) if self.static_interpreter else ()),
            *((f"CFLAGS_NODIST={' '.join(cflags)}",) if cflags else ()),
            *((f"LDFLAGS_NODIST={' '.join(self.ldflags_nodist)}",) if self.ldflags_nodist else ()),
            *((f"PROFILE_TASK={' '.join(self.pgo_task)}",) if self.pgo_task else ()),
        )


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
        """Path of the committed Dockerfile, relative to the repository root."""
        return f"dockerfiles/{self.id}/Dockerfile.{self.profile.name}"

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
        """Where this entry's pinned PGO profile (its .gcda files) lives, relative to the repository
        root: `invoke lock` pins the one a build trained, and later builds reuse it instead of training
        again, so a release build is reproducible. None for builds without PGO."""
        if not self.pgo:
            return None
        return f"pgo/{self.id}.{self.profile.name}.{self.pgo_config}.tar.xz"

    @property
    def pgo_config(self) -> str:
        """12 hex digits naming everything that shapes the instrumented build a PGO profile was
        trained on: source, platforms, builder, configure and compiler flags, training task, built-in
        modules. Change any of them and the pinned profile no longer matches the code GCC compiles
        (it fails with -Werror=coverage-mismatch), so its file name changes too: the build trains
        afresh instead, and `invoke lock` pins the new profile in place of the old one."""
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
    build_platform: Platform = Platform(name="linux/amd64")
    exclude: tuple[str, ...] = ()

    def profile(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise SelectionError(
            f"unknown profile {name!r} in {self.path}",
            hint=f"use one of: {', '.join(p.name for p in self.profiles)}",
        )

    def expand(self, profile: str | None = None) -> list[BuildSpec]:
        """Every entry of the matrix, for one profile (default: the matrix's default profile)."""
        prof = self.profile(profile or self.default_profile)
        specs: list[BuildSpec] = []
        for ver in self.versions:
            for var in self.variants:
                for dist in self.distros:
                    for plat in self.platforms:
                        eid = f"{ver.minor}-{var.name}-{dist.name}-{plat.arch}"
                        if any(fnmatch.fnmatchcase(eid, pat) for pat in self.exclude):
                            continue
                        specs.append(
                            BuildSpec(
                                id=eid,
                                version=ver.version,
                                minor=ver.minor,
                                variant=var,
                                platform=plat,
                                distro=dist,
                                profile=prof,
                                llvm=ver.llvm,
                                source=Source(version=ver.version, sha256=ver.sha256, signer=ver.signer),
                                epoch=ver.epoch,
                                base_image=dist.base_image(plat),
                                build_platform=self.build_platform,
                                repository=self.repository,
                                smoke_modules=(*self.smoke_modules, *ver.modules),
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
# Loading with line numbers
# --------------------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, message: str, hint: str | None = None) -> MatrixError:
        line = node.start_mark.line + 1 if node is not None else None
        return MatrixError(message, path=self.path, line=line, hint=hint)


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


def _mapping(
    ctx: _Ctx, node: yaml.Node, what: str, allowed: Sequence[str], required: Sequence[str] = ()
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, f"{what} must be a mapping, not a {_kind(node)}")
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
    for req in required:
        if req not in out:
            raise ctx.fail(node, f"{what} is missing the required key `{req}`", f"add `{req}: …`")
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


PROFILE_KEYS = (
    "configure",
    "tag-suffix",
    "shared",
    "static-interpreter",
    "frame-pointers",
    "cflags-nodist",
    "ldflags-nodist",
    "pgo-task",
    "builtin-modules",
)

TOP_KEYS = (
    "repository",
    "default",
    "sources",
    "versions",
    "variants",
    "platforms",
    "distros",
    "profiles",
    "smoke",
    "exclude",
)


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
    ctx = _Ctx(path)
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise MatrixError(
            f"YAML syntax error: {exc.problem}", path=path, line=line, hint="check indentation and quoting on that line"
        ) from None
    if root is None:
        raise MatrixError("the file is empty", path=path, hint="see README.md for the matrix format")
    top = _mapping(
        ctx, root, "the matrix", TOP_KEYS, required=("versions", "variants", "platforms", "distros", "profiles")
    )

    repository = "cpforge/python"
    if "repository" in top:
        n = top["repository"][1]
        repository = _match(
            ctx,
            n,
            _scalar(ctx, n, "repository"),
            REPO_RE,
            "repository",
            "use a lower-case image name such as `cpforge/python`",
        )

    # versions -------------------------------------------------------------------------------
    versions: list[PythonVersion] = []
    version_nodes: dict[str, tuple[yaml.Node, yaml.Node]] = {}  # version → (its `version:` node, `llvm:` node)
    for item in _seq(ctx, top["versions"][1], "versions"):
        m = _mapping(
            ctx,
            item,
            "a version",
            ("version", "sha256", "released", "llvm", "signer", "modules"),
            required=("version", "sha256", "released", "llvm"),
        )
        vnode = m["version"][1]
        version = _match(
            ctx,
            vnode,
            _scalar(ctx, vnode, "version"),
            VERSION_RE,
            "version",
            "write the full release, e.g. `3.13.5` (quote it in YAML)",
        )
        snode = m["sha256"][1]
        sha = _match(
            ctx,
            snode,
            _scalar(ctx, snode, "sha256").lower(),
            SHA256_RE,
            "sha256",
            "paste the 64 hex digits published for the release",
        )
        rnode = m["released"][1]
        released_raw = _scalar(ctx, rnode, "released")
        try:
            released = date.fromisoformat(released_raw)
        except ValueError:
            raise ctx.fail(
                rnode,
                f"released must be a date, not {released_raw!r}",
                "write python.org's release day as YYYY-MM-DD, e.g. `released: 2025-06-11`",
            ) from None
        lnode = m["llvm"][1]
        llvm_raw = _scalar(ctx, lnode, "llvm")
        if not llvm_raw.isdigit():
            raise ctx.fail(lnode, f"llvm must be a major version number, not {llvm_raw!r}", "e.g. `llvm: 19`")
        signer = None
        if "signer" in m:
            sm = _mapping(ctx, m["signer"][1], "signer", ("identity", "issuer"), required=("identity", "issuer"))
            signer = Signer(
                identity=_scalar(ctx, sm["identity"][1], "identity"), issuer=_scalar(ctx, sm["issuer"][1], "issuer")
            )
        modules: tuple[str, ...] = ()
        if "modules" in m:
            modules = _str_list(ctx, m["modules"][1], "modules", _module_check(ctx))
        pv = PythonVersion(
            version=version, sha256=sha, released=released, llvm=int(llvm_raw), signer=signer, modules=modules
        )
        if any(v.minor == pv.minor for v in versions):
            raise ctx.fail(vnode, f"version {pv.minor} is listed twice", "keep one release per minor version")
        if pv.minor_tuple < (3, 13):
            raise ctx.fail(
                vnode,
                f"version {version} is too old: cpforge builds 3.13 and newer",
                "free-threading and the JIT need CPython 3.13+",
            )
        versions.append(pv)
        version_nodes[pv.version] = (vnode, lnode)
    if not versions:
        raise ctx.fail(top["versions"][1], "versions is empty", "list at least one version")

    # variants -------------------------------------------------------------------------------
    variants: list[Variant] = []
    variant_nodes: dict[str, yaml.Node] = {}
    vmap = top["variants"][1]
    if not isinstance(vmap, yaml.MappingNode):
        raise ctx.fail(
            vmap, "variants must be a mapping of name → options", "e.g. `freethreaded: {freethreaded: true}`"
        )
    for k, v in vmap.value:
        name = _match(
            ctx,
            k,
            _scalar(ctx, k, "variant name"),
            NAME_RE,
            "variant name",
            "use lower-case letters, digits and dashes",
        )
        variant_nodes[name] = k
        if isinstance(v, yaml.ScalarNode) and v.value in ("", "~", "null"):
            variants.append(Variant(name=name))
            continue
        m = _mapping(ctx, v, f"variant `{name}`", ("freethreaded", "jit", "configure"))
        ft = _bool(ctx, m["freethreaded"][1], "freethreaded") if "freethreaded" in m else False
        jit = "no"
        if "jit" in m:
            jn = m["jit"][1]
            raw = _scalar(ctx, jn, "jit")
            jit = {"true": "yes", "false": "no"}.get(raw.lower(), raw)
            if jit not in JIT_MODES:
                close = difflib.get_close_matches(jit, JIT_MODES, n=1)
                raise ctx.fail(
                    jn,
                    f"jit must be one of {', '.join(JIT_MODES)}, not {raw!r}",
                    f"did you mean `{close[0]}`?" if close else None,
                )
        conf = _flags(ctx, m["configure"][1], f"variant `{name}`") if "configure" in m else ()
        if any(x.name == name for x in variants):
            raise ctx.fail(k, f"variant `{name}` is defined twice", "rename or remove one")
        variants.append(Variant(name=name, freethreaded=ft, jit=jit, configure=conf))  # type: ignore[arg-type]

    # platforms ------------------------------------------------------------------------------
    def plat_check(item: yaml.Node, value: str) -> None:
        if value not in KNOWN_PLATFORMS:
            close = difflib.get_close_matches(value, list(KNOWN_PLATFORMS), n=1)
            raise ctx.fail(
                item,
                f"unknown platform {value!r}",
                f"did you mean `{close[0]}`?" if close else f"use one of {', '.join(KNOWN_PLATFORMS)}",
            )

    platforms = tuple(Platform(name=x) for x in _str_list(ctx, top["platforms"][1], "platforms", plat_check))
    build_platform = Platform(name="linux/amd64")
    if "build-platform" in top:
        bnode = top["build-platform"][1]
        value = _scalar(ctx, bnode, "build-platform")
        plat_check(bnode, value)
        build_platform = Platform(name=value)

    # distros --------------------------------------------------------------------------------
    distros: list[Distro] = []
    dmap = top["distros"][1]
    if not isinstance(dmap, yaml.MappingNode):
        raise ctx.fail(dmap, "distros must be a mapping of name → options", "e.g. `trixie: {suite: trixie}`")
    for k, v in dmap.value:
        name = _match(ctx, k, _scalar(ctx, k, "distro name"), NAME_RE, "distro name", "use lower-case letters")
        m = _mapping(ctx, v, f"distro `{name}`", ("suite", "mirror", "pull", "opt-in"), required=("suite",))
        suite = _match(
            ctx,
            m["suite"][1],
            _scalar(ctx, m["suite"][1], "suite"),
            NAME_RE,
            "suite",
            "a Debian suite codename such as `trixie`",
        )
        mirror = "http://deb.debian.org/debian"
        if "mirror" in m:
            mirror = _match(
                ctx,
                m["mirror"][1],
                _scalar(ctx, m["mirror"][1], "mirror"),
                URL_RE,
                "mirror",
                "an http(s) URL of a Debian mirror",
            )
        pull = None
        if "pull" in m:
            pull = _match(
                ctx,
                m["pull"][1],
                _scalar(ctx, m["pull"][1], "pull"),
                re.compile(r"^[a-z0-9][a-z0-9._/:-]*$"),
                "pull",
                "an image reference like debian:trixie-slim",
            )
        opt_in = _bool(ctx, m["opt-in"][1], f"distro `{name}` opt-in") if "opt-in" in m else False
        distros.append(Distro(name=name, suite=suite, mirror=mirror, pull=pull, opt_in=opt_in))

    # profiles -------------------------------------------------------------------------------
    profiles: list[Profile] = []
    pmap = top["profiles"][1]
    if not isinstance(pmap, yaml.MappingNode):
        raise ctx.fail(pmap, "profiles must be a mapping of name → options", "e.g. `quick: {}`")
    for k, v in pmap.value:
        name = _match(ctx, k, _scalar(ctx, k, "profile name"), NAME_RE, "profile name", "use lower-case letters")
        if isinstance(v, yaml.ScalarNode) and v.value in ("", "~", "null"):
            profiles.append(Profile(name=name))
            continue
        m = _mapping(ctx, v, f"profile `{name}`", PROFILE_KEYS)
        conf = _flags(ctx, m["configure"][1], f"profile `{name}`") if "configure" in m else ()
        sfx = ""
        if "tag-suffix" in m:
            sfx = _match(
                ctx,
                m["tag-suffix"][1],
                _scalar(ctx, m["tag-suffix"][1], "tag-suffix"),
                re.compile(r"^[a-z0-9._-]*$"),
                "tag-suffix",
                "e.g. `-quick`",
            )
        cc = {
            key: _cc_flags(ctx, m[key][1], f"profile `{name}` {key}")
            for key in ("cflags-nodist", "ldflags-nodist")
            if key in m
        }
        level = next(((key, f) for key, flags in cc.items() for f in flags if X86_ISA_LEVEL_RE.match(f)), None)
        if level:
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
                    "ISA level they need, and glibc refuses them on an older CPU (\"CPU ISA level is lower than "
                    "required\") instead of crashing with SIGILL at the first wider instruction",
                )
        shared = _bool(ctx, m["shared"][1], f"profile `{name}` shared") if "shared" in m else False
        static_interpreter = False
        if "static-interpreter" in m:
            node = m["static-interpreter"][1]
            static_interpreter = _bool(ctx, node, f"profile `{name}` static-interpreter")
            if static_interpreter and not shared:
                raise ctx.fail(
                    node,
                    f"profile `{name}` sets static-interpreter without shared",
                    "static-interpreter only applies to `shared: true` (without shared, python is static anyway)",
                )
        pgo_task: tuple[str, ...] = ()
        if "pgo-task" in m:
            pgo_task = _pgo_task(ctx, m["pgo-task"][1], f"profile `{name}` pgo-task")
            if "--enable-optimizations" not in conf:
                raise ctx.fail(
                    m["pgo-task"][1],
                    f"profile `{name}` sets pgo-task without --enable-optimizations",
                    "add --enable-optimizations to the profile's configure flags, or drop pgo-task",
                )
        builtin: tuple[str, ...] = ()
        if "builtin-modules" in m:
            builtin = _module_names(ctx, m["builtin-modules"][1], f"profile `{name}` builtin-modules")
        profiles.append(
            Profile(
                name=name,
                configure=conf,
                tag_suffix=sfx,
                pgo_task=pgo_task,
                builtin_modules=builtin,
                shared=shared,
                static_interpreter=static_interpreter,
                frame_pointers=(
                    _bool(ctx, m["frame-pointers"][1], f"profile `{name}` frame-pointers")
                    if "frame-pointers" in m
                    else False
                ),
                cflags_nodist=cc.get("cflags-nodist", ()),
                ldflags_nodist=cc.get("ldflags-nodist", ()),
            )
        )

    # sources --------------------------------------------------------------------------------
    mirrors: tuple[str, ...] = ("https://www.python.org/ftp/python",)
    cache_dir = "sources"
    if "sources" in top:
        sm = _mapping(ctx, top["sources"][1], "sources", ("mirrors", "cache"))
        if "mirrors" in sm:
            mirrors = _str_list(ctx, sm["mirrors"][1], "sources.mirrors", _mirror_check(ctx))
        if "cache" in sm:
            cache_dir = _scalar(ctx, sm["cache"][1], "sources.cache")

    smoke_modules: tuple[str, ...] = ()
    if "smoke" in top:
        sm = _mapping(ctx, top["smoke"][1], "smoke", ("modules",))
        if "modules" in sm:
            smoke_modules = _str_list(ctx, sm["modules"][1], "smoke.modules", _module_check(ctx))

    exclude: tuple[str, ...] = ()
    if "exclude" in top:
        exclude = _str_list(ctx, top["exclude"][1], "exclude", lambda n, v: None)

    # default --------------------------------------------------------------------------------
    default_profile = profiles[0].name if profiles else "quick"
    default_entry = ""
    default_node: yaml.Node | None = None
    if "default" in top:
        dm = _mapping(ctx, top["default"][1], "default", ("entry", "profile"))
        if "entry" in dm:
            default_node = dm["entry"][1]
            default_entry = _scalar(ctx, default_node, "default.entry")
        if "profile" in dm:
            default_profile = _scalar(ctx, dm["profile"][1], "default.profile")
            if default_profile not in [p.name for p in profiles]:
                raise ctx.fail(
                    dm["profile"][1],
                    f"default profile {default_profile!r} is not defined",
                    f"use one of {', '.join(p.name for p in profiles)}",
                )

    for what, seq, node in (
        ("variants", variants, vmap),
        ("platforms", platforms, top["platforms"][1]),
        ("distros", distros, dmap),
        ("profiles", profiles, pmap),
    ):
        if not seq:
            raise ctx.fail(node, f"{what} is empty", f"define at least one of the {what}")

    matrix = Matrix(
        path=path,
        versions=tuple(versions),
        variants=tuple(variants),
        platforms=platforms,
        distros=tuple(distros),
        profiles=tuple(profiles),
        repository=repository,
        default_entry=default_entry,
        default_profile=default_profile,
        mirrors=mirrors,
        cache_dir=cache_dir,
        smoke_modules=smoke_modules,
        build_platform=build_platform,
        exclude=exclude,
    )
    _check_releases(ctx, matrix, version_nodes, variant_nodes)
    ids = {s.id for s in matrix.expand()}
    if not ids:
        raise ctx.fail(root, "the matrix expands to no entries", "check `exclude`")
    if not default_entry:
        object.__setattr__(matrix, "default_entry", sorted(ids)[0])
    elif default_entry not in ids:
        close = difflib.get_close_matches(default_entry, sorted(ids), n=1)
        raise ctx.fail(
            default_node,
            f"default entry {default_entry!r} is not in the matrix",
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
                f"\"{rule.reason}\" ({rule.source})",
                f'add "{ver.minor}-{var.name}-*" to `exclude:` (or drop the variant)',
            )


def _module_check(ctx: _Ctx) -> Callable[[yaml.Node, str], None]:
    def check(item: yaml.Node, value: str) -> None:
        if not MODULE_RE.match(value):
            raise ctx.fail(item, f"{value!r} is not a module name", "write a dotted module name such as `dbm.gnu`")

    return check


def _mirror_check(ctx: _Ctx) -> Callable[[yaml.Node, str], None]:
    def check(item: yaml.Node, value: str) -> None:
        body = value.removeprefix("debian+")
        if value.startswith(("/", "./", "../")) or URL_RE.match(body):
            return
        raise ctx.fail(
            item,
            f"mirror {value!r} is neither a URL nor a local directory",
            "use https://host/path (python.org layout), debian+http://host/debian (a Debian mirror), or /a/local/dir",
        )

    return check


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
        "configure_flags": list(s.configure_flags),
        "llvm": s.llvm,
        "base_image": s.base_image,
        "build_platform": s.build_platform.name,
        "cross": s.cross,
        "dockerfile": s.dockerfile,
        "tags": list(s.tags),
    }
