"""Reliability of the files cpforge writes, with real processes, real tarballs and (last test) the real
engine: concurrent report writers lose nothing, tarballs do not depend on umask, owner or creation
order, unsafe artifacts are refused, and provisioning a --native-style build, shadowed builds and a
tampered artifact behave as the README says."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cpforge import matrix as mx
from cpforge.engine import Engine
from cpforge.errors import BuildError
from cpforge.matrix import Platform
from cpforge.provision import ProvisionError, deterministic_targz, extract_artifact, provision
from cpforge.report import EntryResult, Report

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "http://127.0.0.1:8999/py"
BASE_IMAGE = "cpforge/debian:trixie-amd64"

# ----------------------------------------------------------------------------------- the report

WRITER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from cpforge.report import EntryResult, Report

path, name, n = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
report = Report.load(path)  # loaded once: from here on a stale copy of what the other process writes
start = time.time()
for i in range(n):
    common = dict(profile="quick", version="3.14.7", variant="default", platform="linux/amd64", status="passed")
    report.update(EntryResult(key=f"{name}-{i}@quick", id=f"{name}-{i}", **common))
    report.update(EntryResult(key=f"{name}-last@quick", id=f"{name}-last", durations={"i": float(i)}, **common))
    report.save()
print(json.dumps({"start": start, "end": time.time()}))
"""


def test_two_processes_saving_one_report_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ROOT), str(path), name, str(n)], stdout=subprocess.PIPE, text=True
        )
        for name in ("amd64", "arm64")
    ]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        spans.append(json.loads(out))
    # the two writers really ran at the same time (else this would prove nothing)
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)
    entries = Report.load(path).entries
    expected = {f"{name}-{i}@quick" for name in ("amd64", "arm64") for i in range(n)}
    assert expected <= set(entries)
    assert len(entries) == 2 * n + 2
    assert entries["amd64-last@quick"].durations == {"i": n - 1}
    assert entries["arm64-last@quick"].durations == {"i": n - 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json", "report.json.lock"]


# ----------------------------------------------------------------------------------- tarballs

MAKE_TREE = r"""
import os, sys
from pathlib import Path

root, umask, order, owner = Path(sys.argv[1]), int(sys.argv[2], 8), sys.argv[3], int(sys.argv[4])
os.umask(umask)
items = [
    ("dir", "bin", None),
    ("exe", "bin/python3.14", b"\x7fELF not really\n"),
    ("link", "bin/python3", "python3.14"),
    ("exe", "bin/pip3", b"#!/bin/sh\nexit 0\n"),
    ("dir", "lib", None),
    ("dir", "lib/python3.14", None),
    ("file", "lib/python3.14/os.py", b"import sys\n"),
    ("file", "lib/python3.14/this.py", b"s = 'beautiful'\n"),
    ("file", "PYTHON.json", b"{}\n"),
]
if order == "reversed":
    items.reverse()
for kind, rel, data in items:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)  # under this umask
    if kind == "dir":
        p.mkdir(exist_ok=True)
    elif kind == "link":
        p.symlink_to(data)
    else:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o777 if kind == "exe" else 0o666)
        os.write(fd, data)
        os.close(fd)
if owner:
    for p in [root, *root.rglob("*")]:
        os.lchown(p, owner, owner)
"""


def make_tree(root: Path, umask: str, order: str, owner: int = 0) -> Path:
    subprocess.run([sys.executable, "-c", MAKE_TREE, str(root), umask, order, str(owner)], check=True)
    return root


def naive_tar_digest(root: Path) -> str:
    """What tarring the tree without normalising gives: must differ, or the trees are no test."""
    out = root.with_suffix(".naive.tar")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(root.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(root)), recursive=False)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_the_same_tree_gives_the_same_tarball_under_any_umask_owner_and_creation_order(tmp_path: Path) -> None:
    epoch = mx.load(ROOT / "matrix.yaml").versions[0].epoch
    a = make_tree(tmp_path / "a", "022", "listed")
    time.sleep(1.1)  # other mtimes, too
    b = make_tree(tmp_path / "b", "002", "reversed", owner=1234 if os.geteuid() == 0 else 0)
    assert (a / "lib/python3.14/os.py").stat().st_mode & 0o777 == 0o644
    assert (b / "lib/python3.14/os.py").stat().st_mode & 0o777 == 0o664
    assert (b / "bin").stat().st_mode & 0o777 == 0o775
    assert naive_tar_digest(a) != naive_tar_digest(b)
    da = deterministic_targz(a, tmp_path / "a.tar.gz", epoch)
    db = deterministic_targz(b, tmp_path / "b.tar.gz", epoch)
    assert da == db == hashlib.sha256((tmp_path / "b.tar.gz").read_bytes()).hexdigest()
    # ... and `tar` itself reads it back with the normalised metadata
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvzf", str(tmp_path / "b.tar.gz")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    got = [(line.split()[0], line.split()[5].rstrip("/")) for line in listing]
    assert got == [  # sorted by path components; the symlink as it is
        ("-rw-r--r--", "PYTHON.json"),
        ("drwxr-xr-x", "bin"),
        ("-rwxr-xr-x", "bin/pip3"),
        ("lrwxrwxrwx", "bin/python3"),
        ("-rwxr-xr-x", "bin/python3.14"),
        ("drwxr-xr-x", "lib"),
        ("drwxr-xr-x", "lib/python3.14"),
        ("-rw-r--r--", "lib/python3.14/os.py"),
        ("-rw-r--r--", "lib/python3.14/this.py"),
    ]
    assert "bin/python3 -> python3.14" in listing[3]
    assert all(line.split()[1] == "0/0" for line in listing)


