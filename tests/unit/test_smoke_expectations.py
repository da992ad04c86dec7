"""Expectations come from the spec, never from the image; every wrong fact is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cpforge import matrix as mx
from cpforge import smoke

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "matrix.yaml").read_text()
SPECS = {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand("quick")}


def facts_for(spec: mx.BuildSpec, **over: Any) -> dict[str, Any]:
    """What a good image of ``spec`` says about itself (as scripts/smoke.py prints it)."""
    ft = spec.variant.freethreaded
    new = spec.minor == "3.14"  # None: the release has no such feature
    base: dict[str, Any] = {
        "version": spec.version,
        "version_vv": f"Python {spec.version} (main, Jun 11 2025) [GCC]",
        "py_gil_disabled": 1 if ft else 0,
        "gil_enabled": not ft,
        "jit_built": spec.variant.jit != "no",
        "jit_enabled": spec.variant.jit == "yes",
        "jit_enabled_with_python_jit_0": False,
        "jit_active": spec.variant.jit == "yes" and not ft,
        "jit_active_with_python_jit_0": False,
        "gil_enabled_after_imports": not ft,
        "subinterpreters_ok": True if new else None,
        "tstring_ok": True if new else None,
        "zstd_ok": True if new else None,
        "machine": spec.platform.machine,
        "elf_machine": spec.platform.machine,
        "failed_imports": {},
        "pip_version": "25.1.1",
        "threads_ok": True,
        "pyc_files": 0,
        "test_dirs": [],
        "ldd_missing": [],
        "llvm_files": [],
        "py_enable_shared": 1 if spec.profile.shared else 0,
        "libpython_mapped": (
            ["/usr/local/lib/libpython3.13.so.1.0"]
            if spec.profile.shared and not spec.profile.static_interpreter
            else []
        ),
        "libpython_files": ["/usr/local/lib/libpython3.13.so", "/usr/local/lib/libpython3.13.so.1.0"],
        "builtin_module_names": sorted({"_abc", "_io", "sys", *spec.profile.builtin_modules}),
        "dynload_modules": sorted({"_ssl", "_sqlite3", "math", "_json"} - set(spec.profile.builtin_modules)),
    }
    base.update(over)
    return base


@pytest.mark.parametrize("entry", sorted(SPECS))
def test_truthful_facts_pass(entry: str) -> None:
    spec = SPECS[entry]
    assert smoke.check(spec, facts_for(spec)) == []


def test_gil_facts_are_checked_both_ways() -> None:
    ft = SPECS["3.13-freethreaded-trixie-amd64"]
    problems = smoke.check(ft, facts_for(ft, gil_enabled=True))
    assert len(problems) == 1 and "sys._is_gil_enabled()" in problems[0] and "gil_enabled" in problems[0]
    default = SPECS["3.13-default-trixie-amd64"]
    assert "Py_GIL_DISABLED" in smoke.check(default, facts_for(default, py_gil_disabled=1))[0]


def test_jit_expectations() -> None:
    jit = SPECS["3.13-jit-trixie-amd64"]
    assert any("JIT compiled in" in p for p in smoke.check(jit, facts_for(jit, jit_built=False)))
    assert any("JIT enabled" in p for p in smoke.check(jit, facts_for(jit, jit_enabled=False)))
    assert any("PYTHON_JIT=0" in p for p in smoke.check(jit, facts_for(jit, jit_enabled_with_python_jit_0=True)))
    # free-threaded + JIT: compiled in, but whether it runs is reported, not assumed
    ftjit = SPECS["3.13-freethreaded-jit-trixie-amd64"]
    assert smoke.check(ftjit, facts_for(ftjit, jit_enabled=False)) == []
    assert smoke.check(ftjit, facts_for(ftjit, jit_built=False)) != []


def test_314_jit_must_be_active_in_a_hot_loop_and_off_with_python_jit_0() -> None:
    jit = SPECS["3.14-jit-trixie-amd64"]
    assert smoke.check(jit, facts_for(jit)) == []
    (problem,) = smoke.check(jit, facts_for(jit, jit_active=False))
    assert "JIT active inside a hot loop" in problem and "`jit_active`" in problem
    (problem,) = smoke.check(jit, facts_for(jit, jit_active_with_python_jit_0=True))
    assert "PYTHON_JIT=0" in problem


@pytest.mark.parametrize(
    ("fact", "words"),
    [
        ("subinterpreters_ok", "PEP 734"),
        ("tstring_ok", "PEP 750"),
        ("zstd_ok", "compression.zstd round-trips"),
    ],
)
def test_314_features_are_proved_and_each_failure_is_named(fact: str, words: str) -> None:
    for entry in ("3.14-default-trixie-amd64", "3.14-freethreaded-trixie-arm64", "3.14-jit-trixie-amd64"):
        spec = SPECS[entry]
        for bad in (False, None):  # failed, or missing from the image
            (problem,) = smoke.check(spec, facts_for(spec, **{fact: bad}))
            assert words in problem and f"`{fact}`" in problem
    old = SPECS["3.13-default-trixie-amd64"]  # 3.13 has none of them: nothing is required
    assert smoke.check(old, facts_for(old, **{fact: None})) == []


def test_an_extension_that_re_enables_the_gil_fails_a_free_threaded_image() -> None:
    for entry in ("3.14-freethreaded-trixie-amd64", "3.13-freethreaded-trixie-amd64"):
        ft = SPECS[entry]
        (problem,) = smoke.check(ft, facts_for(ft, gil_enabled_after_imports=True))
        assert "after importing every extension module" in problem
    default = SPECS["3.14-default-trixie-amd64"]
    assert smoke.check(default, facts_for(default, gil_enabled_after_imports=False))


def test_arch_version_imports_pip() -> None:
    arm = SPECS["3.13-default-trixie-arm64"]
    problems = smoke.check(arm, facts_for(arm, machine="x86_64", elf_machine="x86_64"))
    assert len(problems) == 2
    d = SPECS["3.13-default-trixie-amd64"]
    assert smoke.check(d, facts_for(d, version="3.13.4"))
    assert "ssl" in smoke.check(d, facts_for(d, failed_imports={"ssl": "ImportError"}))[0]
    assert smoke.check(d, facts_for(d, pip_version=None))
    assert smoke.check(d, facts_for(d, pyc_files=3))


def test_required_modules_come_from_the_matrix() -> None:
    assert "dbm.gnu" in SPECS["3.13-default-trixie-amd64"].smoke_modules
    assert "compression.zstd" in SPECS["3.14-default-trixie-amd64"].smoke_modules
    assert "compression.zstd" not in SPECS["3.13-default-trixie-amd64"].smoke_modules


def test_release_profile_ships_libpython_but_runs_a_static_interpreter() -> None:
    spec = {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand("release")}["3.13-default-trixie-amd64"]
    assert spec.profile.shared and spec.profile.static_interpreter
    assert smoke.check(spec, facts_for(spec)) == []
    problems = smoke.check(spec, facts_for(spec, libpython_mapped=["/usr/local/lib/libpython3.13.so.1.0"]))
    assert len(problems) == 1 and "without loading libpython.so" in problems[0]
    problems = smoke.check(spec, facts_for(spec, libpython_files=[]))
    assert len(problems) == 1 and "for embedders" in problems[0]
    static = smoke.check(spec, facts_for(spec, py_enable_shared=0))
    assert any("Py_ENABLE_SHARED" in p for p in static)


def test_a_shared_interpreter_must_load_libpython_from_the_prefix() -> None:
    m = mx.loads(GOOD.replace("    static-interpreter: true ", "    static-interpreter: false "), "m.yaml")
    spec = {s.id: s for s in m.expand("release")}["3.13-default-trixie-amd64"]
    assert spec.profile.shared and not spec.profile.static_interpreter
    assert smoke.check(spec, facts_for(spec)) == []
    problems = smoke.check(spec, facts_for(spec, libpython_mapped=["/opt/elsewhere/libpython3.13.so.1.0"]))
    assert len(problems) == 1 and "libpython loaded from the prefix" in problems[0]
    assert smoke.check(spec, facts_for(spec, libpython_mapped=[]))


def test_missing_libraries_and_llvm_at_run_time_fail() -> None:
    spec = SPECS["3.13-jit-trixie-amd64"]
    problems = smoke.check(
        spec,
        facts_for(spec, ldd_missing=["/usr/local/bin/python3.13: libffi.so.8 => not found"], llvm_files=["/usr/lib/x"]),
    )
    assert len(problems) == 2


def test_builtin_modules_must_be_built_in_and_not_shipped_as_so_files() -> None:
    spec = {s.id: s for s in mx.load(ROOT / "matrix.yaml").expand("release")}["3.13-default-trixie-amd64"]
    assert {"math", "_json"} <= set(spec.profile.builtin_modules)
    assert smoke.check(spec, facts_for(spec)) == []
    (missing,) = smoke.check(spec, facts_for(spec, builtin_module_names=["_abc", "sys"]))
    assert "sys.builtin_module_names" in missing and "fact `builtin_module_names`" in missing
    (shipped,) = smoke.check(spec, facts_for(spec, dynload_modules=["_ssl", "math"]))
    assert "lib-dynload .so files" in shipped
    quick = SPECS["3.13-default-trixie-amd64"]
    assert not quick.profile.builtin_modules
    assert smoke.check(quick, facts_for(quick, builtin_module_names=None, dynload_modules=None)) == []
