"""A fake Docker engine for fast Builder tests: it records what it was asked and never builds anything.

It speaks the same methods the Builder, smoke and base modules use (build, copy_out, run, image_id,
inspect_image, image_labels, tag, remove_image, cancel), so the build plan's logic (keep-going,
promotion, --jobs, interrupts) is tested without a daemon. The real engine is tested in
tests/integration.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from pathlib import Path
from typing import IO, Any

from cpforge.engine import RunResult, _interrupted

from .test_smoke_expectations import facts_for


class FakeEngine:
    def __init__(
        self,
        specs: dict[str, Any],
        *,
        fail: set[str] = frozenset(),
        block: set[str] = frozenset(),
        url: str = "fake://engine",
        arch: str = "amd64",
        die_on: set[str] = frozenset(),
        seconds: float = 0.05,
    ) -> None:
        self.specs = specs  # entry id → BuildSpec (to answer the smoke probe truthfully)
        self.fail = set(fail)  # entry ids whose artifact build fails (a configure error in the log)
        self.block = set(block)  # entry ids whose artifact build runs until cancel()
        self.url = url
        self.arch = arch  # the engine host's architecture, as `docker info` would say
        self.host = "buildhost"  # the engine host's name (`docker info`'s Name)
        self.die_on = set(die_on)  # entry ids whose artifact build kills the daemon (EngineError, then silence)
        self.seconds = seconds  # how long each build takes
        self.dead = False
        self.builds: list[dict[str, Any]] = []  # every build request: entry, target, platform, buildargs
        self.tags: dict[str, str] = {s.base_image: "sha256:base" for s in specs.values()}
        self.tags.update({s.builder_image: "sha256:base" for s in specs.values()})
        self.images: set[str] = set(self.tags.values())
        self.calls: list[tuple[str, str]] = []
        self.labelled: list[tuple[str, dict[str, str]]] = []  # (image, the build's labels), oldest first
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._wake = threading.Event()  # set by cancel() and kill(): ends the builds under way

    # -- cancellation, as cpforge.engine.Engine
    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._wake.set()

    def alive(self, timeout: float = 10.0) -> bool:
        return not self.dead

    def kill(self) -> None:
        """The daemon dies: every call from now on fails as a real lost engine's do."""
        self.dead = True
        self._wake.set()  # wakes blocked builds; they then fail with the lost connection

    def _check_alive(self, doing: str) -> None:
        if self.dead:
            from cpforge.errors import EngineError

            raise EngineError(f"lost the connection to the Docker engine {self.url} ({doing}: ConnectionError)")

    def save(self, ref: str) -> Any:
        self._check_alive("save")
        self.calls.append(("save", ref))
        return iter([json.dumps({"ref": ref, "id": self.tags[ref]}).encode()])

    def load(self, data: Any) -> None:
        self._check_alive("load")
        doc = json.loads(b"".join(data))
        self.calls.append(("load", doc["ref"]))
        self.tags[doc["ref"]] = doc["id"]
        self.images.add(doc["id"])

    # -- images
    def image_id(self, ref: str) -> str | None:
        self._check_alive("image_id")
        return self.tags.get(ref) or (ref if ref in self.images else None)

    def inspect_image(self, ref: str) -> dict[str, Any]:
        iid = self.image_id(ref)
        return {"Id": iid, "RepoTags": sorted(t for t, i in self.tags.items() if i == iid and "debian" not in t)}

    def image_labels(self, ref: str) -> dict[str, str]:
        return {}

    def pull(self, ref: str, platform: str) -> bool:
        """No registry is reachable (as on this project's machines)."""
        self.calls.append(("pull", ref))
        return False

    def newest_labelled(self, labels: dict[str, str]) -> str | None:
        self._check_alive("images")
        found = [i for i, lab in self.labelled if i in self.images and labels.items() <= lab.items()]
        return found[-1] if found else None

    def tag(self, image: str, ref: str) -> None:
        self.calls.append(("tag", ref))
        self.tags[ref] = image

    def remove_image(self, ref: str) -> None:
        self.calls.append(("remove", ref))
        self.tags.pop(ref, None)
        self.images.discard(ref)

    # -- builds
    def build(self, context: IO[bytes], *, target: str | None = None, log: IO[str], **kw: Any) -> str:
        self._check_alive("starting a build")
        if self._cancelled.is_set():
            raise _interrupted("interrupted before a build")
        dockerfile = tarfile.open(fileobj=context).extractfile("Dockerfile")
        assert dockerfile is not None
        text = dockerfile.read().decode()
        found = re.search(r'^# Entry +(\S+)|io\.cpforge\.entry="([^"]+)"', text, re.M)
        assert found, text[:300]
        entry = found.group(1) or found.group(2)
        self.calls.append(("build", f"{entry}:{target or 'runtime'}"))
        recorded = {k: kw.get(k) for k in ("platform", "buildargs", "cache_from")}
        self.builds.append({"entry": entry, "target": target, **recorded})
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            log.write(f"Step 1/2 : building {entry}\n")
            if target == "artifact" and kw.get("on_line"):  # the builder stage's layer, as the engine says it
                layer = hashlib.sha256(f"{entry}:builder".encode()).hexdigest()[:12]
                self.images.add(layer)
                kw["on_line"](f" ---> {layer}")
            if target == "artifact" and entry in self.die_on:
                self.kill()
            if target == "artifact" and entry in self.block:
                while not self._wake.wait(0.05):
                    pass
                self._check_alive("during a build")
                raise _interrupted("the build was interrupted")
            self._wake.wait(self.seconds)
            self._check_alive("during a build")
            if self._cancelled.is_set():
                raise _interrupted("the build was interrupted")
            if target == "artifact" and entry in self.fail:
                log.write("checking for gcc... gcc\nconfigure: error: no acceptable C compiler found in $PATH\n")
                from cpforge.errors import BuildError

                raise BuildError("docker build failed: The command '/usr/local/sbin/cpforge-build' returned 1")
        finally:
            with self._lock:
                self.running -= 1
        iid = "sha256:" + hashlib.sha256(f"{entry}:{target}".encode()).hexdigest()
        self.images.add(iid)
        if kw.get("labels"):
            self.labelled.append((iid, dict(kw["labels"])))
        return iid

    def copy_out(self, image: str, path: str, dest: Path, platform: str | None = None) -> Path:
        self._check_alive("copy_out")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith("cpython.tar"):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                info = tarfile.TarInfo("usr/local/bin/python3")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"\x7fELF"))
            dest.write_bytes(buf.getvalue())
        else:
            dest.write_text("libc6\n")
        return dest

    def run(self, image: str, command: list[str], **kw: Any) -> RunResult:
        self._check_alive("run")
        entry = next(e for e in self.specs if hashlib.sha256(f"{e}:None".encode()).hexdigest() in image)
        self.calls.append(("run", entry))  # a smoke test (or SBOM probe) of the entry's image, here
        return RunResult(0, json.dumps(facts_for(self.specs[entry])), "")
