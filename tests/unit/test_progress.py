"""Progress output where it goes: ASCII when the stream cannot encode ✓, colour only on a terminal
without NO_COLOR, and GitHub Actions groups and error annotations under GITHUB_ACTIONS=true."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from cpforge.progress import Progress, Style, escape_data, escape_property, github_group

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def ascii_stream() -> tuple[io.BytesIO, io.TextIOWrapper]:
    raw = io.BytesIO()
    return raw, io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)


def test_a_stream_that_cannot_encode_the_symbols_gets_ascii() -> None:
    raw, stream = ascii_stream()
    style = Style.detect(stream, env={})
    assert not style.unicode and not style.color and not style.github
    p = Progress(total=2, stream=stream, heartbeat=0)
    p.start("a", "building artifact … → runtime")
    p.done("a", True, "1.0s; smoke ok → cpforge/python:3.14")
    p.done("b", False, "error after 2.0s: café")
    p.say("✓ base cpforge/debian:trixie-amd64 — present")
    assert raw.getvalue().decode("ascii").splitlines() == [
        ".. a: building artifact ... -> runtime",
        "OK a: 1.0s; smoke ok -> cpforge/python:3.14",
        "FAIL b: error after 2.0s: caf?",
        "OK base cpforge/debian:trixie-amd64 - present",
    ]


def test_utf8_keeps_the_symbols() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    style = Style.detect(stream, env={})
    assert style.unicode and style.mark(True) == "✓" and style.mark(False) == "✕"


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert Style.detect(Terminal(), env={}).color
    assert Style.detect(Terminal(), env={}).mark(True) == "\033[32m✓\033[0m"
    assert not Style.detect(Terminal(), env={"NO_COLOR": "1"}).color
    assert not Style.detect(Terminal(), env={"TERM": "dumb"}).color
    assert not Style.detect(io.StringIO(), env={}).color  # a pipe or a file
    out = Terminal()
    p = Progress(total=1, stream=out, heartbeat=0, style=Style.detect(out, env={"NO_COLOR": "1"}))
    p.done("a", True, "ok")
    assert "\033[" not in out.getvalue()


def test_github_actions_folds_each_entry_log_and_annotates_failures(tmp_path: Path) -> None:
    ok_log, bad_log = tmp_path / "ok.log", tmp_path / "bad.log"
    ok_log.write_text("Step 1/9 : FROM x\n::warning::from the log, not a command\n")
    bad_log.write_text("configure: error: no C compiler\n")
    out = io.StringIO()
    p = Progress(total=2, stream=out, heartbeat=0, style=Style.detect(out, env={"GITHUB_ACTIONS": "true"}))
    p.attach_logs({"3.13-default-trixie-amd64@quick": ok_log})
    p.done("3.13-default-trixie-amd64@quick", True, "1m02s; smoke ok")
    p.done("3.13-jit-trixie-amd64@quick", False, "error after 3s", problem="build failed:\n50% done", log=bad_log)
    lines = out.getvalue().splitlines()
    assert lines[0] == "✓ 3.13-default-trixie-amd64@quick: 1m02s; smoke ok"
    assert lines[1] == f"::group::3.13-default-trixie-amd64@quick — log: {ok_log}"
    token = re.fullmatch(r"::stop-commands::([0-9a-f]{32})", lines[2])
    assert token, lines[2]
    assert lines[3:7] == [
        "Step 1/9 : FROM x",
        "::warning::from the log, not a command",  # inert: commands are stopped around the log
        f"::{token[1]}::",
        "::endgroup::",
    ]
    assert lines[7] == "✕ 3.13-jit-trixie-amd64@quick: error after 3s"
    assert lines[8].startswith("::group::3.13-jit-trixie-amd64@quick") and lines[-2] == "::endgroup::"
    assert lines[-1] == "::error title=3.13-jit-trixie-amd64@quick::build failed:%0A50%25 done"


def test_without_github_actions_there_are_no_workflow_commands(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("line\n")
    out = io.StringIO()
    p = Progress(total=1, stream=out, heartbeat=0, style=Style.detect(out, env={"GITHUB_ACTIONS": "false"}))
    p.done("x", False, "failed", log=log)
    assert out.getvalue() == "✕ x: failed\n"


def test_the_group_holds_the_tail_of_a_long_log(tmp_path: Path) -> None:
    log = tmp_path / "long.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    lines = github_group("e", log, limit=3)
    assert lines[2] == f"… 7 earlier lines in {log}"
    assert lines[3:6] == ["line 7", "line 8", "line 9"]
    assert github_group("e", None) == []
    assert github_group("e", tmp_path / "gone.log") == []  # e.g. an entry that was never built
    assert github_group("e", tmp_path)[0].startswith(f"::group::e (log {tmp_path} unreadable: ")


def test_workflow_command_escaping() -> None:
    assert escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert escape_property("a:b,c") == "a%3Ab%2Cc"


def test_a_real_process_under_actions_with_an_ascii_stdout(tmp_path: Path) -> None:
    log = tmp_path / "e.log"
    log.write_text("compiling …\n")
    code = (
        "from pathlib import Path; from cpforge.progress import Progress\n"
        f"p = Progress(total=1, heartbeat=0); p.attach_logs({{'e@quick': Path({str(log)!r})}})\n"
        "p.start('e@quick', 'building'); p.done('e@quick', False, 'failed ✕', problem='smoke: gil_enabled')\n"
    )
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "GITHUB_ACTIONS": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True, timeout=60)
    out = proc.stdout.decode("ascii").splitlines()
    assert out[0] == ".. e@quick: building"
    assert out[1] == "FAIL e@quick: failed FAIL"
    assert out[2] == f"::group::e@quick - log: {log}"
    assert "compiling ..." in out and out[-2] == "::endgroup::"
    assert out[-1] == "::error title=e@quick::smoke: gil_enabled"
