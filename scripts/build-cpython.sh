#!/bin/bash
# Builds one CPython from a verified source tarball inside a cpforge builder container and
# leaves a deterministic artifact in /artifact:
#   /artifact/root/usr/local/...         the slimmed install prefix (no tests, no .pyc, no libpython*.a)
#   /artifact/cpython.tar                that tree as a sorted, mtime-clamped, uid-0 tarball
#   /artifact/cpython.tar.sha256         its checksum
#   /artifact/runtime-packages.txt       Debian packages owning every shared library the binaries need
#                                        (also shipped as /usr/local/share/cpforge/runtime-packages.txt)
#   /artifact/runtime-debs.txt           the exact .deb files (with dependencies) those resolve to on
#                                        the mirror: "PACKAGE[:ARCH] URI SHA256" per line (also shipped
#                                        as /usr/local/share/cpforge/runtime-debs.txt: the runtime stage
#                                        installs from it)
#   /artifact/pgo-profile.tar.xz         PGO builds: the profile the build used (see CPFORGE_PGO_PROFILE):
#                                        GCC's .gcda files, or clang's merged code.profclangd
#
# Usage: cpforge-build VERSION [CONFIGURE_FLAG ...]
# Environment: SOURCE_DATE_EPOCH (required); CPFORGE_TARGET_ARCH (Debian architecture to build for;
# default: this container's). When it differs from the container's, the build cross-compiles with the
# toolchain cpforge-install-build-deps installed. CPFORGE_PGO_PROFILE: a pinned PGO profile to reuse
# when that file exists (PGO builds only). CPFORGE_BUILTIN_MODULES: stdlib extension modules (import
# names, space-separated) to link into libpython, and so into a static interpreter, instead of
# building them as .so files.
# The compiler is configure's: gcc, or clang-N when CC=clang-N is among the flags (a profile's
# `compiler:`; cross builds add --target). A clang build's sysconfig names gcc instead (see below).
# Runs without cpforge: plain bash, no host access. Arguments arrive through exec form, never a shell.
set -euo pipefail

version=${1:?usage: cpforge-build VERSION [CONFIGURE_FLAG ...]}
shift
: "${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set for a reproducible build}"
export SOURCE_DATE_EPOCH PYTHONHASHSEED=0 LC_ALL=C.UTF-8 TZ=UTC

minor=${version%.*}
src=/usr/src/Python-${version}.tar.xz
workdir=/build                       # one fixed build path: it leaks into sysconfig data
dest=/artifact/root
prefix=/usr/local
build_triplet=$(dpkg-architecture -qDEB_BUILD_MULTIARCH)
target_arch=${CPFORGE_TARGET_ARCH:-$(dpkg --print-architecture)}
host_triplet=$(dpkg-architecture -a"$target_arch" -qDEB_HOST_MULTIARCH 2>/dev/null)

