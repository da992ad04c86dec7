"""cpforge.releases: which configure flags need a release line or a compiler (COMPILER_RULES)."""

from __future__ import annotations

import pytest

from cpforge import releases

TAIL = "--with-tail-call-interp"


@pytest.mark.parametrize("compiler", ["clang-19", "clang-20", "clang-21"])
@pytest.mark.parametrize("flag", [TAIL, f"{TAIL}=yes"])
def test_tail_call_on_314_and_later_with_clang_19_or_newer_is_accepted(compiler: str, flag: str) -> None:
    assert releases.compiler_refusal((3, 14), compiler, ("--enable-optimizations", flag)) is None
    assert releases.compiler_refusal((3, 15), compiler, (flag,)) is None


@pytest.mark.parametrize(("compiler", "problem"), [("gcc", "gcc cannot build"), ("clang-18", "clang-18 cannot build")])
def test_tail_call_with_gcc_or_an_older_clang_is_refused(compiler: str, problem: str) -> None:
    refusal = releases.compiler_refusal((3, 14), compiler, (TAIL,))
    assert refusal is not None and refusal.flag == TAIL
    assert refusal.problem.startswith(problem) and "preserve_none" in refusal.problem
    assert "`compiler: clang-19`" in refusal.fix and "configure.ac of 3.14" in refusal.source


def test_tail_call_before_314_is_refused_whatever_the_compiler() -> None:
    refusal = releases.compiler_refusal((3, 13), "clang-19", (TAIL,))
    assert refusal is not None and "3.13's configure has no --with-tail-call-interp" in refusal.problem
    assert '`overrides: {"3.14-*"' in refusal.fix


def test_without_the_flag_or_with_it_turned_off_nothing_is_refused() -> None:
    assert releases.compiler_refusal((3, 13), "gcc", ("--enable-optimizations",)) is None
    assert releases.compiler_refusal((3, 13), "gcc", (f"{TAIL}=no",)) is None
