"""A fresh Debian machine, for real: a new container from the minbase image cpforge builds on
(cpforge/debian:trixie-amd64: no python3, no Docker, no mmdebstrap), with a copy of the repository.

As a user, `./dev setup --for test` names every missing piece and the one command that fixes them;
as root, --dry-run prints the apt-get and start-up commands; then it installs one piece for real
(mmdebstrap, from the Debian mirror), and `./dev matrix` goes from nothing to a listed matrix:
python3 and python3-venv installed by the set-up step, .venv created, cpforge installed from PyPI.
The container gets the host network (for the mirror and PyPI) and never starts a Docker engine."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cpforge.engine import Engine

from .conftest import ROOT

pytestmark = pytest.mark.integration
IMAGE = "cpforge/debian:trixie-amd64"


@dataclass
class Exec:
    code: int
    out: str


class Machine:
    def __init__(self, engine: Engine, cid: str) -> None:
        self.api, self.cid = engine.api, cid

    def put(self, path: str, data: bytes) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        self.api.put_archive(self.cid, "/", buf.getvalue())

    def run(self, command: str, user: str = "root") -> Exec:
        ex = self.api.exec_create(self.cid, ["bash", "-c", command], user=user, workdir="/repo")
        out = self.api.exec_start(ex["Id"]).decode("utf-8", "replace")
        return Exec(int(self.api.exec_inspect(ex["Id"])["ExitCode"]), out)


def repository_tar() -> bytes:
    """The repository's tracked files as they are in the work tree (not the .venv, build/, caches)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(f for f in files.decode().split("\0") if f and (ROOT / f).exists()):
            tar.add(ROOT / name, arcname=f"repo/{name}", recursive=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def machine(engine: Engine) -> Iterator[Machine]:
    if engine.image_id(IMAGE) is None:
        pytest.skip(f"{IMAGE} is not built yet (invoke base)")
    host_config = engine.api.create_host_config(network_mode="host")
    cid = engine.api.create_container(IMAGE, command=["sleep", "3600"], host_config=host_config)["Id"]
    try:
        engine.api.put_archive(cid, "/", repository_tar())
        engine.api.start(cid)
        yield Machine(engine, cid)
    finally:
        engine.api.remove_container(cid, force=True)


def test_a_user_is_told_each_missing_piece_and_the_one_command(machine: Machine) -> None:
    res = machine.run("./dev setup --for test", user="nobody")
    assert res.code == 1, res.out
    for piece in (
        "python3 (./dev runs cpforge in a virtualenv)",
        "the Docker engine (not installed)",
        "mmdebstrap",
        "uidmap",
        "qemu-user-static",
        "docker-registry",
        "diffoscope",
        "npm",
    ):
        assert f"  - {piece}" in res.out, (piece, res.out)
    assert "to install and start them, run as root: ./dev setup --for test" in res.out  # no sudo here


def test_root_dry_run_prints_the_install_and_the_engine_start(machine: Machine) -> None:
    res = machine.run("./dev setup --for test --dry-run")
    assert res.code == 1, res.out
    assert (
        "would run: apt-get install -y -qq binfmt-support docker-registry docker.io mmdebstrap nodejs npm "
        "python3 python3-venv qemu-user-static\n" in res.out
    )
    assert "would run: apt-get install -y -qq --no-install-recommends diffoscope-minimal" in res.out
    assert "would start: dockerd --bridge=none --iptables=false --ip6tables=false" in res.out
    assert "would register qemu-aarch64 with binfmt_misc, flag F" in res.out
    assert machine.run("command -v dockerd mmdebstrap").code == 1  # nothing was installed


def test_root_installs_a_missing_piece_for_real(machine: Machine) -> None:
    res = machine.run("./dev setup --for build --only mmdebstrap")
    assert res.code == 0, res.out
    assert "running: apt-get install -y -qq mmdebstrap" in res.out
    assert "done: this machine has everything ./dev build needs" in res.out
    assert machine.run("mmdebstrap --version").code == 0
    again = machine.run("./dev setup --for build --only mmdebstrap")
    assert (again.code, again.out) == (0, "")


def test_dev_goes_from_nothing_to_a_working_cpforge(machine: Machine) -> None:
    # the host's trust settings (a TLS-inspecting proxy's CA, say) go with pip into the container
    ca = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")
    env = ""
    if ca and Path(ca).is_file():
        machine.put("/tmp/host-ca.pem", Path(ca).read_bytes())
        env = "PIP_CERT=/tmp/host-ca.pem "
    res = machine.run(f"cd /tmp && {env}/repo/dev matrix --filter '3.14-default-*' 2>&1")
    assert res.code == 0, res.out
    # python3 itself may be there already: mmdebstrap, installed above, depends on it
    assert re.search(r"running: apt-get install -y -qq (python3 )?python3-venv\n", res.out), res.out
    assert "installing cpforge and its tools into /repo/.venv" in res.out
    assert "* 3.14-default-trixie-amd64" in res.out and "entries (profile quick)" in res.out
