"""`invoke build` on a fleet of real engines on this machine, compiling nothing new.

The fleet: a second dockerd started by the test (its own data-root, exec-root, pidfile and socket),
declared first, and the main engine reached over ssh:// through a real sshd on 127.0.0.1 (so what
runs there is the session's warm cache: the 3.14 amd64 entries `built_314` built). The second engine
gets its base image from the other engine (cpforge copies it) and starts an entry's build; the test
SIGKILLs it inside that build's first RUN step; --retry moves the entry to the main engine, a cache
hit. Then the second engine is restarted and a rerun there gets into a build step again (and is
stopped with Ctrl-C: it proves the restarted engine takes builds, not that one completes there).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cpforge import api
from cpforge.builders import Holders
from cpforge.engine import Engine
from cpforge.errors import EngineError
from cpforge.report import EntryResult

from .conftest import AMD64_314, start_invoke
from .fleet_engines import SecondDockerd, Sshd

pytestmark = pytest.mark.integration

RUNNING = "---> Running in "  # the legacy builder started a RUN step's container


class Watched:
    """A cpforge command in its own process group, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = start_invoke(args, env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, what: str, ready: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = ready()
            if found:
                return found
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"never saw {what}; output:\n" + "\n".join(self.lines[-60:]))

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def running_a_step(log: Path) -> bool:
    return log.exists() and RUNNING in log.read_text(errors="replace")


def tags_of(engine: Engine, repository: str) -> set[str]:
    return {t for img in engine.api.images() for t in img.get("RepoTags") or [] if t.startswith(repository + ":")}


@dataclass
class FleetRun:
    returncode: int
    output: str
    out: Path
    killed_key: str  # the entry the second engine was building when it was killed
    killed_at: float
    entries: dict[str, dict[str, Any]]  # report.json after the run
    second_tags: set[str]  # the matrix repository's tags on the second engine, after its restart
    main_tags: dict[str, str | None] = field(default_factory=dict)  # tag → image id on the main engine


@pytest.fixture(scope="module")
def fleet_run(
    ctx: api.Context,
    test_matrix: Path,
    engine: Engine,
    built_314: dict[str, EntryResult],
    second_dockerd: SecondDockerd,
    sshd: Sshd,
    tmp_path_factory: pytest.TempPathFactory,
) -> FleetRun:
    out = tmp_path_factory.mktemp("fleet") / "out"
    out.mkdir()
    shutil.copy(ctx.report_path, out / "report.json")  # the session's builds: their chains are the cache
    second, ssh = second_dockerd, sshd
    run = Watched(
        [
            "build",
            *("--filter", AMD64_314, "--profile", "quick", "--matrix-file", str(test_matrix), "--out", str(out)),
            *("--builder", f"linux/amd64={second.url},jobs=1", "--builder", f"linux/amd64={ssh.url},jobs=1"),
            "--retry",
            "--keep-going",
        ],
        env={**os.environ, "HOME": str(ssh.home)},
    )
    started = re.compile(rf"▶ (\S+): building artifact on {re.escape(second.url)} ")

    def on_second() -> str | None:
        return next((m[1] for line in run.lines if (m := started.match(line))), None)

    key = run.wait_for("an entry starting on the second engine", on_second, timeout=600)
    log = ctx.ws.log_path(next(s for s in api.plan(ctx, filters=[key.split("@")[0]], profile="quick")))
    log = out / "logs" / log.name
    run.wait_for(f"{key}'s build running a step on the second engine", lambda: running_a_step(log), timeout=600)
    killed_at = time.monotonic()
    second.kill()
    code = run.finish(timeout=1800)
    second_engine = second.start()  # restarted on the same data-root: what did the dead daemon leave?
    specs = api.plan(ctx, filters=[AMD64_314], profile="quick")
    return FleetRun(
        returncode=code,
        output=run.output,
        out=out,
        killed_key=key,
        killed_at=killed_at,
        entries={e["key"]: e for e in json.loads((out / "report.json").read_text())["entries"]},
        second_tags=tags_of(second_engine, ctx.matrix.repository),
        main_tags={t: engine.image_id(t) for s in specs for t in s.tags},
    )


def test_the_entries_are_split_across_the_engines_and_all_pass(
    fleet_run: FleetRun, second_dockerd: SecondDockerd, sshd: Sshd
) -> None:
    out = fleet_run.output
    assert fleet_run.returncode == 0, out[-4000:]
    assert "3/3 passed" in out and "Traceback" not in out
    assert f"engine {second_dockerd.url} (linux/amd64, amd64, jobs 1)" in out  # the header lists the fleet
    assert f"engine {sshd.url} (linux/amd64, amd64, jobs 1)" in out
    # the second engine got its base from the other engine of the fleet
    assert f"✓ base cpforge/debian:trixie-amd64 copied from {sshd.url} to {second_dockerd.url}" in out
    firsts = {k: (e["attempts"][0]["engine"] if e["attempts"] else e["engine"]) for k, e in fleet_run.entries.items()
              if k.endswith("@quick") and "3.14-" in k and "-trixie-amd64" in k}  # fmt: skip
    assert set(firsts.values()) == {second_dockerd.url, sshd.url}, firsts
    for key, entry in fleet_run.entries.items():
        if key in firsts:
            assert entry["status"] == "passed" and entry["engine"] == sshd.url, (key, entry["engine"])
            assert re.search(rf"✓ {re.escape(key)}: .* on {re.escape(sshd.url)};", out), key  # progress names it


