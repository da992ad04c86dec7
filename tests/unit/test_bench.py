"""The build benchmark's log parsing and extrapolation (the benchmark itself runs real builds)."""

from __future__ import annotations

from cpforge.bench import Phases, estimate_emulated, parse_phases

NATIVE = """\x1b[0m[cpforge-build 10:00:00] unpacking /usr/src/Python-3.13.5.tar.xz
[cpforge-build 10:00:01] configure --prefix=/usr/local
checking build system type... x86_64-pc-linux-gnu
checking host system type... x86_64-pc-linux-gnu
checking for gcc... gcc
checking whether the C compiler works... yes
[cpforge-build 10:00:21] make -j2
gcc -c -O3 -o Parser/token.o Parser/token.c
gcc -c -O3 -o Parser/pegen.o Parser/pegen.c
gcc -c -O3 -o Parser/parser.o Parser/parser.c
gcc -c -O3 -o Parser/lexer.o Parser/lexer.c
\x1b[0m[cpforge-build 10:02:21] make install DESTDIR=/artifact/root
"""


def test_parse_phases_counts_checks_and_compiles() -> None:
    ph = parse_phases(NATIVE)
    assert ph.configure == 20 and ph.make == 120
    assert ph.checks == 4 and ph.compiles == 4
    assert ph.configure_done and ph.make_done


def test_extrapolate_from_partial_configure() -> None:
    native = parse_phases(NATIVE)
    partial = Phases(checks=1)  # a quarter of configure in 50 s → configure ≈ 200 s, i.e. 10x slower
    est = estimate_emulated(native, partial, cap=50)
    assert est is not None and round(est) == 200 + 1200


def test_extrapolate_from_partial_make() -> None:
    native = parse_phases(NATIVE)
    partial = Phases(configure=100, checks=4, compiles=2, configure_done=True)
    est = estimate_emulated(native, partial, cap=300)  # 2 of 4 compiles in 200 s → make ≈ 400 s
    assert est == 100 + 400
