"""Smoke tests: expectations derived from a BuildSpec, compared with the facts scripts/smoke.py prints.

Nothing here is hard-coded per image: every expected value comes from the spec's typed fields
(version, variant.freethreaded, variant.jit, platform).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import releases
from .engine import EngineAPI
from .matrix import BuildSpec

SMOKE_PATH_IN_CONTAINER = "/tmp/cpforge-smoke.py"


@dataclass(frozen=True)
class Expectation:
    fact: str
    description: str
    accept: Callable[[Any], bool]
    wanted: str

    def check(self, facts: dict[str, Any]) -> str | None:
        value = facts.get(self.fact)
        if self.accept(value):
            return None
        return f"{self.description}: expected {self.wanted}, got {value!r} (fact `{self.fact}`)"


def expectations(spec: BuildSpec) -> list[Expectation]:
    ft = spec.variant.freethreaded
    jit_built = spec.variant.jit != "no"
    exp = [
        Expectation("version", "python version", lambda v: v == spec.version, repr(spec.version)),
        Expectation(
            "version_vv",
            "`python -VV`",
            lambda v: isinstance(v, str) and v.startswith(f"Python {spec.version} "),
            f"'Python {spec.version} …'",
        ),
        Expectation(
            "py_gil_disabled", "sysconfig Py_GIL_DISABLED", lambda v: v == (1 if ft else 0), str(1 if ft else 0)
        ),
        Expectation("gil_enabled", "sys._is_gil_enabled() with PYTHON_GIL unset", lambda v: v is (not ft), str(not ft)),
        Expectation(
            "gil_enabled_after_imports",
            "sys._is_gil_enabled() after importing every extension module shipped (an unsafe one re-enables it)",
            lambda v: v is (not ft),
            str(not ft),
        ),
        Expectation("jit_built", "JIT compiled in", lambda v: v is jit_built, str(jit_built)),
        Expectation("machine", "platform machine", lambda v: v == spec.platform.machine, repr(spec.platform.machine)),
        Expectation(
            "elf_machine",
            "interpreter ELF architecture",
            lambda v: v == spec.platform.machine,
            repr(spec.platform.machine),
        ),
        Expectation("failed_imports", "stdlib extension modules import", lambda v: v == {}, "no failures"),
        Expectation(
            "pip_version", "`python -m pip --version`", lambda v: isinstance(v, str) and bool(v), "a pip version"
        ),
        Expectation("threads_ok", "threaded workload", lambda v: v is True, "True"),
        Expectation("pyc_files", ".pyc files shipped under the prefix", lambda v: v == 0, "0"),
        Expectation("test_dirs", "test directories shipped under the prefix", lambda v: v == [], "none"),
        Expectation("ldd_missing", "shared libraries ldd cannot find", lambda v: v == [], "none"),
        Expectation("llvm_files", "LLVM or clang in the runtime image", lambda v: v == [], "none"),
        Expectation(
            "py_enable_shared",
            "sysconfig Py_ENABLE_SHARED",
            lambda v: v == (1 if spec.profile.shared else 0),
            str(1 if spec.profile.shared else 0),
        ),
    ]
    if spec.profile.shared:
        exp.append(
            Expectation(
                "libpython_files",
                "libpython shared library shipped in the prefix (for embedders)",
                lambda v: isinstance(v, list) and any(f.startswith("/usr/local/lib/libpython") for f in v),
                "['/usr/local/lib/libpython…']",
            )
        )
    if spec.profile.static_interpreter:
        exp.append(Expectation("libpython_mapped", "python runs without loading libpython.so", lambda v: v == [], "[]"))
    elif spec.profile.shared:
        exp.append(
            Expectation(
                "libpython_mapped",
                "libpython loaded from the prefix",
                lambda v: isinstance(v, list) and len(v) == 1 and v[0].startswith("/usr/local/lib/libpython"),
                "['/usr/local/lib/libpython…']",
            )
        )
    if builtin := spec.profile.builtin_modules:
        exp.append(
            Expectation(
                "builtin_module_names",
                "sys.builtin_module_names (the profile's builtin-modules)",
                lambda v: isinstance(v, list) and set(builtin) <= set(v),
                f"all of {', '.join(builtin)}",
            )
        )
        exp.append(
            Expectation(
                "dynload_modules",
                "lib-dynload .so files for the profile's builtin-modules",
                lambda v: isinstance(v, list) and not set(builtin) & set(v),
                "none",
            )
        )
    exp += _jit_expectations(spec)
    exp += [
        Expectation(fact, what, lambda v: v is True, "True")
        for fact, what in releases.features(releases.minor_tuple(spec.minor))
    ]
    return exp


def _jit_expectations(spec: BuildSpec) -> list[Expectation]:
    """A JIT built with `yes` is on by default and runs hot code; PYTHON_JIT=0 turns it off. A
    free-threaded 3.13 builds the JIT but never runs it: no expectation, the facts say what is true."""
    if spec.variant.jit == "yes" and not spec.variant.freethreaded:
        return [
            Expectation("jit_enabled", "JIT enabled by default", lambda v: v is True, "True"),
            Expectation("jit_active", "JIT active inside a hot loop", lambda v: v is True, "True"),
            Expectation("jit_enabled_with_python_jit_0", "JIT off with PYTHON_JIT=0", lambda v: v is False, "False"),
            Expectation(
                "jit_active_with_python_jit_0",
                "JIT inactive in a hot loop with PYTHON_JIT=0",
                lambda v: v is False,
                "False",
            ),
        ]
    if spec.variant.jit == "yes-off":
        return [
            Expectation("jit_enabled", "JIT off until PYTHON_JIT=1", lambda v: v is False, "False"),
            Expectation("jit_active", "JIT inactive until PYTHON_JIT=1", lambda v: v is False, "False"),
        ]
    return []


def inputs_digest(spec: BuildSpec, script: Path) -> str:
    """What a smoke verdict depends on besides the image: the probe and the expectations."""
    h = hashlib.sha256(script.read_bytes())
    h.update(repr([(e.fact, e.description, e.wanted) for e in expectations(spec)]).encode())
    h.update(",".join(spec.smoke_modules).encode())
    return h.hexdigest()


def check(spec: BuildSpec, facts: dict[str, Any]) -> list[str]:
    """Every expectation the facts violate, as a sentence naming the fact."""
    return [p for e in expectations(spec) if (p := e.check(facts)) is not None]


@dataclass(frozen=True)
class SmokeResult:
    facts: dict[str, Any]
    problems: list[str]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.problems


def run(engine: EngineAPI, image: str, spec: BuildSpec, script: Path, log: Path | None = None) -> SmokeResult:
    """Run the probe in ``image`` with no network and compare its facts with the spec."""
    start = time.monotonic()
    result = engine.run(
        image,
        ["python3", "-B", SMOKE_PATH_IN_CONTAINER, "--modules", ",".join(spec.smoke_modules)],
        files={SMOKE_PATH_IN_CONTAINER.lstrip("/"): script.read_bytes()},
        platform=spec.platform.name,
    )
    seconds = time.monotonic() - start
    if log is not None:
        with log.open("a", encoding="utf-8") as f:
            f.write(f"\n=== smoke (exit {result.exit_code}) ===\n{result.stdout}\n{result.stderr}\n")
    if result.exit_code != 0:
        return SmokeResult({}, [f"smoke probe exited {result.exit_code}: {result.stderr.strip()[-800:]}"], seconds)
    try:
        facts = json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return SmokeResult({}, [f"smoke probe printed no JSON: {result.stdout[-400:]!r}"], seconds)
    return SmokeResult(facts, check(spec, facts), seconds)
