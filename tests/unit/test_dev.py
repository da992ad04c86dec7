"""`./dev` and its set-up step (scripts/setup-host.sh), run for real against a fake machine: PATH
holds only the basic utilities plus stand-ins for docker, apt-get, mmdebstrap…, and a directory
stands in for / (the files the script checks, binfmt_misc). The same script on a really fresh
Debian container: tests/integration/test_setup_host.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UTILITIES = (
    "bash sh env dirname id uname sed grep tr sort head tail seq sleep mkdir rm cat touch setsid nohup ln cp chmod"
)
DOCKER = """#!/bin/sh
if [ -e "$STATE/denied" ]; then
    echo "permission denied while trying to connect to the Docker daemon socket" >&2; exit 1
fi
[ -e "$STATE/dockerd-up" ] && { echo 26.1.5; exit 0; }
echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
exit 1
"""
DOCKERD = '#!/bin/sh\necho "$*" >"$STATE/dockerd-args"\ntouch "$STATE/dockerd-up"\n'
# apt-get: log the call; `install` makes each package's commands and files appear
APT_GET = """#!/bin/bash
echo "apt-get $*" >>"$STATE/apt.log"
[ "$1" = install ] || exit 0
for p in "$@"; do
    case "$p" in
        docker.io) cp "$STATE/docker" "$STATE/dockerd" "$FAKEBIN/" ;;
        python3-venv) touch "$STATE/venv-ok" ;;
        debian-archive-keyring) mkdir -p "$SYSROOT/usr/share/keyrings"
                                touch "$SYSROOT/usr/share/keyrings/debian-archive-keyring.gpg" ;;
        mmdebstrap | docker-registry | npm) printf '#!/bin/sh\\n' >"$FAKEBIN/$p"; chmod +x "$FAKEBIN/$p" ;;
        diffoscope-minimal) printf '#!/bin/sh\\n' >"$FAKEBIN/diffoscope"; chmod +x "$FAKEBIN/diffoscope" ;;
        openssh-server) printf '#!/bin/sh\\n' >"$FAKEBIN/sshd"; chmod +x "$FAKEBIN/sshd" ;;
    esac
