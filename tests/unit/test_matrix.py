"""matrix.yaml validation and expansion."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cpforge import matrix as mx
from cpforge import render
from cpforge.errors import MatrixError, SelectionError

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "matrix.yaml").read_text()


def load(text: str) -> mx.Matrix:
    return mx.loads(text, "m.yaml")


def test_repository_matrix_expands_to_every_combination() -> None:
    m = mx.load(ROOT / "matrix.yaml")
    quick = m.expand("quick")
    # trixie: every version × variant × platform, but 3.14 refuses freethreaded-jit; bullseye: no JIT
    # variants (no LLVM there)
    assert len(quick) == (4 + 3) * 2 + 2 * 2 * 2
    ids = {s.id for s in quick}
    assert "3.13-freethreaded-trixie-amd64" in ids
    assert "3.13-freethreaded-jit-trixie-arm64" in ids
    assert not {i for i in ids if i.startswith("3.14-freethreaded-jit-")}
    assert m.versions[0].version.startswith("3.14")  # 3.14 first
    assert len(m.expand_all()) == 2 * len(quick)


def test_flags_derive_from_typed_variant_fields() -> None:
    m = mx.load(ROOT / "matrix.yaml")
    by_id = {s.id: s for s in m.expand("release")}
    ft_jit = by_id["3.13-freethreaded-jit-trixie-amd64"]
    release = (
        "--enable-optimizations",
        "--with-lto",
        "--enable-shared",
        "--enable-static-libpython-for-interpreter",
        "CFLAGS_NODIST=-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -fstack-protector-strong "
        "-fstack-clash-protection -D_FORTIFY_SOURCE=3",
        "LDFLAGS_NODIST=-Wl,-z,relro -Wl,-z,now",
    )
    assert ft_jit.configure_flags == ("--disable-gil", "--enable-experimental-jit=yes", *release)
    assert by_id["3.13-default-trixie-amd64"].configure_flags == release
    assert by_id["3.13-default-trixie-amd64"].profile.shared
    assert {s.id: s for s in m.expand("quick")}["3.13-default-trixie-amd64"].configure_flags == ("OPT=-DNDEBUG -O0",)
    assert ft_jit.llvm == 18 and by_id["3.14-jit-trixie-amd64"].llvm == 19
    assert ft_jit.source.filename == "Python-3.13.5.tar.xz"
    assert ft_jit.base_image == "cpforge/debian:trixie-amd64"
    assert by_id["3.14-default-trixie-arm64"].platform.machine == "aarch64"


def test_tags_carry_profile_suffix() -> None:
    m = mx.load(ROOT / "matrix.yaml")
    quick = {s.id: s for s in m.expand("quick")}["3.13-default-trixie-amd64"]
    release = {s.id: s for s in m.expand("release")}["3.13-default-trixie-amd64"]
    assert quick.tags == (
        "cpforge/python:3.13-default-trixie-amd64-quick",
        "cpforge/python:3.13.5-default-trixie-amd64-quick",
    )
    assert release.tags[0] == "cpforge/python:3.13-default-trixie-amd64"


def test_misspelled_top_level_key_names_line_and_suggestion() -> None:
    bad = GOOD.replace("variants:", "varients:")
    with pytest.raises(MatrixError) as err:
        load(bad)
    line = next(i for i, ln in enumerate(bad.splitlines(), 1) if ln.startswith("varients:"))
    assert err.value.line == line
    assert "unknown key `varients`" in str(err.value)
    assert "did you mean `variants`?" in str(err.value)
    assert str(err.value).startswith(f"m.yaml:{line}:")


@pytest.mark.parametrize(
    "flag",
    ["--with-openssl=/usr;rm -rf /", "--enable-foo=$(id)", "--x=`id`", "-O3", "--with lto", "--a='b'", "--a=b|c"],
)
def test_injected_configure_flags_are_refused(flag: str) -> None:
    bad = GOOD.replace(
        "configure: [--enable-optimizations, --with-lto]",
        f"configure: [--enable-optimizations, {flag!r}]".replace("'", '"', 2)
        if "'" not in flag
        else f'configure: [--enable-optimizations, "{flag}"]',
    )
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert "is not a plain `--flag` or `--flag=value`" in str(err.value)
    assert err.value.line is not None


def test_hand_written_derived_flag_is_refused() -> None:
    bad = GOOD.replace("freethreaded: {freethreaded: true}", "freethreaded: {configure: [--disable-gil]}")
    with pytest.raises(MatrixError, match="managed by cpforge"):
        load(bad)


def test_bad_sha_version_and_platform() -> None:
    with pytest.raises(MatrixError, match="sha256"):
        load(re.sub(r"sha256: [0-9a-f]{64}", "sha256: abc", GOOD, count=1))
    with pytest.raises(MatrixError, match=r"version '3\.13' is not valid"):
        load(GOOD.replace('"3.13.5"', '"3.13"'))
    with pytest.raises(MatrixError, match="did you mean `linux/arm64`"):
        load(GOOD.replace("linux/arm64]", "linux/arm46]"))
    with pytest.raises(MatrixError, match="jit must be one of"):
        load(GOOD.replace('jit: {jit: "yes"}', 'jit: {jit: "maybe"}'))


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(MatrixError) as err:
        load(GOOD + "\nplatforms: [linux/amd64\n")
    assert err.value.line is not None and "YAML syntax error" in str(err.value)


def test_missing_required_and_unknown_default() -> None:
    with pytest.raises(MatrixError, match="missing the required key `sha256`"):
        load(GOOD.replace("    sha256: 93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640\n", ""))
    with pytest.raises(MatrixError, match="default entry"):
        load(GOOD.replace("entry: 3.14-default-trixie-amd64", "entry: 3.14-defualt-trixie-amd64"))


def test_missing_file_is_a_matrix_error(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="file not found"):
        mx.load(tmp_path / "nope.yaml")


def test_select_by_glob_and_platform() -> None:
    m = mx.load(ROOT / "matrix.yaml")
    specs = m.expand("quick")
    assert len(mx.select(specs, ["3.13-*-amd64"])) == 4
    assert {s.platform.name for s in mx.select(specs, [], ["linux/arm64"])} == {"linux/arm64"}
    with pytest.raises(SelectionError):
        mx.select(specs, ["3.12-*"])


def test_a_combination_the_release_refuses_is_an_error_naming_line_reason_and_glob() -> None:
    bad = GOOD.replace('  - "3.14-freethreaded-jit-*"', "")
    with pytest.raises(MatrixError) as err:
        load(bad)
    lines = bad.splitlines()
    assert err.value.line == next(i for i, ln in enumerate(lines, 1) if ln.startswith("  freethreaded-jit:"))
    version_line = next(i for i, ln in enumerate(lines, 1) if '- version: "3.14.' in ln)
    msg = str(err.value)
    assert "cannot be built for CPython 3.14." in msg and f"(line {version_line})" in msg
    assert "--enable-experimental-jit cannot be used with --disable-gil" in msg  # CPython's own words
    assert 'fix: add "3.14-freethreaded-jit-*" to `exclude:`' in msg


def test_the_refusal_is_per_release_and_an_exclude_of_only_some_entries_does_not_hide_it() -> None:
    # 3.13 builds freethreaded-jit: no refusal when 3.14 is gone
    only_313 = GOOD.replace('  - "3.14-freethreaded-jit-*"', "")
    start = only_313.index('  - version: "3.14.')
    only_313 = only_313[:start] + only_313[only_313.index('  - version: "3.13.') :]
    only_313 = only_313.replace("entry: 3.14-default-trixie-amd64", "entry: 3.13-default-trixie-amd64")
    only_313 = only_313[: only_313.index("    overrides:")] + only_313[only_313.index("\nexclude:") :]
    assert "3.13-freethreaded-jit-trixie-amd64" in {s.id for s in load(only_313).expand()}
    # excluding only the arm64 entries still leaves an amd64 entry 3.14 refuses
    partial = GOOD.replace('"3.14-freethreaded-jit-*"', '"3.14-freethreaded-jit-*-arm64"')
    with pytest.raises(MatrixError, match=r"cannot be built for CPython 3\.14"):
        load(partial)


def test_trace_refs_with_free_threading_is_refused_by_every_release() -> None:
    traced = "freethreaded: {freethreaded: true, configure: [--with-trace-refs]}"
    bad = GOOD.replace("freethreaded: {freethreaded: true}", traced)
    with pytest.raises(MatrixError, match="--disable-gil cannot be used with --with-trace-refs"):
        load(bad)


def test_llvm_must_be_the_one_the_release_jit_needs() -> None:
    bad = GOOD.replace("llvm: 19", "llvm: 18")
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "llvm: 18" in ln)
    assert "needs LLVM 19, not 18" in str(err.value) and "fix: write `llvm: 19`" in str(err.value)


def test_exclude_removes_entries() -> None:
    m = load(GOOD.replace('  - "*-jit-bullseye-*"', '  - "*-jit-bullseye-*"\n  - "3.14-*-arm64"'))
    assert not [s for s in m.expand() if s.id.startswith("3.14") and s.platform.arch == "arm64"]


@pytest.mark.parametrize(
    "flag", ["-O2 -g", "-D_X=$(id)", "`id`", "O2", "-Wl,-rpath,'$ORIGIN'", "-a;b", "--param=x=$(id)", "--param x=1"]
)
def test_compiler_flags_must_be_single_safe_tokens(flag: str) -> None:
    bad = GOOD.replace("cflags-nodist: [-fstack-protector-strong,", f"cflags-nodist: [{flag!r},".replace("'", '"', 2))
    if bad == GOOD or "'" in flag:
        bad = GOOD.replace("cflags-nodist: [-fstack-protector-strong,", "cflags-nodist: [" + repr(flag) + ",")
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert "is not a single `-flag` token" in str(err.value)
    line = next(i for i, ln in enumerate(bad.splitlines(), 1) if "cflags-nodist:" in ln)
    assert err.value.line == line


def test_gcc_params_are_one_flag_each() -> None:
    param = "--param=hot-bb-count-ws-permille=999"
    m = load(
        GOOD.replace("cflags-nodist: [-fstack-protector-strong,", f"cflags-nodist: [{param}, -fstack-protector-strong,")
    )
    flags = {s.id: s for s in m.expand("release")}["3.13-default-trixie-amd64"].configure_flags
    nodist = next(f for f in flags if f.startswith("CFLAGS_NODIST="))
    assert param in nodist.split("=", 1)[1].split(" ")


def test_enable_shared_is_a_typed_profile_field() -> None:
    bad = GOOD.replace("configure: [--enable-optimizations, --with-lto]", "configure: [--enable-shared]")
    with pytest.raises(MatrixError, match="set `shared: true` on the profile"):
        load(bad)
    with pytest.raises(MatrixError, match="shared must be true or false"):
        load(GOOD.replace("    shared: true ", "    shared: maybe "))


def test_static_interpreter_is_typed_and_needs_shared() -> None:
    bad = GOOD.replace(
        "configure: [--enable-optimizations, --with-lto]", "configure: [--enable-static-libpython-for-interpreter]"
    )
    with pytest.raises(MatrixError, match="set `static-interpreter: true` on the profile"):
        load(bad)
    bad = GOOD.replace("    shared: true ", "    shared: false ")
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert "static-interpreter without shared" in str(err.value)
    assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "static-interpreter:" in ln)
    plain = load(GOOD.replace("    static-interpreter: true ", "    static-interpreter: false "))
    flags = {s.id: s for s in plain.expand("release")}["3.13-default-trixie-amd64"].configure_flags
    assert "--enable-shared" in flags and "--enable-static-libpython-for-interpreter" not in flags


def test_an_x86_isa_level_needs_the_mneeded_marker_and_amd64_only() -> None:
    cflags = "cflags-nodist: [-fstack-protector-strong,"
    ldflags = 'ldflags-nodist: ["-Wl,-z,relro",'
    amd64 = GOOD.replace("platforms: [linux/amd64, linux/arm64]", "platforms: [linux/amd64]")
    assert amd64 != GOOD
    bad = amd64.replace(cflags, "cflags-nodist: [-march=x86-64-v3, -fstack-protector-strong,")
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert "profile `release` builds for x86-64-v3 without -mneeded in cflags-nodist and ldflags-nodist" in str(
        err.value
    )
    assert "CPU ISA level is lower than required" in str(err.value)
    assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "-march=" in ln)
    half = amd64.replace(cflags, "cflags-nodist: [-march=x86-64-v3, -mneeded, -fstack-protector-strong,")
    with pytest.raises(MatrixError) as err:
        load(half)
    assert "without -mneeded in ldflags-nodist" in str(err.value)
    assert "without -mneeded in cflags-nodist" not in str(err.value)
    good = half.replace(ldflags, 'ldflags-nodist: [-mneeded, "-Wl,-z,relro",')
    flags = {s.id: s for s in load(good).expand("release")}["3.13-default-trixie-amd64"].configure_flags
    nodist = {f.split("=", 1)[0]: f.split("=", 1)[1].split(" ") for f in flags if "_NODIST=" in f}
    assert "-march=x86-64-v3" in nodist["CFLAGS_NODIST"] and "-mneeded" in nodist["CFLAGS_NODIST"]
    assert "-mneeded" in nodist["LDFLAGS_NODIST"]
    only_ld = amd64.replace(ldflags, 'ldflags-nodist: [-march=x86-64-v2, "-Wl,-z,relro",')
    with pytest.raises(MatrixError) as err:
        load(only_ld)
    assert "builds for x86-64-v2 without -mneeded" in str(err.value)
    assert err.value.line == next(i for i, ln in enumerate(only_ld.splitlines(), 1) if "-march=" in ln)
    # the baseline is not a level above it: no marker needed
    load(amd64.replace(cflags, "cflags-nodist: [-march=x86-64, -fstack-protector-strong,"))
    # arm64 cannot run (nor compile for) an x86-64 level, marked or not
    with pytest.raises(MatrixError) as err:
        load(good.replace("platforms: [linux/amd64]", "platforms: [linux/amd64, linux/arm64]"))
    assert "profile `release` builds for x86-64-v3, which linux/arm64 cannot run" in str(err.value)


def test_opt_in_distro_is_built_only_when_a_filter_names_it() -> None:
    specs = mx.load(ROOT / "matrix.yaml").expand("quick")
    assert {s.distro.name for s in mx.select(specs)} == {"trixie"}
    assert len(mx.select(specs, ["3.13-*-amd64"])) == 4  # the four trixie variants, as before
    old = mx.select(specs, ["3.13-*-bullseye-amd64"])
    assert [s.id for s in old] == ["3.13-default-bullseye-amd64", "3.13-freethreaded-bullseye-amd64"]
    both = {s.id for s in mx.select(specs, ["3.13-default-*-amd64", "*-bullseye-*"])}
    assert "3.13-default-trixie-amd64" in both and "3.14-freethreaded-bullseye-arm64" in both
    assert not any(s.variant.jit != "no" for s in specs if s.distro.name == "bullseye")


def test_pgo_task_words_are_checked_and_need_pgo() -> None:
    anchor = "    frame-pointers: true"
    line = "    pgo-task: [-m, test, --pgo, --timeout=1200]"
    m = load(GOOD.replace(anchor, line + "\n" + anchor, 1))
    flags = {s.id: s for s in m.expand("release")}["3.13-default-trixie-amd64"].configure_flags
    assert flags[-1] == "PROFILE_TASK=-m test --pgo --timeout=1200"
    bad = GOOD.replace(anchor, "    pgo-task: [-m, test, '$(rm -rf /)']\n" + anchor, 1)
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert "is not a plain argument" in str(err.value)
    assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "pgo-task:" in ln)
    quick = GOOD.replace("    tag-suffix: -quick", "    tag-suffix: -quick\n" + line, 1)
    with pytest.raises(MatrixError, match="pgo-task without --enable-optimizations"):
        load(quick)


def test_builtin_modules_are_checked_names_on_the_profile() -> None:
    anchor = "    tag-suffix: -quick"
    m = load(GOOD.replace(anchor, anchor + "\n    builtin-modules: [math, _json]", 1))
    spec = {s.id: s for s in m.expand("quick")}["3.13-default-trixie-amd64"]
    assert spec.profile.builtin_modules == ("math", "_json")
    assert not any("math" in f for f in spec.configure_flags)  # carried by the build's environment
    for value, problem in (
        ("[math, 'x; rm -rf /']", "'x; rm -rf /' in profile `quick` builtin-modules is not a module name"),
        ("[math, os.path]", "'os.path' in profile `quick` builtin-modules is not a module name"),
        ("[math, _json, math]", "builtin-modules lists math twice"),
        ("math", "must be a list"),
    ):
        bad = GOOD.replace(anchor, f"{anchor}\n    builtin-modules: {value}", 1)
        with pytest.raises(MatrixError) as err:
            load(bad)
        assert problem in str(err.value)
        assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "builtin-modules:" in ln)


def test_each_release_is_built_with_its_own_release_day_as_the_build_date() -> None:
    specs = {s.key: s for s in load(GOOD).expand_all()}
    # 3.13.5 came out on 2025-06-11: its builds keep the epoch its pinned PGO profile and lock were made with.
    assert specs["3.13-default-trixie-amd64@release"].epoch == 1749600000
    newer = load(GOOD.replace("released: 2026-08-05", "released: 2026-10-07")).expand_all()
    assert {s.epoch for s in newer if s.minor == "3.14"} == {1791331200}  # 2026-10-07T00:00:00Z
    assert {s.epoch for s in newer if s.minor == "3.13"} == {1749600000}

    missing = re.sub(r"\n    released: [0-9-]+[^\n]*", "", GOOD, count=1)
    with pytest.raises(MatrixError) as err:
        load(missing)
    assert "a version is missing the required key `released`" in str(err.value)
    assert err.value.line == next(i for i, ln in enumerate(missing.splitlines(), 1) if "version:" in ln)
    bad = GOOD.replace("released: 2025-06-11", "released: June 2025")
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "released: June 2025" in ln)
    assert "released must be a date, not 'June 2025'" in str(err.value)
    assert "YYYY-MM-DD" in str(err.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_build_platform_is_where_the_compilers_run() -> None:
    # the default: linux/amd64 builds amd64 natively and cross-compiles arm64
    by_id = {s.id: s for s in load(GOOD).expand()}
    assert by_id["3.14-default-trixie-amd64"].build_platform.name == "linux/amd64"
    assert not by_id["3.14-default-trixie-amd64"].cross and by_id["3.14-default-trixie-arm64"].cross
    # as the README documents it: a top-level key naming a platform
    plats = "platforms: [linux/amd64, linux/arm64]"
    arm = load(GOOD.replace(plats, f"{plats}\nbuild-platform: linux/arm64"))
    assert arm.build_platform.name == "linux/arm64"
    specs = {s.id: s for s in arm.expand()}
    amd, arm64 = specs["3.14-default-trixie-amd64"], specs["3.14-default-trixie-arm64"]
    assert amd.cross and amd.builder_image == "cpforge/debian:trixie-arm64" and amd.base_image.endswith("-amd64")
    assert not arm64.cross and mx.spec_json(amd)["build_platform"] == "linux/arm64"
    # its value is checked like a platform, naming the line
    for value, problem in (
        ("linux/arm46", "did you mean `linux/arm64`?"),
        ("s390x", "use one of linux/amd64, linux/arm64"),
        ("[linux/amd64]", "build-platform must be a single value, not a list"),
    ):
        bad = GOOD.replace(plats, f"platforms: [linux/amd64]\nbuild-platform: {value}")
        with pytest.raises(MatrixError) as err:
            load(bad)
        assert problem in str(err.value)
        assert err.value.line == line_of(bad, "build-platform:")


@pytest.mark.parametrize(
    "ref",
    [
        "debian:trixie-slim@sha256:" + "0123456789abcdef" * 4,
        "debian@sha256:" + "f" * 64,
        "127.0.0.1:5000/mirror/debian:trixie-slim@sha256:" + "a" * 64,
        "debian:trixie-slim",
    ],
)
def test_a_base_image_may_be_pinned_by_digest(ref: str) -> None:
    m = load(GOOD.replace("pull: debian:trixie-slim ", f"pull: {ref} "))
    assert next(d for d in m.distros if d.name == "trixie").pull == ref


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("debian:trixie-slim@sha256:abc", "has a malformed digest 'sha256:abc'"),
        ("debian@sha256:" + "A" * 64, "has a malformed digest"),
        ("debian@md5:" + "a" * 32, "has a malformed digest 'md5:"),
        ("debian:trixie-slim@", "has a malformed digest ''"),
        ("Debian@sha256:" + "a" * 64, "pull 'Debian@sha256:"),
        ("debian:trixie slim", "is not valid"),
    ],
)
def test_a_malformed_pull_reference_is_refused_with_line_and_hint(ref: str, problem: str) -> None:
    bad = GOOD.replace("pull: debian:trixie-slim ", f"pull: {ref!r} ".replace("'", '"'))
    assert bad != GOOD
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert problem in str(err.value)
    assert err.value.line == line_of(bad, "pull: \"" + ref)
    assert "fix: " in str(err.value) and "@sha256:" in str(err.value)


def test_without_a_default_entry_the_first_entry_is_the_default() -> None:
    m = load(GOOD.replace("  entry: 3.14-default-trixie-amd64", ""))
    assert m.default_entry == sorted(s.id for s in m.expand())[0]
    assert load(GOOD).default_entry == "3.14-default-trixie-amd64"


@pytest.mark.parametrize(
    ("anchor", "added", "problem"),
    [
        ("    llvm: 18\n", "    llvn: 18\n", "unknown key `llvn` in a version"),
        ("  jit: {jit: ", "  jit: {jitt: ", "unknown key `jitt` in variant `jit`"),
        ("    suite: bullseye\n", "    suite: bullseye\n    opt_in: 1\n", "unknown key `opt_in` in distro `bullseye`"),
        ("    tag-suffix: -quick\n", "    tag-suffix: -quick\n    tag_suffix: -q\n", "unknown key `tag_suffix`"),
        ("  cache: sources\n", "  cache: sources\n  mirror: /x\n", "unknown key `mirror` in sources"),
        ("  modules: [ssl,", "  module: [ssl,", "unknown key `module` in smoke"),
        ("  profile: quick\n", "  profile: quick\n  entries: []\n", "unknown key `entries` in default"),
        ("issuer: \"https://accounts", "isuser: \"https://accounts", "unknown key `isuser` in signer"),
    ],
)
def test_an_unknown_key_anywhere_names_its_line_and_the_closest_key(anchor: str, added: str, problem: str) -> None:
    bad = GOOD.replace(anchor, added, 1)
    assert bad != GOOD
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert problem in str(err.value) and "fix: did you mean `" in str(err.value)
    key = problem.split("`")[1]
    assert err.value.line == line_of(bad, key + ":")


def test_an_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    bad = GOOD + "\nzzz: 1\n"
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert f"allowed keys: {', '.join(k.name for k in mx.TOP_KEYS)}" in str(err.value)
    assert "build-platform" in str(err.value)


@pytest.mark.parametrize("section", ["distros", "profiles", "variants"])
def test_a_name_defined_twice_is_refused(section: str) -> None:
    twice = {
        "distros": ("  bullseye:   ", "  trixie:   "),
        "profiles": ("  release:   ", "  quick:   "),
        "variants": ("  freethreaded-jit: {", "  freethreaded: {"),
    }[section]
    bad = GOOD.replace(*twice, 1)
    assert bad != GOOD
    with pytest.raises(MatrixError) as err:
        load(bad)
    noun = section[:-1]
    assert f"{noun} `{twice[1].strip(' :{')}` is defined twice" in str(err.value)
    lines = bad.splitlines()
    assert err.value.line == max(i for i, ln in enumerate(lines, 1) if ln.startswith(twice[1]))


@pytest.mark.parametrize(("section", "value"), [("variants", "{}"), ("distros", "{}"), ("profiles", "{}")])
def test_an_empty_section_is_refused(section: str, value: str) -> None:
    start = GOOD.index(f"\n{section}:") + 1
    end = GOOD.index("\n\n", start)
    bad = GOOD[:start] + f"{section}: {value}" + GOOD[end:]
    with pytest.raises(MatrixError, match=f"{section} is empty"):
        load(bad)


def test_build_platform_reaches_the_cli_and_the_dockerfile(tmp_path: Path) -> None:
    """The README's `build-platform:` through the real front door and the real templates."""
    plats = "platforms: [linux/amd64, linux/arm64]"
    path = tmp_path / "matrix.yaml"
    path.write_text(GOOD.replace(plats, f"{plats}\nbuild-platform: linux/arm64"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "matrix", "--json", "--matrix-file", str(path), "--filter", "3.14-default-*"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    entries = {e["id"]: e for e in json.loads(proc.stdout)["include"]}
    assert entries["3.14-default-trixie-amd64"]["build_platform"] == "linux/arm64"
    assert entries["3.14-default-trixie-amd64"]["cross"] and not entries["3.14-default-trixie-arm64"]["cross"]

    spec = next(s for s in mx.load(path).expand() if s.id == "3.14-default-trixie-amd64")
    text = render.Renderer(ROOT / "templates").dockerfile(spec)
    assert "ARG BUILDER_ARCH=arm64\n" in text and "on linux/arm64 (cross-compiling for amd64)" in text
    assert "FROM cpforge/debian:trixie-amd64 AS runtime" in text  # the runtime image is the target's


# -- a profile's compiler, and overrides per entry glob --------------------------------------

OVERRIDE = GOOD[GOOD.index("    overrides:") : GOOD.index("\nexclude:")]


def release_of(text: str = GOOD) -> dict[str, mx.BuildSpec]:
    return {s.id: s for s in load(text).expand("release")}


def test_the_314_release_builds_with_clang_the_tail_call_interpreter_pgo_lto_hardening_and_frame_pointers() -> None:
    r = release_of()["3.14-default-trixie-amd64"]
    assert r.profile.name == "release" and r.profile.compiler == "clang-19" and r.profile.clang == 19
    assert r.profile.overrides == ()  # the effective profile: the override applied, nothing left to apply
    assert r.configure_flags == (
        "--enable-optimizations",
        "--with-lto",
        "--with-tail-call-interp",
        "--enable-shared",
        "--enable-static-libpython-for-interpreter",
        "CC=clang-19",
        "CXX=clang++-19",
        "LLVM_AR=/usr/lib/llvm-19/bin/llvm-ar",  # configure looks on PATH; Debian has them in llvm-19/bin
        "LLVM_PROFDATA=/usr/lib/llvm-19/bin/llvm-profdata",
        "CFLAGS_NODIST=-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -fstack-protector-strong "
        "-fstack-clash-protection -D_FORTIFY_SOURCE=3",
        "LDFLAGS_NODIST=-Wl,-z,relro -Wl,-z,now",
    )
    # what the override does not give is the profile's own: built-in modules, tag suffix, shared
    base = load(GOOD).profile("release")
    assert r.profile.builtin_modules == base.builtin_modules and r.profile.tag_suffix == base.tag_suffix
    assert r.tags[0] == "cpforge/python:3.14-default-trixie-amd64"
    assert mx.spec_json(r)["compiler"] == "clang-19"


def test_313_keeps_its_gcc_release_profile_and_its_pinned_pgo_profile() -> None:
    specs = {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand("release")}
    r313 = specs["3.13-default-trixie-amd64"]
    assert r313.profile.overrides == ()
    assert r313.profile.compiler == "gcc" and r313.profile.compiler_flags() == ()
    assert not any(f.startswith(("CC=", "CXX=", "LLVM_")) or "tail-call" in f for f in r313.configure_flags)
    # the committed profile is still the one its builds use: its config hash did not change
    assert r313.pgo_profile == "pgo/3.13-default-trixie-amd64.release.caf1a4aaf62a.tar.xz"
    assert (ROOT / r313.pgo_profile).exists()
    # ... and every 3.13 entry, and bullseye's 3.14 (no clang-19 there), builds as the profile says
    without = {s.id: s for s in mx.loads(GOOD.replace(OVERRIDE, ""), str(ROOT / "matrix.yaml")).expand("release")}
    for eid, spec in specs.items():
        if not eid.startswith("3.14-") or "-bullseye-" in eid:
            assert spec.profile == without[eid].profile and spec.pgo_config == without[eid].pgo_config, eid
        else:
            assert spec.profile.compiler == "clang-19", eid


def test_the_first_matching_override_wins_and_each_key_replaces_the_profiles_own() -> None:
    two = OVERRIDE.replace(
        '      "3.14-*-trixie-*":',
        '      "3.14-jit-trixie-amd64":\n        frame-pointers: false\n      "3.14-*-trixie-*":',
    )
    specs = release_of(GOOD.replace(OVERRIDE, two))
    jit, default = specs["3.14-jit-trixie-amd64"], specs["3.14-default-trixie-amd64"]
    assert not jit.profile.frame_pointers and jit.profile.compiler == "gcc"  # only its own override applies
    assert "--with-tail-call-interp" not in jit.configure_flags
    assert default.profile.frame_pointers and default.profile.compiler == "clang-19"


@pytest.mark.parametrize(
    ("old", "new", "problem", "fix"),
    [
        ("compiler: clang-19 ", "compiler: clang ", "compiler 'clang' is neither gcc nor clang-N", "on trixie"),
        ("compiler: clang-19 ", "compiler: icc ", "compiler 'icc' is neither gcc nor clang-N", "write `gcc`"),
        ('"3.14-*-trixie-*":', '"3.14-*-trixy-*":', '"3.14-*-trixy-*", which matches no entry', "invoke matrix"),
        ('"3.14-*-trixie-*":', '"3.14 trixie":', "entry glob in profile `release` overrides '3.14 trixie'", "quoted"),
        ("compiler: clang-19 ", "tag-suffix: -x\n        compiler: clang-19 ", "unknown key `tag-suffix`", "allowed"),
        (
            "        compiler: clang-19 ",
            "        static-interpreter: true\n        shared: false\n        compiler: clang-19 ",
            'profile `release` for "3.14-*-trixie-*" sets static-interpreter without shared',
            "static-interpreter only applies",
        ),
    ],
)
def test_a_bad_compiler_or_override_names_its_line_and_the_fix(old: str, new: str, problem: str, fix: str) -> None:
    bad = GOOD.replace(old, new, 1)
    assert bad != GOOD
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert problem in str(err.value) and fix in str(err.value).split("fix:", 1)[1]
    assert err.value.line is not None
    line = bad.splitlines()[err.value.line - 1]
    assert new.split("\n")[0].strip()[:8] in line or new.split("\n")[-1].strip()[:8] in line, line


def test_an_override_an_earlier_glob_always_takes_first_is_refused() -> None:
    shadowed = OVERRIDE + '      "3.14-default-trixie-*":\n        compiler: gcc\n'
    with pytest.raises(MatrixError) as err:
        load(GOOD.replace(OVERRIDE, shadowed))
    assert 'overrides "3.14-default-trixie-*", which an earlier glob of it takes first' in str(err.value)


def line_after(text: str, needle: str, after: str = "") -> int:
    """The line number of the first line holding ``needle`` at or after the first ``after``."""
    start = text.index(after) if after else 0
    return text[:start].count("\n") + line_of(text[start:], needle)


def test_tail_call_before_314_is_refused_at_load_naming_the_line_and_the_fix() -> None:
    everywhere = GOOD.replace(
        "    configure: [--enable-optimizations, --with-lto]\n",
        "    configure: [--enable-optimizations, --with-lto, --with-tail-call-interp]\n    compiler: clang-19\n",
    )
    with pytest.raises(MatrixError) as err:
        load(everywhere)
    msg = str(err.value)
    assert "profile `release` builds 3.13-default-trixie-amd64 (CPython 3.13.5) with --with-tail-call-interp" in msg
    assert "CPython 3.13's configure has no --with-tail-call-interp" in msg and "arrived in 3.14" in msg
    assert "fix: give the flag to 3.14 and later only: set it in an override of the profile" in msg
    assert '`overrides: {"3.14-*": {configure: [..., --with-tail-call-interp]}}`' in msg
    assert err.value.line == line_after(everywhere, "--with-tail-call-interp]")


@pytest.mark.parametrize("compiler", ["gcc", "clang-18"])
def test_tail_call_with_a_compiler_that_cannot_build_it_is_refused_at_load(compiler: str) -> None:
    bad = GOOD.replace("compiler: clang-19 ", f"compiler: {compiler} ")
    with pytest.raises(MatrixError) as err:
        load(bad)
    msg = str(err.value)
    assert f"builds 3.14-default-trixie-amd64 (CPython 3.14.7) with --with-tail-call-interp and {compiler}" in msg
    assert f"{compiler} cannot build the tail-call interpreter" in msg and "preserve_none" in msg
    assert "fix: build 3.14 with `compiler: clang-19`" in msg
    assert err.value.line == line_after(bad, "--with-tail-call-interp]", after="    overrides:")


def test_tail_call_in_a_variant_is_checked_against_each_profiles_compiler() -> None:
    # the release profile builds 3.14 on trixie with clang-19; quick builds it with gcc: refused there
    bad = GOOD.replace("  default: {}", "  default: {configure: [--with-tail-call-interp]}")
    with pytest.raises(MatrixError) as err:
        load(bad)
    assert "variant `default` (in profile `quick`) builds 3.14-default-trixie-amd64 (CPython 3.14.7) with " in (
        str(err.value)
    )
    assert "and gcc: gcc cannot build the tail-call interpreter" in str(err.value)
    assert err.value.line == line_of(bad, "  default: {configure")
    # "=no" turns it off: nothing to refuse
    assert load(GOOD.replace("  default: {}", "  default: {configure: [--with-tail-call-interp=no]}"))


def test_optimize_false_compiles_at_o0_and_refuses_pgo_or_lto() -> None:
    m = load(GOOD)
    quick = {s.id: s for s in m.expand("quick")}["3.14-default-trixie-amd64"]
    release = {s.id: s for s in m.expand("release")}["3.14-default-trixie-amd64"]
    assert not quick.profile.optimize and "OPT=-DNDEBUG -O0" in quick.configure_flags
    assert release.profile.optimize and not any(f.startswith("OPT=") for f in release.configure_flags)
    anchor = "    optimize: false"
    bad = GOOD.replace(anchor, anchor + "\n    configure: [--with-lto]", 1)
    with pytest.raises(MatrixError, match="optimize: false with --enable-optimizations or --with-lto") as err:
        load(bad)
    assert err.value.line == next(i for i, ln in enumerate(bad.splitlines(), 1) if "optimize: false" in ln)
    with pytest.raises(MatrixError, match="optimize"):
        load(GOOD.replace(anchor, "    optimize: sometimes", 1))
