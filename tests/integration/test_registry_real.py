"""The registry client against real things: Debian's docker-registry with two publisher processes
racing on one manifest list, real HTTP servers on 127.0.0.1 (an upload location on another port, a
token service, a redirect, a registry that never answers), and real docker-credential-* helpers on
PATH. Self-contained: no image builds, no Docker engine (except the one CLI test, which only
connects to it)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cpforge.publish import IndexGroup, Member, index_body, list_members, update_index
from cpforge.registry import MANIFEST_LIST_V2, MANIFEST_V2, Credentials, Registry, RegistryError, credentials_for

from .registries import free_port, serving_registry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REPO = "race/python"
ROUNDS = 24


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, storing in a temp dir."""
    with serving_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


# ------------------------------------------------------------------ concurrent publishers


class SlowNetwork(Registry):
    """A registry client whose list writes arrive a few random milliseconds late, as over a real
    network: the window between a publisher's read and its write widens, so lost updates happen."""

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        if media_type == MANIFEST_LIST_V2:
            time.sleep(random.uniform(0, 0.04))
        return super().put_manifest(repo, ref, body, media_type)


def push_small_image(reg: Registry, repo: str, tag: str, arch: str) -> Member:
    """A real (tiny) image through the registry API: a config blob, one gzipped layer, a v2 manifest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = f"hello from {arch}\n".encode()
        info = tarfile.TarInfo(f"hello-{arch}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}},
        sort_keys=True,
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": reg.put_blob(repo, config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": len(layer),
                "digest": reg.put_blob(repo, layer),
            }
        ],
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return Member(arch, reg.put_manifest(repo, tag, body, MANIFEST_V2), len(body), MANIFEST_V2)


def round_group(i: int) -> IndexGroup:
    """Round i publishes version 1.0.i: its exact list, and the moving tags every round shares."""
    return IndexGroup(REPO, f"1.0.{i}-default-trixie-", "", (f"1.0.{i}-default-trixie", "1.0-default-trixie", "1.0"))


def publisher(address: str, arch: str, rounds: int, barrier: Any, results: Any) -> None:
    """One CI job: per round, push its image under its per-arch tag, then update the lists."""
    try:
        reg = SlowNetwork(address)
        attempts = []
        for i in range(rounds):
            barrier.wait(timeout=120)
            group = round_group(i)
            member = push_small_image(reg, REPO, f"{group.arch_prefix}{arch}{group.suffix}", arch)
            attempts.append(update_index(reg, group, {arch: member}).attempts)
            barrier.wait(timeout=120)
        results.put((arch, attempts))
    except BaseException as exc:
        barrier.abort()
        results.put((arch, f"{type(exc).__name__}: {exc}"))
        raise


def test_two_publisher_processes_never_lose_a_platform(registry: str) -> None:
    """amd64 and arm64 publish one variant at the same moment, ROUNDS times over; a third platform
    (s390x) was listed earlier by another job. After every round, every tag lists all three."""
    reg = Registry(registry)
    s390x = {}
    for i in range(ROUNDS):
        group = round_group(i)
        s390x[i] = push_small_image(reg, REPO, f"{group.arch_prefix}s390x", "s390x")
        reg.put_manifest(REPO, group.exact, index_body([s390x[i]]), MANIFEST_LIST_V2)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    procs = [ctx.Process(target=publisher, args=(registry, a, ROUNDS, barrier, results)) for a in ("amd64", "arm64")]
    for p in procs:
        p.start()
    try:
        for i in range(ROUNDS):
            barrier.wait(timeout=120)  # go
            barrier.wait(timeout=120)  # both publishers returned from update_index
            group = round_group(i)
            expected = {"s390x": s390x[i].digest}
            for arch in ("amd64", "arm64"):
                got = reg.manifest(REPO, f"{group.arch_prefix}{arch}")
                assert got is not None, f"round {i}: {arch} was not pushed"
                expected[arch] = got[0]
            for tag in group.tags:
                listed = {a: m.digest for a, m in list_members(reg.manifest(REPO, tag)).items()}
                assert listed == expected, f"round {i}: {tag} lists {sorted(listed)}"
    except threading.BrokenBarrierError:
        pass  # a publisher failed: its error is reported below
    except BaseException:
        barrier.abort()  # a failed round: release the publishers now, not at their timeout
        raise
    finally:
        outcome = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
    assert all(isinstance(v, list) for v in outcome.values()), outcome
    retried = sum(a - 1 for v in outcome.values() for a in v)
    print(f"lost updates merged again over {ROUNDS} rounds: {retried}")


# ------------------------------------------------------------------ real HTTP servers on 127.0.0.1

App = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], bytes]]


class Server:
    """A threaded HTTP server on a free loopback port; ``seen`` records (method, path, Authorization)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.seen: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, payload = outer.app(self, body)
                try:
                    self.send_response(status)
                    for k, v in {"Content-Length": str(len(payload)), **headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_HEAD = do_POST = do_PUT = handle_any

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Callable[[App], Server]]:
    started: list[Server] = []

    def start(app: App) -> Server:
        started.append(Server(app))
        return started[-1]

    yield start
    for s in started:
        s.close()


