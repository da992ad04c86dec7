"""What the command line refuses before it touches Docker: exit codes and one clear sentence each.
(Moved from the integration tests: none of this needs a daemon.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NO_DAEMON = "unix:///nonexistent/docker.sock"
INJECTED = 'configure: [--enable-optimizations, "--with-lto; touch /pwned"]'


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )


def test_malformed_matrix_and_injected_flag_are_refused_before_the_engine(tmp_path: Path) -> None:
    good = (ROOT / "matrix.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.replace("variants:", "varients:"))
    # An unreachable engine: had the matrix been accepted, this would exit 5, not 2.
    proc = invoke("build", "--matrix", "--matrix-file", str(bad), "--out", str(tmp_path), "--engine", NO_DAEMON)
    assert proc.returncode == 2, proc.stderr
    line = next(i for i, ln in enumerate(bad.read_text().splitlines(), 1) if ln.startswith("varients:"))
    assert f"{bad}:{line}: unknown key `varients`" in proc.stderr
    assert "did you mean `variants`?" in proc.stderr and "Traceback" not in proc.stderr

    inj = tmp_path / "inj.yaml"
    inj.write_text(good.replace("configure: [--enable-optimizations, --with-lto]", INJECTED))
    proc = invoke("build", "--matrix", "--matrix-file", str(inj), "--out", str(tmp_path), "--engine", NO_DAEMON)
    assert proc.returncode == 2
    assert "is not a plain `--flag` or `--flag=value`" in proc.stderr
    assert not (tmp_path / "report.json").exists()


def test_a_combination_the_release_refuses_is_refused_at_load(tmp_path: Path) -> None:
    refused = tmp_path / "m.yaml"
    refused.write_text((ROOT / "matrix.yaml").read_text().replace('  - "3.14-freethreaded-jit-*"', ""))
    proc = invoke("matrix", "--matrix-file", str(refused))
    assert proc.returncode == 2
    assert "cannot be built for CPython 3.14.7" in proc.stderr
    assert "--enable-experimental-jit cannot be used with --disable-gil" in proc.stderr
    assert 'fix: add "3.14-freethreaded-jit-*" to `exclude:`' in proc.stderr


def test_missing_daemon_is_one_clear_sentence(tmp_path: Path) -> None:
    proc = invoke("build", "--engine", NO_DAEMON, "--out", str(tmp_path))
    assert proc.returncode == 5
    assert "cannot reach the Docker daemon" in proc.stderr and "dockerd" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_render_check_passes_on_main() -> None:
    proc = invoke("render", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