done
"""
PYTHON3 = '#!/bin/sh\n[ -e "$STATE/venv-ok" ]\n'
EVERYTHING = ["docker", "dockerd", "mmdebstrap", "docker-registry", "diffoscope", "npm", "python3", "newuidmap", "sshd"]


class Host:
    """A fake machine for the set-up script: a repository copy, a PATH, a / and some state."""

    def __init__(self, tmp: Path) -> None:
        self.repo, self.bin, self.sysroot, self.state = (tmp / d for d in ("repo", "bin", "sysroot", "state"))
        for d in (self.repo / "scripts", self.bin, self.sysroot, self.state):
            d.mkdir(parents=True)
        shutil.copy(ROOT / "scripts" / "setup-host.sh", self.repo / "scripts")
        shutil.copy(ROOT / "dev", self.repo)
        for tool in UTILITIES.split():
            real = shutil.which(tool)
            assert real, tool
            (self.bin / tool).symlink_to(real)
        self.stub("apt-get", APT_GET)
        self.stub("sudo", "#!/bin/sh\n")
        for name, text in (("docker", DOCKER), ("dockerd", DOCKERD)):
            (self.state / name).write_text(text)
            (self.state / name).chmod(0o755)
        self.binfmt = self.sysroot / "proc/sys/fs/binfmt_misc"

    def stub(self, name: str, text: str = "#!/bin/sh\n") -> None:
        (self.bin / name).write_text(text)
        (self.bin / name).chmod(0o755)

    def prepared(self) -> Host:
        """Everything `./dev test` needs is here, and the engine runs."""
        for name in EVERYTHING:
            self.stub(name, {"docker": DOCKER, "dockerd": DOCKERD, "python3": PYTHON3}.get(name, "#!/bin/sh\n"))
        (self.state / "dockerd-up").touch()
        (self.state / "venv-ok").touch()
        keyring = self.sysroot / "usr/share/keyrings/debian-archive-keyring.gpg"
        keyring.parent.mkdir(parents=True)
        keyring.touch()
        self.binfmt.mkdir(parents=True)
        (self.binfmt / "register").touch()
        (self.binfmt / "qemu-aarch64").write_text(
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n"
        )
        return self

    def run(
        self, *args: str, euid: int = 1000, cmd: str = "scripts/setup-host.sh", **env: str
    ) -> subprocess.CompletedProcess[str]:
        environ = {
            "PATH": str(self.bin),
            "HOME": str(self.state),
            "STATE": str(self.state),
            "FAKEBIN": str(self.bin),
            "SYSROOT": str(self.sysroot),
            "CPFORGE_SETUP_SYSROOT": str(self.sysroot),
            "CPFORGE_SETUP_EUID": str(euid),
            "CPFORGE_SETUP_ARCH": "x86_64",
            **env,
        }
        return subprocess.run(
            [str(self.repo / cmd), *args], env=environ, capture_output=True, text=True, check=False, timeout=120
        )


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_a_prepared_machine_is_quiet_and_does_nothing(host: Host) -> None:
    host.prepared()
    proc = host.run("--for", "test")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    # no package manager call and no engine start: a prepared machine costs nothing (not timed)
    assert not (host.state / "apt.log").exists() and not (host.state / "dockerd-args").exists()
    proc = host.run("--for", "test", "--check")
    assert proc.returncode == 0 and "this machine has everything ./dev test needs" in proc.stdout
    assert not (host.state / "apt.log").exists()


def test_a_fresh_machine_as_a_user_names_each_missing_piece_and_the_one_command(host: Host) -> None:
    host.stub("python3", PYTHON3)  # python3 without venv
    proc = host.run("--for", "test")
    assert proc.returncode == 1
    for piece in (
        "python3-venv",
        "the Docker engine (not installed)",
        "mmdebstrap",
        "debian-archive-keyring",
        "uidmap",
        "qemu-user-static",
        "docker-registry",
        "diffoscope",
        "npm",
    ):
        assert f"  - {piece}" in proc.stdout, piece
    assert proc.stdout.rstrip().endswith("to install and start them, run: sudo ./dev setup --for test")
    assert not (host.state / "apt.log").exists()  # a user's run installs nothing


def test_each_target_checks_only_what_it_needs(host: Host) -> None:
    build = host.run("--for", "build", "--check").stdout
    assert "mmdebstrap" in build and "qemu" not in build and "npm" not in build
    arm64 = host.run("--for", "arm64", "--check").stdout
    assert "missing for ./dev build with arm64 entries" in arm64 and "qemu-user-static" in arm64
    unit = host.run("--for", "unit", "--check").stdout
    assert "python3 (" in unit and "Docker" not in unit
    only = host.run("--for", "test", "--check", "--only", "npm,diffoscope").stdout
    assert "npm" in only and "diffoscope" in only and "Docker" not in only


def test_root_with_apt_dry_run_prints_the_commands(host: Host) -> None:
    host.stub("python3", PYTHON3)
    proc = host.run("--for", "test", "--dry-run", euid=0)
    assert proc.returncode == 1
    lines = [ln.removeprefix("cpforge setup: ") for ln in proc.stdout.splitlines()]
    assert "would run: apt-get update -qq" in lines
    assert (
        "would run: apt-get install -y -qq binfmt-support debian-archive-keyring docker-registry docker.io "
        "mmdebstrap nodejs npm python3-venv qemu-user-static" in lines
    )
    assert "would run: apt-get install -y -qq --no-install-recommends diffoscope-minimal openssh-server" in lines
    assert f"would run: mount -t binfmt_misc binfmt_misc {host.binfmt}" in lines
    assert any(ln.startswith("would register qemu-aarch64 with binfmt_misc, flag F") for ln in lines)
    assert any(ln.startswith("would start: dockerd --bridge=none --iptables=false --ip6tables=false") for ln in lines)
    assert not (host.state / "apt.log").exists()


def test_root_with_apt_installs_starts_dockerd_and_then_has_nothing_to_do(host: Host) -> None:
    host.stub("python3", PYTHON3)
    proc = host.run("--for", "build", euid=0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "running: apt-get install -y -qq debian-archive-keyring docker.io mmdebstrap python3-venv" in proc.stdout
    assert "starting dockerd --bridge=none --iptables=false --ip6tables=false in the background" in proc.stdout
    assert "dockerd is up (26.1.5)" in proc.stdout
    assert proc.stdout.rstrip().endswith("done: this machine has everything ./dev build needs")
    assert (host.state / "dockerd-args").read_text().split() == [
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
    ]
    # idempotent: a second run finds everything and does nothing
    apt_calls = (host.state / "apt.log").read_text()
    again = host.run("--for", "build", euid=0)
    assert (again.returncode, again.stdout) == (0, "")
    assert (host.state / "apt.log").read_text() == apt_calls


def test_binfmt_registration_without_the_f_flag_is_reported(host: Host) -> None:
    host.prepared()
    (host.binfmt / "qemu-aarch64").write_text("enabled\nflags: P\n")
    (host.sysroot / "usr/libexec/qemu-binfmt").mkdir(parents=True)
    (host.sysroot / "usr/libexec/qemu-binfmt/aarch64-binfmt-P").touch()
    proc = host.run("--for", "arm64", "--check")
    assert proc.returncode == 1 and "the F flag on qemu-aarch64's binfmt_misc registration" in proc.stdout
    assert host.run("--for", "arm64", "--check", CPFORGE_SETUP_ARCH="aarch64").returncode == 0  # native


def test_engine_problems_that_root_cannot_fix_here(host: Host) -> None:
    host.prepared()
    (host.state / "denied").touch()
    proc = host.run("--for", "build")
    assert "access to the Docker engine (" in proc.stdout and "not in the docker group" in proc.stdout
    assert "run: sudo ./dev setup --for build" in proc.stdout
    (host.state / "denied").unlink()
    (host.state / "dockerd-up").unlink()
    proc = host.run("--for", "build", "--dry-run", euid=0, DOCKER_HOST="tcp://builder.example:2376")
    assert "the Docker engine at DOCKER_HOST=tcp://builder.example:2376 (unreachable; start it there)" in proc.stdout
    assert "dockerd" not in proc.stdout


def test_bad_options_exit_2(host: Host) -> None:
    assert host.run("--for", "everything").returncode == 2
    proc = host.run("--frobnicate")
    assert proc.returncode == 2 and "unknown option --frobnicate" in proc.stderr
    proc = host.run("--only", "nodejs")
    assert proc.returncode == 2 and "--only takes venv, docker, mmdebstrap" in proc.stderr
    assert "--for unit" in host.run("--help").stdout


# ------------------------------------------------------------------------------ ./dev itself


def fake_venv(host: Host) -> None:
    """A .venv whose invoke prints where it ran and with what."""
    bindir = host.repo / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(shutil.which("true") or "/bin/true")
    (bindir / "invoke").write_text('#!/bin/sh\necho "invoke in $(pwd): $*"\n')
    (bindir / "invoke").chmod(0o755)
    (host.repo / "pyproject.toml").touch()
    time.sleep(0.01)
    (host.repo / ".venv" / ".cpforge-installed").touch()
    (host.bin / "pwd").symlink_to(shutil.which("pwd") or "/bin/pwd")


@pytest.mark.parametrize(
    ("args", "needs"),
    [
        (["build"], "./dev build"),
        (["build", "--filter", "3.13-*-amd64"], "./dev build"),
        (["build", "--filter", "3.13-*"], "./dev build with arm64 entries"),
        (["build", "--platform=linux/arm64"], "./dev build with arm64 entries"),
        (["build", "--matrix", "--filter", "*-amd64"], "./dev build with arm64 entries"),
        (["test"], "./dev test"),
    ],
)
def test_dev_sets_up_what_the_command_needs_first(host: Host, args: list[str], needs: str) -> None:
    fake_venv(host)
    proc = host.run(*args, cmd="dev")
    assert proc.returncode == 1 and f"missing for {needs}:" in proc.stdout
    assert "invoke in" not in proc.stdout


def test_dev_runs_invoke_from_the_callers_directory_once_set_up(host: Host, tmp_path: Path) -> None:
    host.prepared()
    fake_venv(host)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environ = {
        **os.environ,
        "PATH": str(host.bin),
        "STATE": str(host.state),
        "CPFORGE_SETUP_SYSROOT": str(host.sysroot),
    }
    environ.update(CPFORGE_SETUP_ARCH="x86_64", CPFORGE_SETUP_EUID="1000")
    proc = subprocess.run(
        [str(host.repo / "dev"), "build", "--out", "o"], cwd=elsewhere, env=environ, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"invoke in {elsewhere}: --search-root {host.repo} build --out o\n"
    # --help needs no set-up; CPFORGE_SKIP_SETUP skips it
    (host.bin / "mmdebstrap").unlink()
    assert host.run("build", "--help", cmd="dev").stdout.startswith("invoke in ")
    assert host.run("build", cmd="dev", CPFORGE_SKIP_SETUP="1").stdout.startswith("invoke in ")
    assert "missing for ./dev build" in host.run("build", cmd="dev").stdout
