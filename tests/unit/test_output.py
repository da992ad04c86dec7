"""What tasks print and the exit code they end with (cpforge/output.py)."""

from __future__ import annotations

from pathlib import Path

from cpforge import output
from cpforge.errors import BuildError, RenderError, SmokeError
from cpforge.progress import Style
from cpforge.publish import PublishResult
from cpforge.report import EntryResult
from cpforge.verify import VerifyError, VerifyResult

UNICODE, ASCII = Style(), Style(unicode=False)


def result(eid: str, status: str, *problems: str) -> EntryResult:
    tags = [f"cpforge/python:{eid}"] if status == "passed" else []
    return EntryResult(
        key=f"{eid}@quick", id=eid, profile="quick", version="3.13.5", variant="default", platform="linux/amd64",
        status=status, tags=tags, problems=list(problems),
    )  # fmt: skip


def test_all_passed_is_no_error() -> None:
    out = output.summary([result("a", "passed")], Path("build/report.json"), "1m02s", UNICODE)
    assert out.error is None
    assert out.lines[1] == "1/1 passed in 1m02s; report: build/report.json"
    assert out.lines[2].split() == ["✓", "a", "passed", "cpforge/python:a"]


def test_a_build_error_exits_7_whatever_else_failed() -> None:
    results = [
        result("a", "failed", "smoke: gil_enabled is True"),
        result("b", "error", "make: *** [Makefile] Error 2\nmore"),
        result("c", "skipped", "not built: an earlier entry failed"),
    ]
    out = output.summary(results, Path("r.json"), "3s", ASCII)
    assert isinstance(out.error, BuildError) and out.error.exit_code == 7
    assert "1 entry did not build: b" in str(out.error)
    assert out.lines[3].split()[:3] == ["FAIL", "b", "error"] and out.lines[3].endswith("Error 2")


def test_a_failed_smoke_test_exits_8() -> None:
    out = output.summary([result("a", "passed"), result("b", "failed", "x")], Path("r"), "1s", UNICODE)
    assert isinstance(out.error, SmokeError) and out.error.exit_code == 8
    assert "1 entry did not pass: b" in str(out.error)


def test_render_drift_exits_3() -> None:
    out = output.rendered(["dockerfiles/a/Dockerfile.quick"], check=True)
    assert isinstance(out.error, RenderError) and out.error.exit_code == 3
    assert out.lines == ("drift: dockerfiles/a/Dockerfile.quick",)
    assert output.rendered([], check=True) == output.Outcome(("dockerfiles/ matches the templates",))


def test_verify_names_what_differs_and_exits_11() -> None:
    same = VerifyResult("a@quick", ("s1", "s1"), (["l1", "l2"], ["l1", "l2"]), artifact_same=True, layers_same=True)
    differs = VerifyResult(
        "b@quick", ("s1", "s2"), (["l1", "l2"], ["l1", "l3"]), layers_same=False, differences=["usr/bin/x: 4 bytes"]
    )
    out = output.verified([same, differs], ASCII)
    assert isinstance(out.error, VerifyError) and out.error.exit_code == 11
    assert out.lines[0].startswith("OK a@quick: reproducible")
    assert "FAIL b@quick: NOT reproducible" in out.lines
    assert "    layer 1: l2 vs l3" in out.lines and "    usr/bin/x: 4 bytes" in out.lines


def test_publish_lists_skipped_entries_and_exits_1() -> None:
    res = PublishResult(pushed=["3.13"], unchanged=["3.13.5", "3.13.5"], skipped=["b@quick: smoke test failed"])
    out = output.published(res, "127.0.0.1:5000/x")
    assert out.lines[-1] == "1 tag(s) changed, 1 unchanged, 1 skipped"
    assert "  SKIPPED   b@quick: smoke test failed" in out.lines
    assert out.error is not None and out.error.exit_code == 1
    assert output.published(PublishResult(pushed=["3.13"]), "r/x").error is None
