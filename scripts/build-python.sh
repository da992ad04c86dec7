#!/bin/bash
# Builds the native CPython that drives a cross build, in a cpforge `build-python` stage.
#
# Usage: cpforge-build-python VERSION TARGET_ARCH
#   VERSION      the release being cross-built (X.Y.Z): CPython needs a build python of the same X.Y,
#                and cpforge uses the same release, from the same verified source tarball
#   TARGET_ARCH  Debian architecture the stage's cross builds target (arm64)
#
# Installs into /opt/cpforge-build-python. The stage's instructions depend only on the release, the
# distro, the target and this script, so every variant and profile of a release that cross-builds for
# TARGET_ARCH reuses it from the layer cache: it is compiled once per release, never per entry.
# On a builder whose own architecture is TARGET_ARCH (a native host, `--build-arg BUILDER_ARCH=arm64`)
# nothing is cross-compiled and the directory stays empty.
# Plain bash, no cpforge import; arguments arrive through exec form, never a shell.
set -euo pipefail

version=${1:?usage: cpforge-build-python VERSION TARGET_ARCH}
target=${2:?usage: cpforge-build-python VERSION TARGET_ARCH}
prefix=/opt/cpforge-build-python
minor=${version%.*}
src=/usr/src/Python-${version}.tar.xz
native=$(dpkg --print-architecture)

log() { printf '[cpforge-build-python %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

mkdir -p "$prefix"
if [ "$native" = "$target" ]; then
    log "this builder is ${native}: builds for ${target} are native and need no build python"
    exit 0
fi

work=$(mktemp -d /tmp/cpforge-build-python.XXXXXX)
log "building python ${version} for ${native} into ${prefix} (drives cross builds to ${target})"
tar -xf "$src" -C "$work"
cd "$work/Python-${version}"
# Only what a build python needs: the interpreter and its pure-Python stdlib, plus zlib (the cross
# build unpacks pip's wheel with it). No optimisation (OPT=-O0, as the quick profile: a third of
# configure's -O3 compile, and what it runs in a cross build, code generators and the top level of
# compileall, is short), no ensurepip, no test modules.
./configure --prefix="$prefix" --with-ensurepip=no --disable-test-modules "OPT=-DNDEBUG -O0" >/dev/null
make -j"$(nproc)" >/dev/null
# Not the whole stdlib byte-compiled three times over: a cross build imports a small part of it, whose
# .pyc it writes on first use.
make install COMPILEALL_OPTS="-j0 -r 0" >/dev/null
cd /
rm -rf "$work" "$prefix/lib/python${minor}"*/test "$prefix/lib/libpython${minor}"*.a
"$prefix/bin/python${minor}" -c 'import sys, zlib; print("build python", sys.version.split()[0], "with zlib", zlib.ZLIB_VERSION)'
log "done: $(du -sh "$prefix" | cut -f1)"
