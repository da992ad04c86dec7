"""What each CPython release line accepts: facts read from its own configure.ac and Tools/jit.

Knows nothing about YAML, Docker or Jinja. The matrix loader asks it two questions: which LLVM a
release's JIT needs, and whether a variant is a combination the release's configure refuses. A
refused combination is an error when the matrix loads (naming the line, the release, CPython's reason
and the `exclude` glob that fixes it), never a build that fails minutes later.

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
