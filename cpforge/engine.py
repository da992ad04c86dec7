"""The only module that speaks to Docker (through the docker SDK's low-level API).

An Engine is an object handed to whoever needs it, never a global: `invoke build` may drive several
(cpforge/builders.py: a platform → engines map, each with its own job limit), reached by URL
(cpforge/transport.py: unix://, tcp:// with TLS, ssh://). `EngineAPI` is the surface the Builder, the
scheduler, smoke tests and base images use, so unit tests can hand them a fake.
Builds always use the host network (the default bridge is forbidden here); containers that run
tests use no network at all.

A lost engine (its daemon killed, its host unreachable) surfaces as an EngineError naming its URL
from every call, never as a transport exception: the scheduler then takes the engine out of the run.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import re
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ParamSpec, Protocol, TypeVar

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.utils.json_stream import json_stream

from . import transport
from .errors import BuildError, EngineError, Interrupted
from .fsutil import atomic_path

try:  # the ssh transport's own errors (paramiko comes with docker[ssh])
    from paramiko import SSHException

    _SSH_ERRORS: tuple[type[BaseException], ...] = (SSHException, EOFError)
except ImportError:  # pragma: no cover - without paramiko there is no ssh:// engine to lose
    _SSH_ERRORS = ()

# What a call raises when the engine went away (daemon killed, host down, ssh session dropped), as
# opposed to the engine answering with an error (docker.errors.APIError).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
    urllib3.exceptions.ProtocolError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    *_SSH_ERRORS,
)
# What reading a build's stream raises when the engine goes away mid-build.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    OSError,
    ValueError,
    *CONNECTION_ERRORS,
)
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
    *_SSH_ERRORS,
)
# `docker info`'s Architecture (uname -m of the engine's host) → the platform's architecture.
ARCH_OF_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# The legacy builder's lines about a step's container, and the layer a finished step committed.
RUNNING_IN = re.compile(r"---> Running in ([0-9a-f]{12,64})")
REMOVING = re.compile(r"Removing intermediate container ([0-9a-f]{12,64})")
STEP_LAYER = re.compile(r"^\s*---> ([0-9a-f]{12,64})\s*$")
P = ParamSpec("P")
R = TypeVar("R")

START_HINT = (
    "start it with `sudo dockerd --bridge=none --iptables=false --ip6tables=false &` "
    "(or `sudo systemctl start docker`), or point DOCKER_HOST at a running engine"
)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str


def context_tar(files: dict[str, bytes | Path]) -> IO[bytes]:
    """A deterministic build context: sorted members, mtime 0, uid/gid 0, modes 0644/0755."""
    buf = tempfile.TemporaryFile()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if isinstance(data, Path):
                info.size = data.stat().st_size
                info.mode = 0o755 if data.stat().st_mode & 0o111 else 0o644
                with data.open("rb") as f:
                    tar.addfile(info, f)
            else:
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


class EngineAPI(Protocol):
    """The engine surface the Builder, the scheduler, smoke tests and base images use.

    cpforge.engine.Engine is the real one; tests/unit/fake_engine.py's FakeEngine is a fake."""

    @property
    def url(self) -> str: ...
    @property
    def arch(self) -> str: ...
    @property
    def cancelled(self) -> bool: ...
    def cancel(self) -> None: ...
    def alive(self, timeout: float = 10.0) -> bool: ...
    def image_id(self, ref: str) -> str | None: ...
    def inspect_image(self, ref: str) -> dict[str, Any]: ...
    def image_labels(self, ref: str) -> dict[str, str]: ...
    def newest_labelled(self, labels: dict[str, str]) -> str | None: ...
    def tag(self, image_id: str, ref: str) -> None: ...
    def remove_image(self, ref: str) -> None: ...
    def pull(self, ref: str, platform: str) -> bool: ...
    def save(self, ref: str) -> Iterator[bytes]: ...
    def load(self, data: Iterable[bytes]) -> None: ...
    def build(
        self,
        context: IO[bytes],
        *,
        dockerfile: str = "Dockerfile",
        target: str | None = None,
        platform: str | None = None,
        labels: dict[str, str] | None = None,
        buildargs: dict[str, str] | None = None,
        tag: str | None = None,
        nocache: bool = False,
        cache_from: list[str] | None = None,
        log: IO[str],
        on_line: Callable[[str], None] | None = None,
    ) -> str: ...
    def copy_out(self, image: str, path: str, dest: Path, platform: str | None = None) -> Path: ...
    def run(
        self,
        image: str,
        command: list[str],
        *,
        files: dict[str, bytes] | None = None,
        environment: dict[str, str] | None = None,
        platform: str | None = None,
        timeout: int = 900,
        cpuset: str | None = None,
    ) -> RunResult: ...


