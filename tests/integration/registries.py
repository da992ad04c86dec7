"""Debian's docker-registry on a free loopback port, for the tests that publish for real."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving_registry(root: Path, auth: str = "") -> Iterator[str]:
    """docker-registry storing under ``root`` (``auth``: an extra `auth:` config block), on a free
    loopback port, ready when the block starts; its address. Stopped when the block ends."""
    binary = shutil.which("docker-registry")
    assert binary, "Debian's docker-registry is required: apt-get install docker-registry"
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    with (root / "registry.log").open("wb") as log:
        proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=log)
        try:
            for _ in range(100):
                try:
                    requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                    break
                except requests.exceptions.ConnectionError:
                    time.sleep(0.1)
            else:
                pytest.fail(f"docker-registry did not start (see {root / 'registry.log'})")
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
