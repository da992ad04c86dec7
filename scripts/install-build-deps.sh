#!/bin/bash
# Installs what building CPython needs in a cpforge builder stage: natively when this container's
# architecture is the target's, else a Debian cross toolchain plus the target's -dev packages.
#
# Usage: install-build-deps TARGET_ARCH MINOR [--jit LLVM_MAJOR]
#   TARGET_ARCH  Debian architecture of the interpreter to build (amd64, arm64)
#   MINOR        CPython minor version (3.13): a cross build needs a native pythonMINOR to run
#   --jit N      also install clang-N and llvm-N (the JIT's stencils) and a host python3
# Plain bash, no cpforge import; arguments arrive through exec form, never a shell.
set -euo pipefail

target=${1:?usage: install-build-deps TARGET_ARCH MINOR [--jit LLVM]}
minor=${2:?usage: install-build-deps TARGET_ARCH MINOR [--jit LLVM]}
shift 2
llvm=""
if [ "${1:-}" = "--jit" ]; then
    llvm=${2:?--jit needs an LLVM major version}
fi

native=$(dpkg --print-architecture)
libs=(libbz2-dev libffi-dev libgdbm-compat-dev libgdbm-dev liblzma-dev libncurses-dev libreadline-dev
      libsqlite3-dev libssl-dev libzstd-dev uuid-dev zlib1g-dev)
packages=(build-essential pkg-config xz-utils binutils)

export DEBIAN_FRONTEND=noninteractive
if [ "$target" = "$native" ]; then
    packages+=("${libs[@]}")
else
    dpkg --add-architecture "$target"
    packages+=("crossbuild-essential-${target}" "${libs[@]/%/:${target}}")
    echo "cpforge: cross toolchain ${native} → ${target}"
fi
if [ -n "$llvm" ]; then
    packages+=("clang-${llvm}" "llvm-${llvm}" python3)
fi

apt-get update
if [ "$target" != "$native" ]; then
    # The build python must be the same X.Y as the interpreter being built: use the distro's when it
    # has one (cpforge-build compiles one from the same source otherwise).
    if apt-cache show "python${minor}" >/dev/null 2>&1; then
        packages+=("python${minor}")
    fi
fi
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
