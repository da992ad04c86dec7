#!/bin/bash
# Installs what building CPython needs in a cpforge builder stage: natively when this container's
# architecture is the target's, else a Debian cross toolchain plus the target's -dev packages.
#
# Usage: install-build-deps TARGET_ARCH [--jit LLVM_MAJOR] [--compiler clang-N]
#        install-build-deps --build-python TARGET_ARCH
#   TARGET_ARCH     Debian architecture of the interpreter to build (amd64, arm64)
#   --jit N         also install clang-N and llvm-N (the JIT's stencils) and a host python3
#   --compiler clang-N
#                   CPython itself is compiled with clang-N: clang-N, llvm-N (llvm-ar for LTO,
#                   llvm-profdata for PGO) and libclang-rt-N-dev (PGO's profile runtime), for
#                   TARGET_ARCH too when cross-compiling. (gcc, the default, needs nothing more.)
#   --build-python  only what compiling the native build python of a cross build needs (the
#                   `build-python` stage, see build-python.sh): nothing on a TARGET_ARCH builder
# Plain bash, no cpforge import; arguments arrive through exec form, never a shell.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
if [ "${1:-}" = "--build-python" ]; then
    target=${2:?usage: install-build-deps --build-python TARGET_ARCH}
    if [ "$(dpkg --print-architecture)" = "$target" ]; then
        echo "[cpforge-install-build-deps] a ${target} builder builds for ${target} natively: no build python needed"
        exit 0
    fi
    apt-get update
    apt-get install -y --no-install-recommends build-essential pkg-config xz-utils zlib1g-dev
    apt-get clean
    rm -rf /var/lib/apt/lists/*
    exit 0
fi

usage="usage: install-build-deps TARGET_ARCH [--jit LLVM] [--compiler clang-N]"
target=${1:?$usage}
shift
llvm="" clang=""
while [ $# -gt 0 ]; do
    case "$1" in
        --jit) llvm=${2:?--jit needs an LLVM major version}; shift 2 ;;
        --compiler)
            case "${2:-}" in
                clang-[0-9]*) clang=${2#clang-} ;;
                *) echo "install-build-deps: --compiler takes clang-N, not '${2:-}'" >&2; exit 2 ;;
            esac
            [[ "$clang" =~ ^[0-9]+$ ]] || { echo "install-build-deps: --compiler takes clang-N, not '$2'" >&2; exit 2; }
            shift 2 ;;
        *) echo "install-build-deps: unknown argument '$1' ($usage)" >&2; exit 2 ;;
    esac
done

native=$(dpkg --print-architecture)
libs=(libbz2-dev libffi-dev libgdbm-compat-dev libgdbm-dev liblzma-dev libncurses-dev libreadline-dev
      libsqlite3-dev libssl-dev libzstd-dev uuid-dev zlib1g-dev)
packages=(build-essential pkg-config xz-utils binutils)

if [ "$target" = "$native" ]; then
    packages+=("${libs[@]}")
else
    dpkg --add-architecture "$target"
    packages+=("crossbuild-essential-${target}" "${libs[@]/%/:${target}}")
    echo "[cpforge-install-build-deps] cross toolchain ${native} → ${target}"
fi
if [ -n "$llvm" ]; then
    packages+=("clang-${llvm}" "llvm-${llvm}" python3)
fi
if [ -n "$clang" ]; then
    packages+=("clang-${clang}" "llvm-${clang}" "libclang-rt-${clang}-dev")
    [ "$target" = "$native" ] || packages+=("libclang-rt-${clang}-dev:${target}")
fi

# (A cross build's build python, the same release as the target, comes from the `build-python`
# stage: see build-python.sh.)
apt-get update
if ! apt-get install -y --no-install-recommends "${packages[@]}"; then
    echo "cpforge: could not install the build dependencies for ${target} on ${native}: ${packages[*]}" >&2
    if [ "$target" != "$native" ]; then
        echo "cpforge: a cross build needs crossbuild-essential-${target} and the :${target} -dev packages" \
             "from the distro mirror; check that the mirror carries ${target}" >&2
    fi
    exit 1
fi
apt-get clean
rm -rf /var/lib/apt/lists/*
