"""Real engines for the fleet tests, started and stopped by the tests themselves.

  SecondDockerd  a second dockerd with its own --data-root, --exec-root, --pidfile and unix socket
                 (and a TLS tcp:// endpoint on 127.0.0.1 with certificates made here), never the
                 default bridge (--bridge=none --iptables=false --ip6tables=false).
  Sshd           Debian's sshd on 127.0.0.1 and a free port, with its own host key and config and one
                 client key; ssh://USER@127.0.0.1:PORT then runs `docker system dial-stdio` on this
                 machine, so it reaches the main engine (and its warm layer cache). The client's
                 ~/.ssh (key, known_hosts) lives in its own HOME, which the tests hand to cpforge.

Processes are ended by their pid only (and, after a SIGKILL, the containerd shims the dead daemon
left behind, found by its own exec-root in their command lines).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cpforge.engine import Engine
from cpforge.errors import EngineError

from .registries import free_port

SSHD = Path("/usr/sbin/sshd")


def _run(*cmd: str, cwd: Path | None = None) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=120)


def make_tls(d: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (ca.pem, cert.pem, key.pem:
    the layout DOCKER_CERT_PATH and docker contexts use) under ``d``; returns the client directory."""
    d.mkdir(parents=True)
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cpforge-test-ca",
         "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=d)  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
             f"{name}-key.pem", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)  # fmt: skip
    client = d / "client"
    client.mkdir()
    shutil.copy(d / "ca.pem", client / "ca.pem")
    shutil.copy(d / "client.pem", client / "cert.pem")
    shutil.copy(d / "client-key.pem", client / "key.pem")
    return client


class SecondDockerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data, self.exec_root = root / "data", root / "exec"
        self.pidfile, self.sock, self.log = root / "docker.pid", root / "docker.sock", root / "dockerd.log"
        self.url = f"unix://{self.sock}"
        self.tls = make_tls(root / "tls")
        self.tcp_port = free_port()
        self.tcp_url = f"tcp://127.0.0.1:{self.tcp_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Engine:
        tls = self.root / "tls"
        cmd = [
            "dockerd",
            f"--data-root={self.data}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--host={self.url}",
            f"--host={self.tcp_url}",
            "--tlsverify",
            f"--tlscacert={tls / 'ca.pem'}",
            f"--tlscert={tls / 'server.pem'}",
            f"--tlskey={tls / 'server-key.pem'}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                return Engine.connect(self.url, timeout=30)
            except EngineError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the second dockerd did not start; see {self.log}") from None
                time.sleep(0.3)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the daemon dies mid-work, as a crashed or OOM-killed one does."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._end_leftovers()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._end_leftovers()
        self._unmount()

    def _unmount(self) -> None:
        """The mounts dockerd 20.10 leaves under its own directories (its data-root bind-mounted on
        itself, exec-root/netns/default), deepest first, so the directories can be removed."""
        root = str(self.root) + "/"
        with open("/proc/self/mounts", encoding="utf-8") as f:
            points = [line.split()[1] for line in f if line.split()[1].startswith(root)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)

    def _end_leftovers(self) -> None:
        """containerd and its shims that this daemon started and that outlived it (found by exec-root).
        Its pid file goes too: a killed containerd nobody has reaped yet still has a pid, and a
        restarted dockerd would wait for it instead of starting a new one."""
        (self.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)
        mark = str(self.exec_root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark in cmdline and int(entry.name) != os.getpid():
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"  # the client's HOME: ~/.ssh/id_ed25519 and known_hosts
        self.port = free_port()
        self.user = getpass.getuser()
        self.url = f"ssh://{self.user}@127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True, mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / "host_key"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519"))
        (self.root / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
        host_pub = " ".join((self.root / "host_key.pub").read_text().split()[:2])
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                (
                    "ListenAddress 127.0.0.1",
                    f"Port {self.port}",
                    f"HostKey {self.root / 'host_key'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "MaxSessions 32",
                    "",
                )
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        log = (self.root / "sshd.log").open("ab")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start; see {self.root / 'sshd.log'}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
