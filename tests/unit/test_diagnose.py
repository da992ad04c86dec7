"""A failed build's decisive log line: the reason the summary and the report give."""

from __future__ import annotations

from pathlib import Path

from cpforge.diagnose import decisive_line, decisive_line_of

# The shape of a real log: docker's step lines (stamped by cpforge), then the build's own output.
STEPS = """[   0.1s] Step 1/14 : ARG BUILDER_ARCH=amd64
[   0.2s] Step 8/14 : RUN ["/usr/local/sbin/cpforge-install-build-deps", "amd64"]
[cpforge-install-build-deps] cross toolchain amd64 → arm64
 ---> Using cache
[   4.4s] Step 12/14 : RUN ["/usr/local/sbin/cpforge-build", "3.14.7", "--disable-gil"]
[cpforge-build 12:00:01] configure --prefix=/usr/local --build=x86_64-linux-gnu --enable-option-checking=fatal
checking build system type... x86_64-pc-linux-gnu
checking for --enable-experimental-jit... yes
"""


def test_configure_error_is_the_reason() -> None:
    log = STEPS + (
        "configure: error: --enable-experimental-jit cannot be used with --disable-gil.\n"
        "ERROR: The command '/usr/local/sbin/cpforge-build 3.14.7 --disable-gil --enable-experimental-jit=yes' "
        "returned a non-zero code: 1\n"
    )
    assert decisive_line(log) == "configure: error: --enable-experimental-jit cannot be used with --disable-gil."


def test_first_compiler_error_wins_over_later_ones_and_over_make() -> None:
    log = STEPS + (
        "gcc -c -O3 Python/ceval.c -o Python/ceval.o\n"
        "Python/ceval.c:12:5: error: unknown type name 'PyFoo'\n"
        "Python/ceval.c:40:1: error: expected ';' before '}' token\n"
        "make: *** [Makefile:3050: Python/ceval.o] Error 1\n"
    )
    assert decisive_line(log) == "Python/ceval.c:12:5: error: unknown type name 'PyFoo'"


def test_linker_error_apt_error_and_own_script_messages() -> None:
    ld = STEPS + (
        "/usr/bin/ld: cannot find -lbz2: No such file or directory\ncollect2: error: ld returned 1 exit status\n"
    )
    assert decisive_line(ld) == "/usr/bin/ld: cannot find -lbz2: No such file or directory"
    apt = STEPS + "E: Unable to locate package clang-19\n"
    assert decisive_line(apt) == "E: Unable to locate package clang-19"
    own = STEPS + "cpforge-build: Python 3.14.7 has no stdlib extension module _nosuch to build in\n"
    assert decisive_line(own) == "cpforge-build: Python 3.14.7 has no stdlib extension module _nosuch to build in"


def test_informational_lines_are_not_reasons(tmp_path: Path) -> None:
    assert decisive_line(STEPS) is None  # no error in it: the caller keeps docker's own message
    assert decisive_line_of(tmp_path / "missing.log") is None
    colored = "\x1b[31mconfigure: error: no acceptable C compiler found in $PATH\x1b[0m\n"
    log = tmp_path / "x.log"
    log.write_text(STEPS + colored)
    assert decisive_line_of(log) == "configure: error: no acceptable C compiler found in $PATH"
