"""Atomic file writes: every file cpforge writes goes to a unique temp file and is renamed into place.

A reader (or a second cpforge process) sees either the old file or the new one, never half of one;
an interrupted write leaves the old file and no temp file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """A unique temp path beside ``path``; renamed onto ``path`` when the block succeeds, deleted otherwise.

    The caller writes the temp path however it likes (a tarfile, a download, a copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        with tmp_path.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on ``path``, created if missing, for the block.

    Serialises read-modify-write updates of a shared file (the build report, a directory's
    manifests) between cpforge processes and threads: each call opens its own file description, and
    closing it, also on Ctrl-C or a crash, releases the lock. The lock file holds no data and stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
