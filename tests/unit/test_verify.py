"""verify's comparison of two tarballs: which members differ, and by how many bytes."""

from __future__ import annotations

import io
import tarfile

from cpforge.verify import bytes_differing, diff_tars


def tar_of(files: dict[str, tuple[bytes, int]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mtime) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_diff_names_members_and_counts_differing_bytes() -> None:
    a = tar_of({"same": (b"x", 0), "bin": (b"hello", 0), "stamp": (b"y", 0), "old": (b"", 0)})
    b = tar_of({"same": (b"x", 0), "bin": (b"hallo!", 0), "stamp": (b"y", 5), "new": (b"", 0)})
    assert diff_tars(a, b) == [
        "differs: bin (2 of 6 bytes)",
        "only in rebuild: new",
        "only in original: old",
        "differs: stamp (metadata)",
    ]
    assert bytes_differing(b"abc", b"abc") == 0


def test_diff_is_cut_at_the_limit() -> None:
    a = tar_of({f"f{i}": (b"a", 0) for i in range(5)})
    b = tar_of({f"f{i}": (b"b", 0) for i in range(5)})
    assert diff_tars(a, b, limit=2) == ["differs: f0 (1 of 1 bytes)", "differs: f1 (1 of 1 bytes)", "… and 3 more"]
