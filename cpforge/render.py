"""Jinja2 rendering of the committed Dockerfiles under dockerfiles/, and the drift check.

Knows nothing about Docker: it turns BuildSpecs into text.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from .errors import RenderError
from .fsutil import atomic_write_text
from .matrix import BuildSpec, Platform

TEMPLATE = "Dockerfile.j2"
RUNTIME_TEMPLATE = "runtime.j2"
# The scripts every rendered Dockerfile COPYs from the build context (repository-relative).
CONTEXT_SCRIPTS = ("scripts/build-cpython.sh", "scripts/build-python.sh", "scripts/install-build-deps.sh")


def deps_command(spec: BuildSpec) -> list[str]:
    """The builder stage's install-build-deps command: the target's -dev packages, the JIT's LLVM,
    and a clang the profile compiles with (gcc, the default, comes with build-essential anyway)."""
    cmd = ["/usr/local/sbin/cpforge-install-build-deps", spec.platform.arch]
    if spec.variant.jit != "no":
        cmd += ["--jit", str(spec.llvm)]
    if spec.profile.clang is not None:
        cmd += ["--compiler", spec.profile.compiler]
    return cmd


def labels(spec: BuildSpec) -> list[tuple[str, str]]:
    """Image labels that depend only on the spec (revision is added at build time)."""
    created = datetime.fromtimestamp(spec.epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return sorted(
        {
            "org.opencontainers.image.title": f"CPython {spec.version} ({spec.variant.name})",
            "org.opencontainers.image.version": spec.version,
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.source": "https://github.com/cpforge/cpforge",
            "io.cpforge.entry": spec.id,
            "io.cpforge.profile": spec.profile.name,
            "io.cpforge.variant": spec.variant.name,
            "io.cpforge.cpython.version": spec.version,
            "io.cpforge.cpython.configure-flags": json.dumps(list(spec.configure_flags)),
            "io.cpforge.source.sha256": spec.source.sha256,
        }.items()
    )


def artifact_labels(spec: BuildSpec) -> dict[str, str]:
    """The labels of an entry's `artifact` stage image: they find its last build on an engine when no
    report knows it (a fresh clone, another workspace). Nothing that changes from run to run."""
    kept = ("io.cpforge.entry", "io.cpforge.profile")  # the runtime image's labels that name the entry
    return {**{k: v for k, v in labels(spec) if k in kept}, "io.cpforge.stage": "artifact"}


def build_python_labels(spec: BuildSpec, builder: Platform) -> dict[str, str]:
    """The labels of a cross build's `build-python` stage image: what its instructions depend on (the
    release and its source, the distro, the target, the builder), so its newest build on an engine is
    found and named as the cache source of the next (cpforge/build.py)."""
    kept = ("io.cpforge.cpython.version", "io.cpforge.source.sha256")  # the runtime image's, for the release
    return {
        **{k: v for k, v in labels(spec) if k in kept},
        "io.cpforge.stage": "build-python",
        "io.cpforge.distro": spec.distro.name,
        "io.cpforge.target-arch": spec.platform.arch,
        "io.cpforge.builder-arch": builder.arch,
    }


@functools.lru_cache(maxsize=8)
def _environment(template_dir: str) -> jinja2.Environment:
    """One environment per template directory: it compiles each template once, and recompiles it
    when the file changes (the loader checks its mtime on every use)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - Dockerfiles, not HTML
    )


@dataclass(frozen=True)
class Renderer:
    template_dir: Path

    def _env(self) -> jinja2.Environment:
        return _environment(str(self.template_dir))

    def _context(self, spec: BuildSpec) -> dict[str, object]:
        return {
            "spec": spec,
            "epoch": spec.epoch,
            "labels": labels(spec),
            "deps_command": deps_command(spec),
            "build_command": ["/usr/local/sbin/cpforge-build", spec.version, *spec.configure_flags],
        }

    def dockerfile(self, spec: BuildSpec) -> str:
        """The committed, standalone multi-stage Dockerfile of an entry."""
        try:
            text = self._env().get_template(TEMPLATE).render(**self._context(spec))
        except jinja2.TemplateError as exc:
            raise RenderError(
                f"cannot render {TEMPLATE} for {spec.id}: {exc}", hint=f"fix the template in {self.template_dir}"
            ) from exc
        return text.rstrip("\n") + "\n"

    def runtime_dockerfile(self, spec: BuildSpec) -> str:
        """The runtime stage alone, reading cpython.tar from its build context (artifact first)."""
        try:
            module = self._env().get_template(RUNTIME_TEMPLATE).make_module()
            text = str(module.stage(spec, labels(spec), spec.epoch, True))  # type: ignore[attr-defined]
        except jinja2.TemplateError as exc:
            raise RenderError(
                f"cannot render {RUNTIME_TEMPLATE} for {spec.id}: {exc}",
                hint=f"fix the template in {self.template_dir}",
            ) from exc
        return text.rstrip("\n") + "\n"

    def expected(self, specs: Sequence[BuildSpec]) -> dict[str, str]:
        """Path (relative to the repo root) → content, for every spec."""
        return {spec.dockerfile: self.dockerfile(spec) for spec in specs}


def write(root: Path, renderer: Renderer, specs: Sequence[BuildSpec]) -> list[str]:
    """Write rendered Dockerfiles that differ; remove ones no longer in the matrix. Returns changes.

    ``root`` is the matrix file's directory; the specs name their own Dockerfiles directory in it
    (`dockerfiles`, or `dockerfiles-<stem>` for a matrix file not named matrix.yaml), so rendering one
    matrix file never touches what another rendered."""
    expected = renderer.expected(specs)
    changed: list[str] = []
    for rel, text in sorted(expected.items()):
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            changed.append(rel)
    for rel in _stale(root, specs, expected):
        (root / rel).unlink()
        changed.append(rel)
    for base in _dirs(root, specs):
        for d in sorted(base.glob("*"), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                shutil.rmtree(d)
    return changed


def check(root: Path, renderer: Renderer, specs: Sequence[BuildSpec]) -> list[str]:
    """Committed Dockerfiles that differ from what the templates render, or are missing or stale."""
    expected = renderer.expected(specs)
    drift = [
        rel
        for rel, text in sorted(expected.items())
        if not (root / rel).exists() or (root / rel).read_text(encoding="utf-8") != text
    ]
    return drift + _stale(root, specs, expected)


def _dirs(root: Path, specs: Sequence[BuildSpec]) -> list[Path]:
    """The Dockerfiles directories of ``specs`` (one per matrix file)."""
    return sorted({root / s.dockerfiles_dir for s in specs})


def _stale(root: Path, specs: Sequence[BuildSpec], expected: dict[str, str]) -> list[str]:
    found = {
        str(p.relative_to(root)) for base in _dirs(root, specs) for p in base.glob("*/Dockerfile*") if p.is_file()
    }
    return sorted(found - set(expected))