def test_the_killed_engines_entry_is_marked_with_the_cause_and_retried_on_the_other(
    fleet_run: FleetRun, second_dockerd: SecondDockerd, sshd: Sshd
) -> None:
    entry = fleet_run.entries[fleet_run.killed_key]
    (attempt,) = entry["attempts"]
    assert attempt["engine"] == second_dockerd.url and attempt["status"] == "lost"
    assert attempt["problem"].startswith(f"engine {second_dockerd.url} was lost during the build: ")
    assert "lost the connection to the Docker engine" in " ".join(attempt["detail"])
    assert RUNNING in Path(attempt["log"]).read_text()  # the first attempt's log is kept
    assert entry["status"] == "passed" and entry["engine"] == sshd.url
    assert f"✕ engine {second_dockerd.url} is lost" in fleet_run.output
    assert f"↻ {fleet_run.killed_key}: engine {second_dockerd.url} was lost" in fleet_run.output


def test_the_dead_engine_tagged_nothing_and_the_main_engine_holds_the_passed_images(fleet_run: FleetRun) -> None:
    assert fleet_run.second_tags == set()
    for key, entry in fleet_run.entries.items():
        if entry["engine"].startswith("ssh://"):
            for tag in entry["tags"]:
                assert fleet_run.main_tags[tag] == entry["image_id"], (key, tag)


def test_provision_finds_the_artifacts_on_the_engine_that_built_them(
    fleet_run: FleetRun, ctx: api.Context, test_matrix: Path, sshd: Sshd, tmp_path: Path
) -> None:
    """The report names the ssh:// engine; provision reaches it there (its builder image is read)."""
    fleet_ctx = api.Context.create(test_matrix, root=ctx.ws.root, out=fleet_run.out)
    (spec,) = api.plan(fleet_ctx, filters=["3.14-default-trixie-amd64"], profile="quick")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(sshd.home))
        holders = api.holders(fleet_ctx, [spec])
        assert [e.url for e in holders.engines()] == [sshd.url]  # only the recorded engine was reached
        done = api.provision(fleet_ctx, holders, [spec], tmp_path / "dist", "https://example.invalid")
    assert [t.key for t in done.tarballs] == [spec.key] and done.tarballs[0].path.exists()
    # and without its engine the entry is refused naming it, instead of being read from another engine
    gone = Holders(connect=lambda url: Engine.connect(url.replace(str(sshd.port), "1") if url else None))
    with pytest.raises(EngineError, match=rf"{spec.key} was built on {re.escape(sshd.url)}"):
        gone.of(EntryResult.from_json(fleet_run.entries[spec.key]))


def test_one_engine_killed_without_retry_is_exit_5_and_after_a_restart_it_builds_again(
    fleet_run: FleetRun, ctx: api.Context, second_dockerd: SecondDockerd, test_matrix: Path, tmp_path: Path
) -> None:
    """#25: a dead engine mid-build, no other engine and no --retry: a clear error (exit 5), nothing
    tagged; after a restart, a rerun gets into a build step again (then Ctrl-C: that the restarted
    engine builds is what this shows, not that a whole build completes there)."""
    entry = "3.14-default-trixie-amd64"

    def build(out: Path) -> Watched:
        args = ["build", "--filter", entry, "--profile", "quick", "--matrix-file", str(test_matrix)]
        return Watched([*args, "--out", str(out), "--builder", f"linux/amd64={second_dockerd.url}"], dict(os.environ))

    killed = build(tmp_path / "killed")
    log = tmp_path / "killed" / "logs" / f"{entry}.quick.log"
    killed.wait_for("the build running a step on the second engine", lambda: running_a_step(log), timeout=600)
    second_dockerd.kill()
    assert killed.finish(timeout=120) == 5, killed.output[-3000:]
    assert f"engine {second_dockerd.url} was lost during the build" in killed.output
    assert "nothing of it was tagged" in killed.output and "Traceback" not in killed.output
    saved = json.loads((tmp_path / "killed" / "report.json").read_text())["entries"][0]
    assert saved["status"] == "error" and saved["attempts"][0]["status"] == "lost"
    assert saved["tags"] == []

    engine = second_dockerd.start()
    assert tags_of(engine, ctx.matrix.repository) == set()  # the dead daemon tagged nothing
    rerun = build(tmp_path / "rerun")
    log = tmp_path / "rerun" / "logs" / f"{entry}.quick.log"
    rerun.wait_for("the rerun running a step on the restarted engine", lambda: running_a_step(log), timeout=600)
    os.killpg(rerun.proc.pid, signal.SIGINT)
    assert rerun.finish(timeout=120) == 130, rerun.output[-3000:]
    assert "nothing unproven was tagged" in rerun.output
    assert engine.alive() and tags_of(engine, ctx.matrix.repository) == set()


def test_a_tcp_engine_is_reached_with_tls_client_certificates_never_in_the_clear(
    second_dockerd: SecondDockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = second_dockerd.tcp_url
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker of the user's
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_CERT_PATH", str(second_dockerd.tls))
    assert Engine.connect(url).arch in ("amd64", "arm64")
    # a docker context for the URL, with DOCKER_CERT_PATH unset
    monkeypatch.delenv("DOCKER_CERT_PATH")
    config = tmp_path / "docker-config"
    digest = hashlib.sha256(b"second").hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": "second", "Metadata": {}, "Endpoints": {"docker": {"Host": url, "SkipTLSVerify": False}}})
    )
    shutil.copytree(second_dockerd.tls, config / "contexts" / "tls" / digest / "docker")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert Engine.connect(url).alive()
    # no certificate: the TLS endpoint refuses plain HTTP (exit 5); a remote host is not even tried
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    with pytest.raises(EngineError, match=f"cannot reach the Docker daemon at {re.escape(url)}") as err:
        Engine.connect(url)
    assert err.value.exit_code == 5
    with pytest.raises(EngineError, match=r"no TLS client certificate for tcp://build-1\.example\.com:2376"):
        Engine.connect("tcp://build-1.example.com:2376")
