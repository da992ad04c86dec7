"""The decisive line of a failed build's log: why it failed, in the tool's own words.

A failed `docker build` only says that a RUN step "returned a non-zero code". The reason is in the
log: configure's `configure: error:` line, the first compiler or linker error, apt's `E:` line, or
one of cpforge's own build scripts' messages. The summary and the report show that line.
"""

from __future__ import annotations

import re
from pathlib import Path

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Most specific first: the first pattern that matches anywhere wins, and within a pattern the first
# matching line (the first compiler error is the cause; later ones are often its consequences).
PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^configure: error: .+"),
    re.compile(r"^cpforge[a-z-]*: .+"),  # cpforge-build, cpforge-build-python, cpforge (deps)
    re.compile(r"^\S+:\d+(:\d+)?: (fatal )?error: .+"),  # gcc/clang: file:line:col: error: …
    re.compile(r"^(/usr/bin/)?(\S+-)?ld(\.\w+)?: .*(cannot find|undefined reference|error).*"),
    re.compile(r"^\S*clang(-\d+)?: error: .+"),
    re.compile(r"^E: .+"),  # apt
    re.compile(r"^(\w+\.)*\w+(Error|Exception): .+"),  # a Python traceback's last line
    re.compile(r"^make(\[\d+\])?: \*\*\* .+"),
)


def decisive_line(text: str) -> str | None:
    """The line of ``text`` that best says why a build failed, or None."""
    lines = [ANSI_RE.sub("", ln).strip() for ln in text.splitlines()]
    for pattern in PATTERNS:
        for line in lines:
            if pattern.match(line):
                return line[:500]
    return None


def decisive_line_of(log: Path) -> str | None:
    """The decisive line of a log file (None when it is missing or says nothing recognisable)."""
    try:
        return decisive_line(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
