"""cpforge smoke probe: runs *inside* an image (no network) and prints facts as one JSON object.

It states facts; it does not judge them. The host compares them with what the matrix entry
requires (cpforge/smoke.py). Plain standard library only: no cpforge import.

Usage: python3 -B smoke.py [--modules a,b,c]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

# Facts that need a pristine interpreter come first: importing an extension that is not marked
# free-threading-safe re-enables the GIL, so nothing but sys/sysconfig/os is imported before this.
GIL_ENABLED = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else None  # type: ignore[attr-defined]
PY_GIL_DISABLED = sysconfig.get_config_var("Py_GIL_DISABLED")

JIT_PROBE = r"""
import json, sys, sysconfig
facts = {}
jit = getattr(sys, "_jit", None)
if jit is not None:                      # 3.14+
    facts["jit_built"] = bool(jit.is_available())
    facts["jit_enabled"] = bool(jit.is_enabled())
    facts["jit_evidence"] = "sys._jit"
else:                                     # 3.13
    facts["jit_built"] = "_Py_JIT" in (sysconfig.get_config_var("PY_CORE_CFLAGS") or "")
    facts["jit_enabled"] = None
    facts["jit_evidence"] = "PY_CORE_CFLAGS"

def hot():
    total = 0
    for i in range(60000):
        total += i % 7
    return total
for _ in range(3):
    hot()

executors = 0
try:
    import _opcode
    code = hot.__code__
    for offset in range(0, len(code.co_code), 2):
        try:
            _opcode.get_executor(code, offset)
            executors += 1
        except (ValueError, RuntimeError, TypeError):
            pass
except (ImportError, AttributeError):
    executors = None

active = []
if jit is not None:
    # is_active() on the hot path itself: a call in a rarely taken branch runs after a side exit,
    # in the interpreter, and says False even when the loop is JIT code.
    def hot_active():
        for _ in range(60000):
            if jit.is_active():
                return True
        return False
    for _ in range(3):
        active.append(hot_active())
facts["tier2_executors"] = executors
if jit is not None:
    facts["jit_active"] = any(active)  # sys._jit.is_active() read inside the hot loop
else:
    facts["jit_active"] = bool(facts["jit_built"] and executors)
    facts["jit_enabled"] = bool(facts["jit_built"] and executors)
print(json.dumps(facts))
"""

# Imports every extension module, then reads the GIL state: a free-threaded interpreter re-enables
# the GIL when it imports an extension that is not marked free-threading-safe.
IMPORT_PROBE = r"""
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - report everything
        failed[name] = f"{type(exc).__name__}: {exc}"
gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else None
print(json.dumps({"failed": failed, "gil_enabled": gil}))
"""

# Features new in 3.14, each run for real; the source parses on 3.13 too (a t-string is compiled from
# a string), and each fact is None where the release has no such feature.
FEATURE_PROBE = r"""
import json, sys
facts = {}

def fact(name, fn):
    try:
        facts[name] = fn()
    except ImportError:
        facts[name] = None
    except BaseException as exc:  # noqa: BLE001 - report everything
        facts[name] = False
        facts[name + "_error"] = f"{type(exc).__name__}: {exc}"

def subinterpreter():  # PEP 734
    from concurrent import interpreters
    interp = interpreters.create()
    try:
        interp.exec("import math; assert math.factorial(5) == 120")  # raises ExecutionFailed otherwise
        result = interp.call(pow, 2, 10)
    finally:
        interp.close()
    return result == 1024 and interp.id not in {i.id for i in interpreters.list_all()}

def tstring():  # PEP 750
    if sys.version_info < (3, 14):
        return None
    from string.templatelib import Template
    value = eval(compile('t"cpforge {6 * 7}"', "<smoke>", "eval"))
    return isinstance(value, Template) and value.strings == ("cpforge ", "") and value.values == (42,)

def zstd():
    from compression import zstd
    data = b"cpforge smoke " * 4096
    packed = zstd.compress(data)
    return zstd.decompress(packed) == data and len(packed) < len(data) // 10