def gnu_tar(archive: Path, workdir: Path, *members: str) -> Path:
    """An archive made by GNU tar itself, with -P so it keeps absolute and `..` names as given."""
    subprocess.run(["tar", "-cPf", str(archive), *members], cwd=workdir, check=True)
    return archive


@pytest.mark.parametrize("case", ["absolute symlink", "escaping symlink", "dot-dot member"])
def test_gnu_tar_archives_with_escaping_members_are_refused(tmp_path: Path, case: str) -> None:
    work = tmp_path / "w" / "usr" / "local" / "lib"
    work.mkdir(parents=True)
    outside = tmp_path / "w" / "outside.txt"
    outside.write_text("not yours")
    if case == "absolute symlink":
        (work / "passwd").symlink_to("/etc/passwd")
        archive = gnu_tar(tmp_path / "evil.tar", tmp_path / "w", "usr")
        why = "'usr/local/lib/passwd' is a link to an absolute path"
    elif case == "escaping symlink":
        (work / "up").symlink_to("../../../..")
        archive = gnu_tar(tmp_path / "evil.tar", tmp_path / "w", "usr")
        why = "'usr/local/lib/up' would link to"
    else:
        archive = gnu_tar(tmp_path / "evil.tar", work, "../../../outside.txt")
        why = "'../../../outside.txt' would be extracted to"
    dest = tmp_path / "x" / "y" / "z"
    with pytest.raises(ProvisionError) as err, archive.open("rb") as f:
        extract_artifact(f, dest, "artifact evil.tar")
    assert f"artifact evil.tar holds an unsafe member, refused: {why}" in str(err.value)
    assert not (tmp_path / "x" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()


# ----------------------------------------------------------------------------------- provision, for real


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine.connect(os.environ.get("CPFORGE_TEST_ENGINE") or None)
    if eng.image_id(BASE_IMAGE) is None:
        pytest.fail(f"needs the base image {BASE_IMAGE}: run `invoke base --filter '3.14-default-trixie-amd64'`")
    return eng


def fake_cpython(engine: Engine, tmp: Path, spec: mx.BuildSpec) -> Path:
    """cpython.tar with the builder image's own bash as the interpreter: a real ELF file that needs a
    library (libtinfo.so.6) provision must copy out of the image, behind a symlink."""
    local = tmp / f"tree-{spec.key}" / "usr" / "local"
    exe = local / "bin" / f"python{spec.minor}{'t' if spec.variant.freethreaded else ''}"
    engine.copy_out(BASE_IMAGE, "/usr/bin/bash", exe, platform="linux/amd64")
    exe.chmod(0o755)
    (local / "bin" / "python3").symlink_to(exe.name)
    (local / "bin" / "pip3").write_text(f"#!/usr/local/bin/python{spec.minor}\necho pip\n")
    (local / "bin" / "pip3").chmod(0o755)
    art = tmp / f"{spec.key}.cpython.tar"
    subprocess.run(["tar", "-cf", str(art), "--sort=name", "-C", str(local.parent.parent), "usr"], check=True)
    return art


def report_with(engine: Engine, tmp: Path, specs: list[mx.BuildSpec], builder_platform: str) -> Path:
    rep = Report(tmp / "out" / "report.json")
    image = engine.image_id(BASE_IMAGE)
    for spec in specs:
        art = fake_cpython(engine, tmp, spec)
        rep.update(
            EntryResult.of(
                spec,
                status="passed",
                artifact_image_id=image,
                builder_platform=builder_platform,
                artifact={"path": str(art), "sha256": hashlib.sha256(art.read_bytes()).hexdigest()},
            )
        )
    rep.save()
    return rep.path


def spec_of(profile: str, entry: str) -> mx.BuildSpec:
    return next(s for s in mx.load(ROOT / "matrix.yaml").expand(profile) if s.id == entry)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.integration
def test_provision_reads_the_builder_image_with_the_platform_the_report_records(engine: Engine, tmp_path: Path) -> None:
    # As with a --native arm64 build (builder ran on arm64, the matrix says amd64), the matrix and the
    # report disagree here: the matrix says builders run on arm64, the report that this one ran on
    # amd64. Docker refuses a container of the image for the matrix's platform ...
    spec = replace(spec_of("release", "3.14-default-trixie-amd64"), build_platform=Platform(name="linux/arm64"))
    # (the engine calls that "does not exist", and provision used to report every library missing) ...
    with pytest.raises(BuildError, match="does not exist"):
        with engine.open_archive(BASE_IMAGE, "/usr/bin/bash", spec.build_platform.name):
            pass
    # ... so provision must ask for the recorded one, and bundles libtinfo.so.6 out of the image.
    report_path = report_with(engine, tmp_path, [spec], "linux/amd64")
    res = provision(engine, Report.load(report_path), [spec], tmp_path / "dist", BASE_URL, say=lambda _: None)
    assert res.tarballs[0].metadata["bundled_libraries"] == ["libtinfo.so.6"]
    # an old report without builder_platform: the image itself says what it is
    old = json.loads(report_path.read_text())
    del old["entries"][0]["builder_platform"]
    report_path.write_text(json.dumps(old))
    again = provision(engine, Report.load(report_path), [spec], tmp_path / "dist2", BASE_URL, say=lambda _: None)
    assert again.tarballs[0].sha256 == res.tarballs[0].sha256  # and the tarball is the same, bit for bit

    # The tarball works where it is unpacked: its interpreter loads the library bundled from the image.
    run = engine.run(
        BASE_IMAGE,
        ["/bin/sh", "-c", "mkdir /x && tar -xzf /t/p.tgz -C /x && LD_DEBUG=libs /x/bin/python3.14 -c 'echo ran' 2>&1"],
        files={"t/p.tgz": res.tarballs[0].path.read_bytes()},
        platform="linux/amd64",
    )
    assert run.exit_code == 0 and "ran" in run.stdout, run.stdout
    assert "/x/bin/../lib/libtinfo.so.6" in run.stdout


@pytest.mark.integration
def test_invoke_provision_reports_shadowed_builds_and_refuses_a_tampered_artifact(
    engine: Engine, tmp_path: Path
) -> None:
    default, jit = spec_of("release", "3.14-default-trixie-amd64"), spec_of("release", "3.14-jit-trixie-amd64")
    dquick = spec_of("quick", "3.14-default-trixie-amd64")
    report_path = report_with(engine, tmp_path, [default, jit, dquick], "linux/amd64")
    dist = tmp_path / "dist"
    common = ["--out", str(tmp_path / "out"), "--dest", str(dist), "--base-url", BASE_URL]

    first = cli("provision", *common, "--profile", "quick", "--filter", dquick.id)
    assert first.returncode == 0, first.stderr
    second = cli("provision", *common, "--profile", "release", "--filter", default.id, "--filter", jit.id)
    assert second.returncode == 0, second.stderr
    notes = [line.strip() for line in second.stdout.splitlines() if line.strip().startswith("NOTE")]
    assert len(notes) == 2, second.stdout
    assert notes[0].startswith("NOTE  python-3.14.7-linux-trixie-x64-jit.tar.gz is not in versions-manifest.json")
    assert "(default before JIT)" in notes[0] and "channels/jit-release/versions-manifest.json" in notes[0]
    assert notes[1].startswith("NOTE  python-3.14.7-linux-trixie-x64-quick.tar.gz is not in versions-manifest.json")
    assert "(release before quick)" in notes[1]

    main = json.loads((dist / "versions-manifest.json").read_text())
    assert {f["filename"] for r in main for f in r["files"]} == {"python-3.14.7-linux-trixie-x64.tar.gz"}
    jit_manifest = json.loads((dist / "channels/jit-release/versions-manifest.json").read_text())
    assert {f["download_url"] for r in jit_manifest for f in r["files"]} == {
        f"{BASE_URL}/python-3.14.7-linux-trixie-x64-jit.tar.gz"
    }
    assert len((dist / "SHA256SUMS").read_text().splitlines()) == 3
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # A tampered artifact: exit 13, the path and both hashes, and nothing written.
    art = Path(Report.load(report_path).entries[default.key].artifact["path"])
    with art.open("r+b") as f:
        f.seek(4096)
        f.write(b"tampered")
    before = {p: p.stat().st_mtime_ns for p in dist.rglob("*")}
    third = cli("provision", *common, "--profile", "release", "--filter", default.id)
    assert third.returncode == 13, third.stdout + third.stderr
    assert f"artifact {art} is not the one its build recorded" in third.stderr
    assert hashlib.sha256(art.read_bytes()).hexdigest() in third.stderr
    assert Report.load(report_path).entries[default.key].artifact["sha256"] in third.stderr
    assert {p: p.stat().st_mtime_ns for p in dist.rglob("*")} == before
