"""Base images: make each `cpforge/debian:<suite>-<arch>` exist locally.

Try a pull of the distro's registry image first; when no registry is reachable, bootstrap a
slim rootfs from a Debian mirror with mmdebstrap and import it with the right platform metadata
(a `FROM scratch` + `ADD rootfs.tar /` build with `platform=`, since Engine 20.10's
`docker import --platform` records amd64 whatever it is told).
"""

from __future__ import annotations

import hashlib
import os
import platform as host_platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .engine import EngineAPI, context_tar
from .errors import BaseImageError, Interrupted
from .matrix import Distro, Platform

# Debian's -slim images drop these too.
SLIM_DPKG_OPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
BASE_EPOCH = 1749600000
# Beyond minbase: CA certificates and /etc/services, which every Python image needs. They live in
# the base because ca-certificates' postinst (update-ca-certificates) takes over a minute under QEMU
# and its output does not depend on the architecture.
BASE_INCLUDE = ("ca-certificates", "netbase")
RECIPE_LABEL = "io.cpforge.base.recipe"
SUITE_LABEL = "io.cpforge.base.suite"


def recipe(distro: Distro) -> str:
    """A short digest of everything that shapes a bootstrapped base; a base with another is rebuilt."""
    text = "\n".join([distro.suite, distro.mirror, str(BASE_EPOCH), *SLIM_DPKG_OPTS, *BASE_INCLUDE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BaseResult:
    ref: str
    image_id: str
    how: str  # "present", "pulled", "bootstrapped"
    seconds: float


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(host_platform.machine(), host_platform.machine())


BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def check_emulation(plat: Platform, binfmt_dir: Path = BINFMT_DIR) -> None:
    """A foreign-architecture base needs binfmt + qemu-user-static with the F flag."""
    if plat.arch == host_arch():
        return
    entry = binfmt_dir / f"qemu-{plat.machine}"
    if not entry.exists():
        raise BaseImageError(
            f"{plat.name} containers cannot run here: no binfmt_misc registration for qemu-{plat.machine}",
            hint="sudo apt-get install qemu-user-static binfmt-support && "
            f"sudo update-binfmts --enable qemu-{plat.machine} "
            "(mount binfmt_misc first if /proc/sys/fs/binfmt_misc/register is missing)",
        )
    flags = next((ln.split()[1] for ln in entry.read_text().splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        raise BaseImageError(
            f"qemu-{plat.machine} is registered without the F flag, so containers cannot find the emulator",
            hint="install qemu-user-static (its binfmt entries carry the F flag) and re-run update-binfmts",
        )


def ensure(
    engine: EngineAPI,
    distro: Distro,
    plat: Platform,
    workdir: Path,
    log: Callable[[str], None] = print,
    force_bootstrap: bool = False,
    stopped: Callable[[], bool] = lambda: False,
) -> BaseResult:
    """Make ``distro``'s base for ``plat`` exist on ``engine``. A bootstrap under way ends (Interrupted,
    nothing tagged, its temporary rootfs removed) when ``stopped()`` or the engine's run is cancelled."""
    ref = distro.base_image(plat)
    start = time.monotonic()
    existing = engine.image_id(ref)
    if existing and not force_bootstrap:
        labels = engine.image_labels(existing)
        # A pulled base is kept; one cpforge bootstrapped must match today's recipe.
        if SUITE_LABEL not in labels or labels.get(RECIPE_LABEL) == recipe(distro):
            return BaseResult(ref, existing, "present", 0.0)
        log(f"… {ref}: bootstrapped by an older recipe; bootstrapping it again")
    if distro.pull and not force_bootstrap:
        log(f"… {ref}: trying to pull {distro.pull} ({plat.name})")
        if engine.pull(distro.pull, plat.name):
            pulled = engine.image_id(distro.pull)
            assert pulled is not None
            engine.tag(pulled, ref)
            return BaseResult(ref, pulled, "pulled", time.monotonic() - start)
        log(f"  {distro.pull} cannot be pulled; bootstrapping {distro.suite} from {distro.mirror}")
    image_id = bootstrap(engine, distro, plat, workdir, log, stopped)
    return BaseResult(ref, image_id, "bootstrapped", time.monotonic() - start)


def bootstrap(
    engine: EngineAPI,
    distro: Distro,
    plat: Platform,
    workdir: Path,
    log: Callable[[str], None],
    stopped: Callable[[], bool] = lambda: False,
) -> str:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise BaseImageError(
            "mmdebstrap is not installed, and the base image could not be pulled",
            hint="sudo apt-get install mmdebstrap",
        )
    check_emulation(plat)
    ref = distro.base_image(plat)
    workdir.mkdir(parents=True, exist_ok=True)
    logfile = workdir / f"base-{distro.suite}-{plat.arch}.log"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        cmd = [
            mmdebstrap,
            "--variant=minbase",
            f"--include={','.join(BASE_INCLUDE)}",
            f"--architectures={plat.arch}",
            "--mode=root" if os.geteuid() == 0 else "--mode=unshare",
            *[f"--dpkgopt={o}" for o in SLIM_DPKG_OPTS],
            distro.suite,
            str(rootfs),
            distro.mirror,
        ]
        log(f"… {ref}: mmdebstrap {distro.suite} {plat.arch} (log: {logfile})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(BASE_EPOCH)}
        with logfile.open("w") as lf:
            returncode = _run_stoppable(cmd, lf, env, lambda: stopped() or engine.cancelled)
        if returncode is None:
            raise Interrupted(f"the bootstrap of {ref} was stopped", hint="rerun the same command")
        if returncode != 0:
            tail = "".join(logfile.read_text(errors="replace").splitlines(keepends=True)[-10:])
            raise BaseImageError(
                f"mmdebstrap failed for {distro.suite}/{plat.arch} (exit {returncode}):\n{tail}",
                hint=f"check that {distro.mirror} is reachable; full log: {logfile}",
            )
        dockerfile = b'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n'
        ctx = context_tar({"Dockerfile": dockerfile, "rootfs.tar": rootfs})
        with logfile.open("a") as lf:
            image_id = engine.build(
                ctx,
                platform=plat.name,
                tag=ref,
                log=lf,
                labels={
                    SUITE_LABEL: distro.suite,
                    "io.cpforge.base.mirror": distro.mirror,
                    RECIPE_LABEL: recipe(distro),
                },
            )
    return image_id


def _run_stoppable(cmd: list[str], out: IO[str], env: dict[str, str], stopped: Callable[[], bool]) -> int | None:
    """Run ``cmd`` to its end (its exit status), or until ``stopped()``: then it is terminated (None)."""
    with subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env) as proc:
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if stopped():
                    proc.terminate()
                    try:
                        proc.wait(timeout=60)  # mmdebstrap unmounts and removes its own temp dir
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    return None