fact("subinterpreters_ok", subinterpreter)
fact("tstring_ok", tstring)
fact("zstd_ok", zstd)
print(json.dumps(facts))
"""

THREAD_PROBE = r"""
import json, threading
results = [0] * 8
def work(k):
    results[k] = sum(i * i for i in range(50000 + k))
threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
expected = [sum(i * i for i in range(50000 + k)) for k in range(8)]
print(json.dumps(results == expected))
"""


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


def elf_linked(path: str) -> bool:
    """An executable or shared object (not a relocatable .o, which ldd cannot inspect)."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:4] != b"\x7fELF" or len(head) < 18:
        return False
    return int.from_bytes(head[16:18], "little" if head[5] == 1 else "big") in (2, 3)  # ET_EXEC, ET_DYN


def elf_machine(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    little = head[5] == 1
    code = int.from_bytes(head[18:20], "little" if little else "big")
    return {0x3E: "x86_64", 0xB7: "aarch64", 0x03: "i386", 0x28: "arm"}.get(code, hex(code))


def extension_modules() -> list[str]:
    dynload = os.path.join(sysconfig.get_path("platstdlib"), "lib-dynload")
    names = set()
    if os.path.isdir(dynload):
        for fn in os.listdir(dynload):
            if fn.endswith(".so"):
                names.add(fn.split(".", 1)[0])
    return sorted(names)


def walk_prefix() -> tuple[list[str], dict[str, object]]:
    """The ELF files under the prefix, and the .pyc files and test directories shipped there."""
    pyc = 0
    test_dirs: list[str] = []
    elves: list[str] = []
    for root, dirs, files in os.walk(sys.prefix):
        pyc += sum(1 for f in files if f.endswith((".pyc", ".pyo")))
        test_dirs += [os.path.join(root, d) for d in dirs if d in ("test", "tests", "idle_test")]
        for f in files:
            path = os.path.join(root, f)
            if not os.path.islink(path) and elf_linked(path):
                elves.append(path)
    return sorted(elves), {"pyc_files": pyc, "test_dirs": sorted(test_dirs)[:20]}


def judge(results: dict[str, tuple[int, str, str]]) -> dict[str, object]:
    """The facts the probes' output states (each probe: exit code, stdout, stderr)."""
    facts: dict[str, object] = {}
    rc, out, err = results["vv"]
    facts["version_vv"] = out if rc == 0 else f"error: {err}"
    rc, out, err = results["jit"]
    if rc == 0:
        facts.update(json.loads(out))
    else:
        facts["jit_error"] = err[-2000:]
    rc, out, err = results["jit_off"]
    off = json.loads(out) if rc == 0 else {}
    facts["jit_enabled_with_python_jit_0"] = off.get("jit_enabled")
    facts["jit_active_with_python_jit_0"] = off.get("jit_active")
    rc, out, err = results["features"]
    if rc == 0:
        facts.update(json.loads(out))
    else:
        facts["features_error"] = err[-2000:]
    rc, out, err = results["imports"]
    imported = json.loads(out) if rc == 0 else {"failed": {"<probe>": err[-2000:]}, "gil_enabled": None}
    facts["failed_imports"] = imported["failed"]
    facts["gil_enabled_after_imports"] = imported["gil_enabled"]
    rc, out, err = results["pip"]
    facts["pip_version"] = out.split()[1] if rc == 0 and out.startswith("pip ") else None
    rc, out, err = results["threads"]
    facts["threads_ok"] = rc == 0 and out == "true"
    rc, out, err = results["openssl"]
    facts["openssl"] = out if rc == 0 else None
    facts["ldd_missing"] = ldd_missing([results[k] for k in sorted(results) if k.startswith("ldd")])
    return facts


def ldd_missing(runs: list[tuple[int, str, str]]) -> list[str]:
    """`file: lib => not found` for every library ldd could not resolve (or why ldd failed)."""
    missing: list[str] = []
    for rc, out, err in runs:
        current = ""
        found = []
        for line in out.splitlines():
            if line.endswith(":") and not line.startswith(("\t", " ")):
                current = line[:-1]
            elif "not found" in line:
                found.append(f"{current}: {line.strip()}")
        if rc != 0 and not found:
            return [f"ldd failed: {err[-500:]}"]
        missing += found
    return missing[:20]


def main() -> None:
    import platform
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    required: list[str] = []
    if "--modules" in sys.argv:
        required = [m for m in sys.argv[sys.argv.index("--modules") + 1].split(",") if m]

    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHON_GIL", "PYTHON_JIT")}
    # Bytecode goes to a cache outside the prefix (never a .pyc the walk below counts), shared by the
    # probes: each module is compiled once, not once per probe (under QEMU that is most of the time).
    clean_env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="cpforge-smoke-pycache-")
    clean_env.pop("PYTHONDONTWRITEBYTECODE", None)
    exe = sys.executable
    facts: dict[str, object] = {
        "version": platform.python_version(),
        "sys_version": sys.version,
        "executable": exe,
        "prefix": sys.prefix,
        "abiflags": getattr(sys, "abiflags", ""),
        "soabi": sysconfig.get_config_var("SOABI"),
        "py_gil_disabled": PY_GIL_DISABLED,
        "gil_enabled": GIL_ENABLED,
        "python_gil_env": os.environ.get("PYTHON_GIL"),
        "machine": os.uname().machine,
        "elf_machine": elf_machine(os.path.realpath(exe)),
    }
    dynload = extension_modules()
    facts["builtin_module_names"] = sorted(sys.builtin_module_names)
    facts["dynload_modules"] = dynload
    modules = sorted(set(dynload) | set(required))
    facts["extension_modules"] = len(modules)
    elves, walked = walk_prefix()
    facts.update(walked)
    facts["elf_files"] = len(elves)

    # The probes are independent processes: run them side by side, one per CPU.
    probes = {
        "vv": ([exe, "-VV"], clean_env),
        "jit": ([exe, "-c", JIT_PROBE], clean_env),
        "jit_off": ([exe, "-c", JIT_PROBE], {**clean_env, "PYTHON_JIT": "0"}),
        "features": ([exe, "-W", "error", "-c", FEATURE_PROBE], clean_env),  # an unclosed interpreter warns
        "imports": ([exe, "-c", IMPORT_PROBE, *modules], clean_env),
        "pip": ([exe, "-m", "pip", "--version"], clean_env),
        "threads": ([exe, "-c", THREAD_PROBE], clean_env),
        "openssl": ([exe, "-c", "import ssl; print(ssl.OPENSSL_VERSION)"], clean_env),
    }
    half = (len(elves) + 1) // 2  # ldd in two halves: every ELF file's libraries resolve
    for i, chunk in enumerate((elves[:half], elves[half:])):
        if chunk:
            probes[f"ldd{i}"] = (["ldd", *chunk], clean_env)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        done = {name: pool.submit(run, args, env) for name, (args, env) in probes.items()}
        results = {name: fut.result() for name, fut in done.items()}
    facts.update(judge(results))
    facts["py_enable_shared"] = sysconfig.get_config_var("Py_ENABLE_SHARED")
    libdir = sysconfig.get_config_var("LIBDIR") or "/usr/local/lib"
    facts["libpython_files"] = sorted(
        os.path.join(libdir, f) for f in os.listdir(libdir) if f.startswith("libpython") and ".so" in f
    )
    with open("/proc/self/maps") as maps:
        facts["libpython_mapped"] = sorted({ln.split()[-1] for ln in maps if "libpython" in ln and "/" in ln})
    # No compiler toolchain at run time: the JIT's stencils were baked in at build time.
    facts["llvm_files"] = sorted(
        os.path.join(d, f)
        for d in ("/usr/lib", f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or ''}", "/usr/bin")
        if os.path.isdir(d)
        for f in os.listdir(d)
        if f.startswith(("libLLVM", "libclang", "clang", "llvm-"))
    )
    print(json.dumps(facts, sort_keys=True))


if __name__ == "__main__":
    main()