log() { printf '[cpforge-build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# A clang-built interpreter's sysconfig names gcc, the system compiler users install (build-essential),
# not clang-N: extension builds (setuptools, pip, python3-config users) run sysconfig's CC, CXX,
# LDSHARED, LDCXXSHARED, CPP and AR, which would otherwise name a compiler the image lacks. Only those
# change: CONFIG_ARGS, PY_CORE_CFLAGS and the *_NODIST flags keep saying how CPython itself was built,
# and configure puts every clang-only flag (LTO's -flto=thin, PGO's) in the *_NODIST variables that
# extension builds do not inherit. check_extension_build proves it with gcc.
EXTENSION_VARS="CC|CXX|LDSHARED|LDCXXSHARED|CPP|AR"
sysconfig_for_gcc() {
    local n=${1#clang-} lib
    lib=$(ls -d "$root"/lib/python"${minor}"* | head -1)     # lib/python3.14, or lib/python3.14t
    local cc="clang-${n}( --target=[^ '\"]*)?" cxx="clang\+\+-${n}( --target=[^ '\"]*)?"
    local ar="/usr/lib/llvm-${n}/bin/llvm-ar" f
    for f in "$lib"/_sysconfigdata_*.py; do     # '    'CC': 'clang-19',' (Lib/sysconfig/__main__.py)
        [ -e "$f" ] || continue
        sed -E -i -e "s#^(    '(${EXTENSION_VARS})': ')${cc}([ ']|\$)#\1gcc\4#" \
                  -e "s#^(    '(${EXTENSION_VARS})': ')${cxx}([ ']|\$)#\1g++\4#" \
                  -e "s#^(    'AR': ')${ar}'#\1ar'#" "$f"
    done
    for f in "$lib"/_sysconfig_vars_*.json; do   # '  "CC": "clang-19",'
        [ -e "$f" ] || continue
        sed -E -i -e "s#^(  \"(${EXTENSION_VARS})\": \")${cc}([ \"]|\$)#\1gcc\4#" \
                  -e "s#^(  \"(${EXTENSION_VARS})\": \")${cxx}([ \"]|\$)#\1g++\4#" \
                  -e "s#^(  \"AR\": \")${ar}\"#\1ar\"#" "$f"
    done
    for f in "$lib"/config-"${minor}"*/Makefile; do   # 'CC=		clang-19'
        [ -e "$f" ] || continue
        sed -E -i -e "s#^((${EXTENSION_VARS})=[[:space:]]*)${cc}([[:space:]]|\$)#\1gcc\4#" \
                  -e "s#^((${EXTENSION_VARS})=[[:space:]]*)${cxx}([[:space:]]|\$)#\1g++\4#" \
                  -e "s#^(AR=[[:space:]]*)${ar}\$#\1ar#" "$f"
    done
    local left
    left=$(grep -h -E "^    '(${EXTENSION_VARS})': '([^']*/)?(clang|llvm)" "$lib"/_sysconfigdata_*.py || true)
    if [ -n "$left" ]; then
        echo "cpforge-build: sysconfig still names clang/LLVM for extension builds: ${left}" >&2
        exit 1
    fi
    log "sysconfig: extension builds use gcc (was ${1}): $(grep -h -E "^    '(CC|LDSHARED|AR)': " "$lib"/_sysconfigdata_*.py | tr -s ' ' | tr '\n' ' ')"
}

# Builds a C extension with the installed interpreter's sysconfig exactly as setuptools composes the
# commands (CC CFLAGS CCSHARED -c, then LDSHARED), here in the builder, which has gcc, and imports it.
check_extension_build() {
    local tmp=/tmp/cpforge-ext
    rm -rf "$tmp" && mkdir -p "$tmp"
    cat > "$tmp/ext.c" <<'C'
#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long x, y;
    if (!PyArg_ParseTuple(args, "ll", &x, &y)) return NULL;
    return PyLong_FromLong(x + y);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "cpforge_ext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_cpforge_ext(void) { return PyModule_Create(&def); }
C
    # -I -B: no environment, no site, no .pyc written into the tree being packed.
    "$root/bin/$exe" -I -B - "$tmp" <<'PY'
import shlex, subprocess, sys, sysconfig
tmp = sys.argv[1]
var = lambda name: shlex.split(sysconfig.get_config_var(name) or "")
obj, ext = f"{tmp}/ext.o", f"{tmp}/cpforge_ext{sysconfig.get_config_var('EXT_SUFFIX')}"
include = sysconfig.get_paths()["include"]
for cmd in ([*var("CC"), *var("CFLAGS"), *var("CCSHARED"), f"-I{include}", "-c", f"{tmp}/ext.c", "-o", obj],
            [*var("LDSHARED"), obj, "-o", ext]):
    print("[cpforge-build] +", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
sys.path.insert(0, tmp)
import cpforge_ext
assert cpforge_ext.add(40, 2) == 42
print("[cpforge-build] sysconfig builds and imports a C extension with", var("CC")[0], flush=True)
PY
    rm -rf "$tmp"
}

log "unpacking ${src}"
rm -rf "$workdir" /artifact
mkdir -p "$workdir" "$dest"
tar -xf "$src" -C "$workdir"
cd "$workdir/Python-${version}"

configure=(--prefix="$prefix" --build="$build_triplet" --enable-option-checking=fatal)
strip_tool=strip
objdump_tool=objdump
if [ "$host_triplet" != "$build_triplet" ]; then
    # The same release, compiled natively once in the Dockerfile's `build-python` stage
    # (build-python.sh) and shared from the layer cache by every cross-built entry of the release.
    build_python=/opt/cpforge-build-python/bin/python${minor}
    if [ ! -x "$build_python" ]; then
        echo "cpforge-build: no build python at ${build_python}: a cross build needs the build-python stage" \
             "(render the Dockerfile with cpforge)" >&2
        exit 1
    fi
    # Answers configure cannot find out when it cannot run target binaries (as CPython's own CI passes).
    # ensurepip would run under the build python and use *its* install scheme: pip is installed
    # from the bundled wheel below instead.
    configure+=(--host="$host_triplet" --with-build-python="$build_python" --with-ensurepip=no
                ac_cv_buggy_getaddrinfo=no ac_cv_file__dev_ptmx=yes ac_cv_file__dev_ptc=no)
    export PKG_CONFIG_LIBDIR="/usr/lib/${host_triplet}/pkgconfig:/usr/share/pkgconfig"
    strip_tool="${host_triplet}-strip"
    objdump_tool="${host_triplet}-objdump"
    log "cross-compiling ${build_triplet} → ${host_triplet} with build python ${build_python}"
else
    build_python=""
    configure+=(--with-ensurepip=install)
fi
# --enable-static-libpython-for-interpreter (CPython 3.15+) is passed through where configure knows
# it; older releases get the same result from a relink after the build (below).
shared=no static_interpreter=no
args=()
for flag in "$@"; do
    case "$flag" in
        --enable-shared) shared=yes; args+=("$flag") ;;
        --enable-static-libpython-for-interpreter)
            static_interpreter=yes
            if grep -q -- 'enable-static-libpython-for-interpreter' configure; then args+=("$flag"); fi ;;
        *) args+=("$flag") ;;
    esac
