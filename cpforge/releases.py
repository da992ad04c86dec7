"""What each CPython release line accepts: facts read from its own configure.ac and Tools/jit.

Knows nothing about YAML, Docker or Jinja. The matrix loader asks it three questions: which LLVM a
release's JIT needs, whether a variant is a combination the release's configure refuses, and whether
a configure flag needs a release line or a compiler the build does not have (COMPILER_RULES). A
refused combination is an error when the matrix loads (naming the line, the release, CPython's reason
and the fix), never a build that fails minutes later.

Every rule names where it comes from, so that it can be checked against a new release's sources:
    tar -xOf Python-X.Y.Z.tar.xz Python-X.Y.Z/configure.ac | grep -n 'AC_MSG_ERROR'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """A variant shape that a range of release lines refuses at configure time."""

    first: tuple[int, int]  # the first minor that refuses it
    last: tuple[int, int] | None  # the last minor that refuses it (None: every later one too)
    freethreaded: bool
    jit: bool  # the rule applies to any --enable-experimental-jit other than `no`
    configure_flag: str | None  # an extra configure flag that, with the above, is refused
    reason: str  # what configure says, quoted
    source: str  # where this is written upstream

    def applies(self, minor: tuple[int, int], freethreaded: bool, jit: bool, configure: tuple[str, ...]) -> bool:
        if minor < self.first or (self.last is not None and minor > self.last):
            return False
        if self.freethreaded and not freethreaded:
            return False
        if self.jit and not jit:
            return False
        return self.configure_flag is None or any(f.split("=", 1)[0] == self.configure_flag for f in configure)


REFUSALS: tuple[Refusal, ...] = (
    Refusal(
        first=(3, 14),
        last=(3, 14),
        freethreaded=True,
        jit=True,
        configure_flag=None,
        reason="configure: error: --enable-experimental-jit cannot be used with --disable-gil.",
        source="configure.ac of 3.14 (gh-133171, PR #133179): free-threaded builds do not support the JIT; "
        "3.15 turns the error into a warning",
    ),
    Refusal(
        first=(3, 13),
        last=None,
        freethreaded=True,
        jit=False,
        configure_flag="--with-trace-refs",
        reason="configure: error: --disable-gil cannot be used with --with-trace-refs",
        source="configure.ac since 3.13",
    ),
)


@dataclass(frozen=True, kw_only=True)
class CompilerRule:
    """A configure flag that only some release lines have and only some compilers can build."""

    flag: str
    first: tuple[int, int]  # the first release line whose configure knows the flag
    clang: int  # the oldest clang major that builds it
    gcc: bool  # whether the distro's gcc builds it
    what: str  # what the flag builds, for messages
    needs: str  # why it needs that compiler, quoted from upstream
    source: str  # where that is written upstream

    def enabled(self, configure: tuple[str, ...]) -> bool:
        """Whether ``configure`` turns the flag on (`--flag`, `--flag=yes`; not `--flag=no`)."""
        return any(f == self.flag or f == f"{self.flag}=yes" for f in configure)


COMPILER_RULES: tuple[CompilerRule, ...] = (
    CompilerRule(
        flag="--with-tail-call-interp",
        first=(3, 14),
        clang=19,
        gcc=False,
        what="the tail-call interpreter",
        needs='a compiler with the musttail attribute and the preserve_none calling convention ("This compiler '
        'does not have support for efficient tail calling.", Python/ceval_macros.h): clang 19 or newer; '
        "GCC has no preserve_none",
        source="configure.ac of 3.14 (Check for --with-tail-call-interp) and Doc/using/configure.rst",
    ),
)


@dataclass(frozen=True, kw_only=True)
class CompilerRefusal:
    """Why a release line cannot build a configure flag with a compiler, and what fixes it."""

    flag: str
    problem: str
    fix: str
    source: str


def compiler_refusal(minor: tuple[int, int], compiler: str, configure: tuple[str, ...]) -> CompilerRefusal | None:
    """The first COMPILER_RULES flag in ``configure`` that release line ``minor`` lacks, or that
    ``compiler`` (gcc or clang-N) cannot build."""
    line = f"{minor[0]}.{minor[1]}"
    for rule in COMPILER_RULES:
        if not rule.enabled(configure):
            continue
        first = f"{rule.first[0]}.{rule.first[1]}"
        if minor < rule.first:
            return CompilerRefusal(
                flag=rule.flag,
                problem=f"CPython {line}'s configure has no {rule.flag} ({rule.what} arrived in {first}): "
                "it stops with 'unrecognized options'",
                fix=f"give the flag to {first} and later only: set it in an override of the profile, "
                f'`overrides: {{"{first}-*": {{configure: [..., {rule.flag}]}}}}`',
                source=rule.source,
            )
        major = int(compiler.removeprefix("clang-")) if compiler.startswith("clang-") else None
        if (major is None and not rule.gcc) or (major is not None and major < rule.clang):
            return CompilerRefusal(
                flag=rule.flag,
                problem=f"{compiler} cannot build {rule.what} ({rule.flag}): it needs {rule.needs}",
                fix=f"build {line} with `compiler: clang-{rule.clang}` (or a newer clang the distro has) "
                "where the flag is set",
                source=rule.source,
            )
    return None


# The exact LLVM major a release's JIT builds its stencils with (Tools/jit/_llvm.py, _LLVM_VERSION).
JIT_LLVM: dict[tuple[int, int], int] = {(3, 13): 18, (3, 14): 19, (3, 15): 21}

# Combinations a release builds but that do not do what their name says: reported, not refused.
NOTES: dict[tuple[tuple[int, int], str], str] = {
    ((3, 13), "freethreaded+jit"): "3.13 builds the JIT into a free-threaded interpreter but never runs it "
    "(no tier-2 executors); the smoke test reports jit_enabled as it is",
}


# Features a release line introduced that the smoke test runs for real: (first minor, fact, what it proves).
# scripts/smoke.py reports each fact (None where the release lacks the feature).
FEATURES: tuple[tuple[tuple[int, int], str, str], ...] = (
    ((3, 14), "subinterpreters_ok", "PEP 734: concurrent.interpreters runs code in a subinterpreter and closes it"),
    ((3, 14), "tstring_ok", "PEP 750: a t-string evaluates to a string.templatelib.Template"),
    ((3, 14), "zstd_ok", "compression.zstd round-trips data"),
)


def features(minor: tuple[int, int]) -> list[tuple[str, str]]:
    """(fact, description) of every feature release line ``minor`` must prove in its smoke test."""
    return [(fact, what) for first, fact, what in FEATURES if minor >= first]


def minor_tuple(minor: str) -> tuple[int, int]:
    """'3.14' → (3, 14)."""
    major, _, rest = minor.partition(".")
    return int(major), int(rest.split(".")[0])


def refusal(minor: tuple[int, int], freethreaded: bool, jit: bool, configure: tuple[str, ...]) -> Refusal | None:
    """The first rule by which release line ``minor`` refuses this variant, if any."""
    return next((r for r in REFUSALS if r.applies(minor, freethreaded, jit, configure)), None)


def jit_llvm(minor: tuple[int, int]) -> int | None:
    """The LLVM major the JIT of release line ``minor`` needs, where cpforge knows it."""
    return JIT_LLVM.get(minor)


def note(minor: tuple[int, int], freethreaded: bool, jit: bool) -> str | None:
    shape = "+".join(name for name, on in (("freethreaded", freethreaded), ("jit", jit)) if on)
    return NOTES.get((minor, shape))