ALICE = Credentials("alice", "s3cret")
BASIC = "Basic " + base64.b64encode(b"alice:s3cret").decode()


def storage_app(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Where the registry sends uploads: another origin (a blob store, a CDN, an attacker)."""
    return 201, {}, b""


def registry_app(storage: str, challenge: str, accepted: str) -> App:
    def app(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") != accepted:
            return 401, {"WWW-Authenticate": challenge}, b'{"errors": [{"code": "UNAUTHORIZED"}]}'
        if h.command == "HEAD":
            return 404, {}, b""
        if h.command == "POST" and h.path.endswith("/blobs/uploads/"):
            return 202, {"Location": f"http://{storage}/upload/1?_state=opaque"}, b""
        return 200, {}, b"{}"

    return app


def test_basic_credentials_stay_on_the_registry_host(servers: Callable[[App], Server]) -> None:
    storage = servers(storage_app)
    reg_server = servers(registry_app(storage.address, 'Basic realm="test"', BASIC))
    Registry(reg_server.address, credentials=ALICE).put_blob("ns/app", b"layer bytes")
    assert ("POST", "/v2/ns/app/blobs/uploads/", BASIC) in reg_server.seen  # the registry got them
    (method, path, auth), *more = storage.seen
    assert method == "PUT" and path.startswith("/upload/1?_state=opaque&digest=sha256")
    assert auth is None and more == []  # the upload location on another port never did


def test_bearer_flow_sends_the_password_only_to_the_realm_the_registry_names(
    servers: Callable[[App], Server],
) -> None:
    def token_app(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") != BASIC:
            return 401, {}, b""
        return 200, {"Content-Type": "application/json"}, b'{"token": "tok-1"}'

    storage = servers(storage_app)
    tokens = servers(token_app)
    challenge = f'Bearer realm="http://{tokens.address}/token",service="test"'
    reg_server = servers(registry_app(storage.address, challenge, "Bearer tok-1"))
    Registry(reg_server.address, credentials=ALICE).put_blob("ns/app", b"layer bytes")
    assert [a for _, _, a in tokens.seen] == [BASIC, BASIC]  # HEAD (pull) and POST (push) scopes
    assert "scope=repository%3Ans%2Fapp%3Apull%2Cpush" in tokens.seen[-1][1]
    assert {a for _, _, a in reg_server.seen} == {None, "Bearer tok-1"}  # never the password itself
    assert [a for _, _, a in storage.seen] == [None]


def test_a_foreign_host_asking_for_credentials_gets_none_and_a_clear_error(
    servers: Callable[[App], Server],
) -> None:
    greedy = servers(lambda h, b: (401, {"WWW-Authenticate": 'Basic realm="give me"'}, b""))
    reg_server = servers(registry_app(greedy.address, 'Basic realm="test"', BASIC))
    with pytest.raises(RegistryError, match="is not the registry") as exc:
        Registry(reg_server.address, credentials=ALICE).put_blob("ns/app", b"layer bytes")
    assert exc.value.exit_code == 12 and greedy.address in exc.value.message
    assert [a for _, _, a in greedy.seen] == [None]  # asked once, given nothing
    assert "_state" not in exc.value.message  # upload state tokens are not printed


def test_a_redirect_to_another_host_carries_no_credentials(servers: Callable[[App], Server]) -> None:
    mirror = servers(lambda h, b: (200, {"Content-Type": MANIFEST_V2}, b'{"schemaVersion": 2}'))

    def app(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if h.headers.get("Authorization") != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""
        return 307, {"Location": f"http://{mirror.address}/m"}, b""

    reg_server = servers(app)
    got = Registry(reg_server.address, credentials=ALICE).manifest("ns/app", "1.0")
    assert got is not None and got[2] == b'{"schemaVersion": 2}'
    assert reg_server.seen[-1][2] == BASIC and [a for _, _, a in mirror.seen] == [None]


def test_a_registry_that_never_answers_is_a_clear_error(servers: Callable[[App], Server]) -> None:
    def sleepy(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        time.sleep(3)
        return 200, {}, b"{}"

    slow = servers(sleepy)
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as exc:
        Registry(slow.address, timeout=0.5, retries=1).ping()
    assert time.monotonic() - t0 < 2.9  # it gave up on its own, after two short attempts
    assert exc.value.exit_code == 12
    assert exc.value.message == (
        f"the registry at http://{slow.address} did not answer GET http://{slow.address}/v2/ within 0.5s "
        "(2 attempts, ReadTimeout)"
    )
    assert exc.value.hint and "publish again" in exc.value.hint
    assert len(slow.seen) == 2


def test_a_registry_that_refuses_connections_is_a_clear_error() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RegistryError, match=rf"cannot reach the registry at http://{address} \(GET .*ConnectionError"):
        Registry(address, retries=0).ping()


# ------------------------------------------------------------------ real docker-credential-* helpers


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Path]:
    """Write docker-credential-<name> shell scripts into a dir on PATH; return a Docker config
    naming one of them as credsStore."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def make(name: str, script: str) -> Path:
        exe = bindir / f"docker-credential-{name}"
        exe.write_text("#!/bin/sh\n" + script)
        exe.chmod(0o755)
        cfg = tmp_path / name / "config.json"
        cfg.parent.mkdir()
        cfg.write_text(json.dumps({"credsStore": name}))
        return cfg

    return make


def test_helper_that_answers(helpers: Callable[[str, str], Path], tmp_path: Path) -> None:
    asked = tmp_path / "asked"
    cfg = helpers("good", f'cat > {asked}\necho \'{{"ServerURL": "x", "Username": "alice", "Secret": "s3cret"}}\'\n')
    assert credentials_for("reg.example:5000", cfg) == ALICE
    assert asked.read_text() == "reg.example:5000"


def test_helper_without_credentials_for_the_host_means_anonymous(helpers: Callable[[str, str], Path]) -> None:
    cfg = helpers("empty", "echo 'credentials not found in native keychain'\nexit 1\n")
    assert credentials_for("reg.example", cfg) is None


def test_helper_that_hangs(helpers: Callable[[str, str], Path]) -> None:
    cfg = helpers("slow", "sleep 30\n")  # a child of the script: the whole group must be killed
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as exc:
        credentials_for("reg.example", cfg, helper_timeout=1)
    assert time.monotonic() - t0 < 5
    assert exc.value.exit_code == 12
    assert (
        exc.value.message
        == "credential helper docker-credential-slow did not answer within 1s when asked for reg.example"
    )
    assert exc.value.hint and "unlock the keychain" in exc.value.hint and str(cfg) in exc.value.hint


def test_helper_that_fails(helpers: Callable[[str, str], Path]) -> None:
    cfg = helpers("broken", "echo 'keychain is locked' >&2\nexit 3\n")
    with pytest.raises(RegistryError) as exc:
        credentials_for("reg.example", cfg)
    assert (
        exc.value.message
        == "credential helper docker-credential-broken failed for reg.example (exit code 3: keychain is locked)"
    )
    assert exc.value.hint and "docker login reg.example" in exc.value.hint


def test_helper_that_prints_garbage_is_not_echoed(helpers: Callable[[str, str], Path]) -> None:
    cfg = helpers("garbage", "echo 'Username=alice Secret=s3cret'\n")
    with pytest.raises(RegistryError, match="not the JSON docker expects") as exc:
        credentials_for("reg.example", cfg)
    assert "s3cret" not in str(exc.value)


def test_helper_that_is_missing(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {"reg.example": "cpforge-no-such-helper"}}))
    with pytest.raises(RegistryError, match=r"docker-credential-cpforge-no-such-helper .* is not installed"):
        credentials_for("reg.example", cfg)
    assert credentials_for("other.example", cfg) is None  # credHelpers is per host


def test_cli_publish_with_a_failing_helper_exits_12_without_a_traceback(
    helpers: Callable[[str, str], Path], tmp_path: Path
) -> None:
    cfg = helpers("broken", "echo 'keychain is locked' >&2\nexit 3\n")
    report = tmp_path / "report.json"
    report.write_text('{"schema": 1, "entries": []}\n')
    invoke = Path(os.environ.get("VIRTUAL_ENV", "/work/main/.venv")) / "bin" / "invoke"
    if not invoke.exists():
        invoke = Path(shutil.which("invoke") or "invoke")
    env = {**os.environ, "DOCKER_CONFIG": str(cfg.parent)}
    out = subprocess.run(
        [
            *(str(invoke), "publish", "--registry", "127.0.0.1:9/ns", "--report", str(report), "--out", str(tmp_path)),
            *("--filter", "3.14-default-trixie-amd64"),  # named: the empty report holds no entries to default to
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 12, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "cpforge: error: credential helper docker-credential-broken failed for 127.0.0.1:9" in out.stderr
    assert "fix: log in again" in out.stderr