done
pgo=no compiler=gcc
for flag in "${args[@]}"; do
    case "$flag" in
        --enable-optimizations) pgo=yes ;;
        CC=*) compiler=${flag#CC=} ;;
    esac
done
if [ "$compiler" != gcc ]; then
    if ! [[ "$compiler" =~ ^clang-[0-9]+$ ]]; then
        echo "cpforge-build: CC=${compiler@Q}: cpforge builds with gcc or clang-N" >&2
        exit 1
    fi
    if [ -n "$build_python" ]; then
        # clang is a cross compiler already: it needs the target triplet (the sysroot is Debian's multiarch).
        for i in "${!args[@]}"; do
            case "${args[$i]}" in CC=clang-*|CXX=clang++-*) args[i]="${args[$i]} --target=${host_triplet}" ;; esac
        done
    fi
    log "compiler: ${compiler} ($("$compiler" --version | head -1))"
fi
if [ -n "${CPFORGE_BUILTIN_MODULES:-}" ]; then
    # Setup.local comes first in makesetup's list, and the first rule for a module wins: these take
    # Setup.stdlib's rules (the same sources and MODULE_<NAME>_CFLAGS/LDFLAGS), built *static*.
    # A module the release always builds in (Setup.bootstrap, or config.c.in's own table: 3.14's
    # _datetime, _opcode, _contextvars) needs no rule: it is noted and skipped.
    read -r -a builtin_modules <<< "$CPFORGE_BUILTIN_MODULES"
    always_builtin=()
    {
        echo "# cpforge-build: CPFORGE_BUILTIN_MODULES"
        echo "*static*"
        for mod in "${builtin_modules[@]}"; do
            if ! [[ "$mod" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
                echo "cpforge-build: ${mod@Q} in CPFORGE_BUILTIN_MODULES is not a module name" >&2
                exit 1
            fi
            rule=$(sed -n "s/^@MODULE_[A-Z0-9_]*_TRUE@\(${mod} .*\)\$/\1/p" Modules/Setup.stdlib.in)
            if [ -z "$rule" ] && { grep -q -E "^${mod}[[:space:]]" Modules/Setup.bootstrap.in \
                                   || grep -q -F "{\"${mod}\", PyInit_${mod}}" Modules/config.c.in; }; then
                always_builtin+=("$mod")
                continue
            fi
            if [ -z "$rule" ]; then
                echo "cpforge-build: Python ${version} has no stdlib extension module ${mod} to build in" >&2
                exit 1
            fi
            echo "$rule"
        done
    } > Modules/Setup.local
    log "built-in extension modules: ${builtin_modules[*]}"
    [ ${#always_builtin[@]} -eq 0 ] || log "(Python ${version} builds ${always_builtin[*]} in anyway)"
fi
log "configure ${configure[*]} ${args[*]}"
./configure "${configure[@]}" "${args[@]}"

# PGO: the training run's counters depend on timing, so two trainings never give the same
# binary. A pinned profile (CPFORGE_PGO_PROFILE: the .gcda files of an earlier GCC training, or the
# code.profclangd that clang's llvm-profdata merged from one) is unpacked at its paths in this same
# /build tree instead, and make skips straight to the profile-guided rebuild: the build is then
# reproducible. Which of the two a build uses is configure's choice (PGO_PROF_USE_FLAG).
pgo_kind=gcc
if grep -q '^PGO_PROF_USE_FLAG=.*code\.profclangd' Makefile; then pgo_kind=clang; fi
pinned=""
if [ "$pgo" = yes ] && [ -n "${CPFORGE_PGO_PROFILE:-}" ] && [ -f "$CPFORGE_PGO_PROFILE" ]; then
    pinned=$CPFORGE_PGO_PROFILE
    if [ "$pgo_kind" = clang ]; then
        if [ "$(tar -tJf "$pinned")" != code.profclangd ]; then
            echo "cpforge-build: ${pinned} is not a clang PGO profile (exactly one file, code.profclangd)" >&2
            exit 1
        fi
        what="code.profclangd, $(tar -xJOf "$pinned" code.profclangd | wc -c) bytes"
    elif tar -tJf "$pinned" | grep -v -E '^[A-Za-z0-9_][A-Za-z0-9_./+-]*\.gcda$' | grep -q .; then
        echo "cpforge-build: ${pinned} holds files other than relative .gcda paths" >&2
        exit 1
    else
        what="$(tar -tJf "$pinned" | wc -l) .gcda files"
    fi
    tar -xJf "$pinned"
    touch profile-run-stamp
    log "PGO: reusing the pinned profile ${pinned##*/} (sha256 $(sha256sum "$pinned" | cut -d' ' -f1)," \
        "${what}): no training run"
fi

log "make -j$(nproc)"
make -j"$(nproc)"
if [ "$pgo" = yes ]; then
    # The profile this build used, for `invoke lock` to pin: sorted, epoch-stamped, uid 0, xz -T1.
    if [ "$pgo_kind" = clang ]; then
        [ -s code.profclangd ] || { echo "cpforge-build: the PGO build left no code.profclangd" >&2; exit 1; }
        printf 'code.profclangd\0'
    else
        find . -name '*.gcda' -printf '%P\0' | sort -z
    fi | tar --null --no-recursion --mtime="@${SOURCE_DATE_EPOCH}" --owner=0 --group=0 --numeric-owner \
             --format=gnu -T - -cf - | xz -T1 -6 > /tmp/pgo-profile.tar.xz
    count=$(tar -tJf /tmp/pgo-profile.tar.xz | wc -l)
    [ "$count" -gt 0 ] || { echo "cpforge-build: the PGO build left no .gcda files" >&2; exit 1; }
    what="${count} .gcda files"
    [ "$pgo_kind" = gcc ] || what="code.profclangd, $(wc -c < code.profclangd) bytes"
    if [ -n "$pinned" ] && ! cmp -s /tmp/pgo-profile.tar.xz "$pinned"; then
        echo "cpforge-build: the PGO profile (${what}) changed during a build from a pinned profile" >&2
        exit 1
    fi
    log "PGO profile: ${what}, sha256 $(sha256sum /tmp/pgo-profile.tar.xz | cut -d' ' -f1)"
fi
if [ "$static_interpreter" = yes ] && ! grep -q -- 'enable-static-libpython-for-interpreter' configure; then
    # python links libpython's own objects, as with --disable-shared (Debian's python3.X is built
    # so): with LTO the final code generation sees a PIE executable, so the thread-state TLS variable
    # is one %fs-relative load instead of a __tls_get_addr call through libpython.so. libpython.so
    # is still built and installed for embedders.
    log "relinking python against libpython's objects (static interpreter, shared libpython kept)"
    rm -f python
    make -j"$(nproc)" 'LINK_PYTHON_DEPS=$(LIBRARY_OBJS)' 'LINK_PYTHON_OBJS=$(LIBRARY_OBJS)' python
elif [ "$shared" = yes ] && [ "$static_interpreter" = no ]; then
    # Relink python so it finds libpython next to it wherever the prefix lands (as
    # docker-library/python does): RUNPATH $ORIGIN/../lib, no LD_LIBRARY_PATH needed.
    log "relinking python with RUNPATH \$ORIGIN/../lib"
    rm -f python
    make -j"$(nproc)" "LDFLAGS=-Wl,-rpath='\$\$ORIGIN/../lib'" python
fi
if [ "$shared" = yes ]; then
    linked=$("$objdump_tool" -p python | awk '$1 == "NEEDED" && $2 ~ /^libpython/ { print $2 }')
    if [ "$static_interpreter" = yes ] && [ -n "$linked" ]; then
        echo "cpforge-build: python still needs ${linked} after the static relink" >&2
        exit 1
    fi
    if [ "$static_interpreter" = no ] && [ -z "$linked" ]; then
        echo "cpforge-build: python does not link libpython in a shared build" >&2
        exit 1
    fi
fi

# The image ships no .pyc (they are deleted below), so `make install` byte-compiles only the top
# level of the stdlib (compileall -r 0) instead of all of it at three optimisation levels: 30 s of
# a build, 60 s at -O0.
log "make install DESTDIR=${dest}"
make install DESTDIR="$dest" COMPILEALL_OPTS="-j0 -r 0" >/dev/null
[ "$pgo" = no ] || mv /tmp/pgo-profile.tar.xz /artifact/pgo-profile.tar.xz

root="${dest}${prefix}"
# Keep only the prefix: nothing may land outside it.
mv "$root" /tmp/cpforge-prefix
rm -rf "$dest"
mkdir -p "$(dirname "$root")"
mv /tmp/cpforge-prefix "$root"

exe=$(cd "$root/bin" && ls python"${minor}"* | grep -E "^python${minor}t?$" | head -1)
if [ "$compiler" != gcc ]; then
    sysconfig_for_gcc "$compiler"
    if [ -z "$build_python" ]; then check_extension_build; fi
fi
if [ -n "$build_python" ]; then
    # Cross build: pip from CPython's bundled wheel, unpacked into the target's site-packages.
    site=$(ls -d "$root"/lib/python"${minor}"*/site-packages | head -1)
    wheel=$(ls Lib/ensurepip/_bundled/pip-*.whl | head -1)
    log "installing $(basename "$wheel") into ${site#"$dest"}"
    "$build_python" -m zipfile -e "$wheel" "$site"
    for name in pip pip3 "pip${minor}"; do
        printf '#!%s/bin/%s\nimport sys\nfrom pip._internal.cli.main import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
            "$prefix" "$exe" > "$root/bin/$name"
        chmod 755 "$root/bin/$name"
    done
fi
# Slim: no test suites, no bytecode caches, no static libpython (nor the python.o that links with it).
find "$root" -depth \
    \( \( -type d -a \( -name test -o -name tests -o -name idle_test \) \) \
    -o \( -type f -a \( -name '*.pyc' -o -name '*.pyo' -o -name 'libpython*.a' \) \) \
    -o \( -type f -a -path '*/config-*/python.o' \) \) \
    -exec rm -rf '{}' +
find "$root" -depth -type d -name __pycache__ -exec rm -rf '{}' +

# Convenience names every Python image has.
(
    cd "$root/bin"
    [ -e python3 ] || ln -s "$exe" python3
    [ -e python ] || ln -s python3 python
    [ -e pip ] || ln -s pip3 pip
)

is_elf() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; }

log "stripping ELF files with ${strip_tool}"
: > /tmp/needed
while IFS= read -r -d '' f; do
    if is_elf "$f"; then
        "$strip_tool" --strip-unneeded "$f"
        "$objdump_tool" -p "$f" | awk '$1 == "NEEDED" { print $2 }' >> /tmp/needed
    fi
done < <(find "$root" -type f -print0 | sort -z)

log "computing runtime packages from the binaries' NEEDED entries"
: > /tmp/packages
while read -r soname; do
    case "$soname" in libpython*) continue ;; esac
    owner=$(dpkg -S "*/${host_triplet}/${soname}" 2>/dev/null | grep -v "^diversion " | head -1 | cut -d: -f1) || true
    if [ -z "$owner" ]; then
        echo "cpforge-build: no Debian package provides ${soname} for ${host_triplet}" >&2
        exit 1
    fi
    echo "$owner" >> /tmp/packages
done < <(sort -u /tmp/needed)
mkdir -p "$root/share/cpforge"
sort -u /tmp/packages > "$root/share/cpforge/runtime-packages.txt"
cp "$root/share/cpforge/runtime-packages.txt" /artifact/runtime-packages.txt
log "runtime packages: $(tr '\n' ' ' < /artifact/runtime-packages.txt)"

# Pin the exact .deb files (and their dependencies) the runtime stage installs, resolved here with
# the target as apt's only architecture and an empty dpkg status: the runtime stage then needs no
# `apt-get update` (37 s under QEMU for arm64) and installs exactly these files, checked by sha256.
# ca-certificates and netbase come along for bases that lack them (cpforge's bootstrapped bases have
# them). One line per file: PACKAGE[:ARCH] URI SHA256.
log "pinning the runtime packages' .deb files for ${target_arch}"
# (An empty archive cache too: apt leaves out of --print-uris any .deb it already holds.)
apt_target=(-o "APT::Architecture=${target_arch}" -o "APT::Architectures::=${target_arch}"
            -o Dir::State::status=/tmp/cpforge-empty-status -o Dir::Cache::archives=/tmp/cpforge-no-debs/ -q)
: > /tmp/cpforge-empty-status
mkdir -p /tmp/cpforge-no-debs/partial
apt-get update -qq
: > /artifact/runtime-debs.txt
while read -r uri file _size _hash; do
    uri=${uri//\'/}
    IFS=_ read -r name version arch <<< "${file%.deb}"
    version=${version//%3a/:}
    sha=$(apt-cache "${apt_target[@]}" show "${name}=${version}" < /dev/null | awk '$1 == "SHA256:" { print $2; exit }')
    [ -n "$sha" ] || { echo "cpforge-build: no SHA256 for ${name}=${version} on the mirror" >&2; exit 1; }
    [ "$arch" = all ] || name="${name}:${arch}"
    printf '%s %s %s\n' "$name" "$uri" "$sha" >> /artifact/runtime-debs.txt
done < <(xargs -a /artifact/runtime-packages.txt \
             apt-get "${apt_target[@]}" install --print-uris -qq --no-install-recommends ca-certificates netbase)
rm -rf /var/lib/apt/lists/*
sort -o /artifact/runtime-debs.txt /artifact/runtime-debs.txt
while read -r pkg; do
    if ! grep -qE "^${pkg}(:[a-z0-9]+)? " /artifact/runtime-debs.txt; then
        echo "cpforge-build: runtime package ${pkg} did not resolve to a .deb file on the mirror" >&2
        exit 1
    fi
done < /artifact/runtime-packages.txt
cp /artifact/runtime-debs.txt "$root/share/cpforge/runtime-debs.txt"
touch -d "@${SOURCE_DATE_EPOCH}" /artifact/runtime-debs.txt
log "runtime .deb files: $(cut -d' ' -f1 /artifact/runtime-debs.txt | tr '\n' ' ')"

# Deterministic tree and tarball.
find "$dest" -exec touch -h -d "@${SOURCE_DATE_EPOCH}" '{}' +
tar --sort=name --mtime="@${SOURCE_DATE_EPOCH}" --clamp-mtime \
    --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf /artifact/cpython.tar -C "$dest" usr
sha256sum /artifact/cpython.tar | cut -d' ' -f1 > /artifact/cpython.tar.sha256
rm -rf "$workdir"
log "artifact sha256 $(cat /artifact/cpython.tar.sha256), $(du -sh "$root" | cut -f1) installed"