def lost_hint(url: str) -> str:
    return (
        f"check that the engine at {url} is up (and reachable from here); a build on a fleet continues on the "
        "other engines, and `--retry` reschedules the entries a lost engine was building"
    )


def _talks(fn: Callable[P, R]) -> Callable[P, R]:
    """A method of Engine whose connection failures become an EngineError naming the engine."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError:
            raise
        except CONNECTION_ERRORS as exc:
            engine = args[0]
            assert isinstance(engine, Engine)
            raise engine.lost(exc, fn.__name__) from None

    return wrapper


def _interrupted(what: str) -> Interrupted:
    return Interrupted(what, hint="rerun: the steps that finished come from the layer cache")


def short_ref(ref: str) -> str:
    """An image for messages: an id shortened to sha256:+12 hex digits, a tag as it is."""
    return ref[:19] if ref.startswith("sha256:") else ref


class Engine:
    """A connection to one Docker engine.

    ``cancel()`` (from any thread: the interrupt handler) ends every build stream and kills every
    container this object started; the calls waiting on them raise Interrupted, and later calls that
    would start work raise it at once. The daemon cancels a build whose client went away."""

    def __init__(self, api: docker.APIClient, url: str) -> None:
        self.api = api
        self.url = url  # as the user wrote it (or DOCKER_HOST, or the default socket): printable, no secret
        self._arch: str | None = None
        self._host: str | None = None
        self._cancelled = threading.Event()
        self._active_lock = threading.Lock()
        self._streams: set[Any] = set()  # urllib3 responses of builds under way
        self._containers: set[str] = set()  # containers started by run() and not yet removed
        self._build_containers: set[str] = set()  # a build step's container ("Running in …") under way

    # ---------------------------------------------------------------- cancellation

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop everything this engine object has under way, and refuse new work."""
        self._cancelled.set()
        with self._active_lock:
            streams, containers = list(self._streams), list(self._containers)
            steps = list(self._build_containers)
        for raw in streams:
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; the daemon cancels the build
                except OSError:
                    pass
        for cid in containers:
            try:
                self.api.kill(cid)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                pass
        for cid in steps:
            self._remove_step_container(cid)

    def _remove_step_container(self, cid: str, patience: float = 20.0) -> None:
        """Remove a cancelled build step's container and wait until it is gone. The daemon removes it
        too, in its own time, after the build's connection closed: without the wait, cpforge could exit
        while it is still there."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.api.remove_container(cid, force=True)
                return
            except docker.errors.NotFound:
                return
            except (docker.errors.APIError, requests.exceptions.RequestException):
                if time.monotonic() > deadline:  # e.g. 409, its removal already in progress
                    return
            time.sleep(0.5)

    def _check_cancelled(self, what: str) -> None:
        if self._cancelled.is_set():
            raise _interrupted(f"interrupted before {what}")

    @classmethod
    def connect(cls, url: str | None = None, timeout: int = 600) -> Engine:
        """The engine at ``url`` (cpforge/transport.py), else DOCKER_HOST (with DOCKER_TLS_VERIFY and
        DOCKER_CERT_PATH), else the local socket; EngineError (exit 5) naming it when it cannot be
        reached."""
        where = url or transport.default_url()
        try:
            api = transport.client(url, timeout) if url else docker.from_env(timeout=timeout).api
            api.ping()
        except EngineError:
            raise
        except CONNECT_ERRORS as exc:
            detail = str(exc).splitlines()[0][:200] if url and url.startswith("ssh://") else ""
            raise EngineError(
                f"cannot reach the Docker daemon at {where} ({type(exc).__name__}{': ' + detail if detail else ''})",
                hint=START_HINT if where.startswith("unix://") else lost_hint(where),
            ) from None
        return cls(api, where)

    def lost(self, exc: BaseException, doing: str) -> EngineError:
        """The error of a call that found the engine gone."""
        return EngineError(
            f"lost the connection to the Docker engine {self.url} ({doing}: {type(exc).__name__})",
            hint=lost_hint(self.url),
        )

    def alive(self, timeout: float = 10.0) -> bool:
        """Whether the engine answers a ping within ``timeout`` seconds (never raises)."""
        try:
            return bool(self.api.get(f"{self.api.base_url}/_ping", timeout=timeout).ok)
        except Exception:  # noqa: BLE001 - any failure to answer means: not alive
            return False

    @property
    def arch(self) -> str:
        """The architecture of the engine's host, as a platform names it (amd64, arm64): `docker info`."""
        if self._arch is None:
            self._info()
        assert self._arch is not None
        return self._arch

    @property
    def host(self) -> str:
        """The engine host's name (`docker info`'s Name): engines with the same one share its CPUs."""
        if self._host is None:
            self._info()
        assert self._host is not None
        return self._host

    @_talks
    def _info(self) -> None:
        info = self.api.info()
        machine = str(info.get("Architecture") or "")
        self._arch = ARCH_OF_MACHINE.get(machine, machine)
        self._host = str(info.get("Name") or "")

    # ---------------------------------------------------------------- images

    @_talks
    def image_id(self, ref: str) -> str | None:
        try:
            return str(self.api.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise EngineError(f"cannot inspect image {ref}: {exc.explanation}") from None

    @_talks
    def inspect_image(self, ref: str) -> dict[str, Any]:
        return dict(self.api.inspect_image(ref))

    def image_labels(self, ref: str) -> dict[str, str]:
        return dict((self.inspect_image(ref).get("Config") or {}).get("Labels") or {})

    @_talks
    def newest_labelled(self, labels: dict[str, str]) -> str | None:
        """The newest top-level image (tagged or not) that carries every one of these labels."""
        found = self.api.images(filters={"label": [f"{k}={v}" for k, v in sorted(labels.items())]})
        newest = max(found, key=lambda img: (int(img.get("Created") or 0), str(img["Id"])), default=None)
        return None if newest is None else str(newest["Id"])

    @_talks
    def tag(self, image_id: str, ref: str) -> None:
        repo, _, tag = ref.rpartition(":")
        self.api.tag(image_id, repo, tag, force=True)

    @_talks
    def remove_image(self, ref: str) -> None:
        try:
            self.api.remove_image(ref, force=True, noprune=False)
        except docker.errors.NotFound:
            pass

    @_talks
    def images(self, name: str | None = None) -> list[dict[str, Any]]:
        return list(self.api.images(name=name))

    def pull(self, ref: str, platform: str) -> bool:
        """Try to pull; return False (never raise) when the registry cannot be reached."""
        if "@" in ref:
            repo, _, tag = ref.partition("@")  # a digest reference: repo@sha256:...
        elif ":" in ref.split("/")[-1]:
            repo, _, tag = ref.rpartition(":")
        else:
            repo, tag = ref, "latest"
        try:
            for _ in self.api.pull(repo, tag=tag or "latest", platform=platform, stream=True, decode=True):
                pass
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return False
        return self.image_id(ref) is not None

    def push(self, ref: str, auth: dict[str, str] | None = None, retries: int = 3) -> str:
        """Push one tag; return the manifest digest the registry reports. Retries transient failures."""
        repo, _, tag = ref.rpartition(":")
        problem = ""
        for _attempt in range(retries):
            digest = ""
            problem = ""
            try:
                for chunk in self.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth):
                    if "error" in chunk:
                        problem = str(chunk.get("errorDetail", {}).get("message") or chunk["error"])
                        break
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = str(aux["Digest"])
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'explanation', exc)}"
            if digest and not problem:
                return digest
            if "unauthorized" in problem.lower() or "denied" in problem.lower():
                break
        raise EngineError(
            f"push of {ref} failed: {problem or 'no digest reported'}",
            hint="check the registry address and your `docker login`",
        )

    # ---------------------------------------------------------------- build

    def build(
        self,
        context: IO[bytes],
        *,
        dockerfile: str = "Dockerfile",
        target: str | None = None,
        platform: str | None = None,
        labels: dict[str, str] | None = None,
        buildargs: dict[str, str] | None = None,
        tag: str | None = None,
        nocache: bool = False,
        cache_from: list[str] | None = None,
        log: IO[str],
        on_line: Callable[[str], None] | None = None,
    ) -> str:
        """Build from a tar context; stream the log to ``log``; return the image id.

        ``cache_from`` names the only images whose layers may serve as cache (the legacy builder then
        ignores every other cached layer): a fresh build of an entry that still reuses prerequisites."""
        self._check_cancelled("a build")
        params: dict[str, Any] = {
            "dockerfile": dockerfile,
            "rm": True,
            "forcerm": True,
            "networkmode": "host",
            "pull": False,
            "nocache": nocache,
        }
        optional = {"target": target, "platform": platform, "t": tag}
        params.update({k: v for k, v in optional.items() if v})
        for key, value in (("labels", labels), ("buildargs", buildargs), ("cachefrom", cache_from)):
            if value is not None:
                params[key] = json.dumps(value)
        try:
            response = self.api.post(
                f"{self.api.base_url}/v{self.api.api_version}/build",
                params=params,
                data=context,
                headers={"Content-Type": "application/tar"},
                stream=True,
                timeout=None,
            )
        except CONNECTION_ERRORS as exc:
            raise self.lost(exc, "starting a build") from None
        if response.status_code >= 400:
            raise BuildError(f"the engine refused the build: {response.text.strip()[:500]}")
        with self._active_lock:
            self._streams.add(response.raw)
        try:
            image_id = self._read_build(response, log, on_line)
        except STREAM_ERRORS as exc:
            if self._cancelled.is_set():
                raise _interrupted("the build was interrupted") from None
            raise self.lost(exc, "during a build") from None
        finally:
            with self._active_lock:
                self._streams.discard(response.raw)
            response.close()
        full = self.image_id(image_id)
        if full is None:
            raise BuildError(f"the engine reported image {image_id} but it does not exist")
        return full

    def _track_step_containers(self, text: str) -> None:
        """Note the containers the legacy builder runs steps in, for cancel() to remove."""
        started, removed = RUNNING_IN.findall(text), REMOVING.findall(text)
        if started or removed:
            with self._active_lock:
                self._build_containers.update(started)
                self._build_containers.difference_update(removed)

    def _read_build(self, response: requests.Response, log: IO[str], on_line: Callable[[str], None] | None) -> str:
        """Consume a build's JSON stream into ``log``; the image id, or BuildError with the last lines."""
        image_id: str | None = None
        last: list[str] = []
        began = time.monotonic()
        for chunk in json_stream(response.iter_content(chunk_size=None, decode_unicode=True)):
            if "error" in chunk:
                msg = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
                log.write(f"ERROR: {msg}\n")
                log.flush()
                if self._cancelled.is_set():
                    raise _interrupted("the build was interrupted")
                raise BuildError(f"docker build failed: {msg}\n--- last lines ---\n{''.join(last[-15:])}")
            text = chunk.get("stream") or chunk.get("status") or ""
            self._track_step_containers(text)
            if text:
                # Each Dockerfile step is stamped with the time since the build began: the log shows where
                # the time went.
                log.write(f"[{time.monotonic() - began:7.1f}s] {text}" if text.startswith("Step ") else text)
                last.append(text if text.endswith("\n") else text + "\n")
                del last[:-40]
                if on_line:
                    for line in text.splitlines():
                        on_line(line)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
            m = re.match(r"Successfully built ([0-9a-f]+)", text)
            if m and image_id is None:
                image_id = m.group(1)
        log.flush()
        if self._cancelled.is_set():
            raise _interrupted("the build was interrupted")
        if image_id is None:
            raise BuildError("the build stream ended without an image id (see the log)")
        return image_id

    # ---------------------------------------------------------------- containers

    @contextmanager
    def open_archive(self, image: str, path: str, platform: str | None = None) -> Iterator[tarfile.TarFile]:
        """``path`` in an image, as the tar stream the engine archives it to (without running the image)."""
        with tempfile.TemporaryFile() as tmp:
            try:
                self._archive_into(image, path, platform, tmp)
            except docker.errors.APIError:
                raise
            except CONNECTION_ERRORS as exc:
                raise self.lost(exc, "copying a file out of an image") from None
            tmp.seek(0)
            with tarfile.open(fileobj=tmp, mode="r|") as tar:
                yield tar

    def _archive_into(self, image: str, path: str, platform: str | None, tmp: IO[bytes]) -> None:
        try:
            cid = self.api.create_container(image, command=["/bin/true"], platform=platform)["Id"]
        except docker.errors.ImageNotFound:
            raise BuildError(f"image {short_ref(image)} does not exist (to read {path} from)") from None
        try:
            try:
                stream, _stat = self.api.get_archive(cid, path)
            except docker.errors.NotFound:
                raise BuildError(f"{path} does not exist in image {short_ref(image)}") from None
            for chunk in stream:
                tmp.write(chunk)
        finally:
            self.api.remove_container(cid, force=True)

    @_talks
    def copy_out(self, image: str, path: str, dest: Path, platform: str | None = None) -> Path:
        """Copy one regular file out of an image without running it."""
        with self.open_archive(image, path, platform) as tar:
            # The archive's first member is `path` itself: a directory comes first, then its files.
            member = tar.next()
            if member is not None and member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                with atomic_path(dest) as tmp, tmp.open("wb") as out:  # never a truncated file in place
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                return dest
        raise EngineError(f"{path} in image {short_ref(image)} is not a regular file")

    def save(self, ref: str) -> Iterator[bytes]:
        """The image in `docker save` format (a tar stream)."""
        try:
            yield from self.api.get_image(ref)
        except docker.errors.APIError:
            raise
        except CONNECTION_ERRORS as exc:
            raise self.lost(exc, "save") from None

    @_talks
    def load(self, data: Iterable[bytes]) -> None:
        """`docker load` of a `docker save` stream (e.g. another engine's ``save``)."""
        for chunk in self.api.load_image(data):
            if isinstance(chunk, dict) and chunk.get("error"):
                raise EngineError(f"{self.url} refused to load an image: {chunk['error']}")

    @_talks
    def run(
        self,
        image: str,
        command: list[str],
        *,
        files: dict[str, bytes] | None = None,
        environment: dict[str, str] | None = None,
        platform: str | None = None,
        timeout: int = 900,
        cpuset: str | None = None,
    ) -> RunResult:
        """Run ``command`` in a fresh container with no network; ``files`` are copied in first.
        ``cpuset`` pins the container to those CPUs (e.g. "1"), as benchmarks want."""
        self._check_cancelled("running a container")
        host_config = self.api.create_host_config(network_mode="none", cpuset_cpus=cpuset)
        cid = self.api.create_container(
            image,
            command=command,
            environment=environment or {},
            host_config=host_config,
            platform=platform,
            network_disabled=True,
        )["Id"]
        with self._active_lock:
            self._containers.add(cid)
        try:
            self._check_cancelled("starting a container")
            if files:
                ctx = context_tar(dict(files))
                self.api.put_archive(cid, "/", ctx.read())
            self.api.start(cid)
            try:
                code = int(self.api.wait(cid, timeout=timeout).get("StatusCode", 1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                self.api.kill(cid)
                code = 124  # like timeout(1): the logs so far are still returned
            self._check_cancelled("reading a container's output")  # killed by cancel(): not a result
            out = self.api.logs(cid, stdout=True, stderr=False).decode("utf-8", "replace")
            err = self.api.logs(cid, stdout=False, stderr=True).decode("utf-8", "replace")
            return RunResult(code, out, err)
        finally:
            with self._active_lock:
                self._containers.discard(cid)
            self.api.remove_container(cid, force=True)
