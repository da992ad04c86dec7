"""Progress lines for long work: per-entry status, elapsed time, log path. Logs go to files.

The output adapts to where it goes (`Style`):
  * a stream that cannot encode ✓ (say, PYTHONIOENCODING=ascii) gets plain-ASCII symbols (OK, FAIL, ..);
  * a terminal gets a coloured ✓/✕ unless NO_COLOR is set (https://no-color.org) or TERM=dumb;
  * under GitHub Actions (GITHUB_ACTIONS=true) each finished entry's log is folded into a
    ``::group::`` and a failure becomes an ``::error::`` annotation titled with the entry.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

# The non-ASCII symbols cpforge prints, and what replaces each on a stream that cannot encode it.
ASCII = {"✓": "OK", "✕": "FAIL", "▶": "..", "…": "...", "→": "->", "—": "-", "≥": ">=", "×": "x"}
# At most this many lines of an entry's log are folded into its GitHub Actions group (the tail).
LOG_LINES = 3000
GREEN, RED, RESET = "\033[32m", "\033[31m", "\033[0m"


def fmt_seconds(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def can_encode(stream: TextIO, text: str = "".join(ASCII)) -> bool:
    """Whether ``stream`` can write ``text`` (the symbols above) without an encoding error. A stream
    without an encoding (io.StringIO) holds any text."""
    encoding = getattr(stream, "encoding", None)
    if encoding is None:
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def escape_data(text: str) -> str:
    """A GitHub Actions workflow command's message: %, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (e.g. title=): also : and , escaped."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Style:
    """How to write for one stream: Unicode symbols or ASCII, colour or not, GitHub Actions or not."""

    unicode: bool = True
    color: bool = False
    github: bool = False

    @classmethod
    def detect(cls, stream: TextIO, env: Mapping[str, str] | None = None) -> Style:
        env = os.environ if env is None else env
        return cls(
            unicode=can_encode(stream),
            color=_isatty(stream) and not env.get("NO_COLOR") and env.get("TERM") != "dumb",
            github=env.get("GITHUB_ACTIONS") == "true",
        )

    def mark(self, ok: bool) -> str:
        """✓ or ✕ (OK or FAIL), in green or red on a colour terminal."""
        symbol = self.text("✓" if ok else "✕")
        if not self.color:
            return symbol
        return f"{GREEN if ok else RED}{symbol}{RESET}"

    def text(self, text: str) -> str:
        """``text`` with its symbols spelled in ASCII when the stream cannot encode them."""
        if self.unicode:
            return text
        for symbol, plain in ASCII.items():
            text = text.replace(symbol, plain)
        return text.encode("ascii", "replace").decode("ascii")


class Progress:
    """Thread-safe status printer with a heartbeat for entries that are still running."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        heartbeat: float = 30.0,
        style: Style | None = None,
    ) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.heartbeat = heartbeat
        self.style = style or Style.detect(self.stream)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[float, str]] = {}
        self._logs: dict[str, Path] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()

    def __enter__(self) -> Progress:
        if self.heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=1)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def attach_logs(self, logs: Mapping[str, Path]) -> None:
        """Where each entry (by key) writes its log: folded into the CI output when it finishes."""
        with self._lock:
            self._logs.update(logs)

    def say(self, text: str) -> None:
        self._write([text])

    def start(self, key: str, what: str) -> None:
        with self._lock:
            self._running[key] = (time.monotonic(), what)
        self.say(f"▶ {key}: {what}")

    def step(self, key: str, what: str) -> None:
        with self._lock:
            if key in self._running:
                self._running[key] = (self._running[key][0], what)

    def done(self, key: str, ok: bool, text: str, *, problem: str | None = None, log: Path | None = None) -> None:
        """One entry finished. Under GitHub Actions its log follows, folded, and a failure is annotated
        with ``problem`` (default: ``text``)."""
        with self._lock:
            self._running.pop(key, None)
            log = log or self._logs.get(key)
        lines = [f"{self.style.mark(ok)} {key}: {text}"]
        if self.style.github:
            lines += github_group(key, log)
            if not ok:
                lines.append(f"::error title={escape_property(key)}::{escape_data(problem or text)}")
        self._write(lines)

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            for line in lines:
                print(self.style.text(line), file=self.stream)
            self.stream.flush()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                items = list(self._running.items())
            for key, (t0, what) in items:
                self.say(f"  … {key}: {fmt_seconds(time.monotonic() - t0)} — {what}")


def github_group(title: str, log: Path | None, limit: int = LOG_LINES) -> list[str]:
    """The lines that fold ``log`` (its last ``limit`` lines) into a GitHub Actions group.

    The log is framed by ``::stop-commands::`` so nothing in it is taken for a workflow command."""
    if log is None or not log.exists():
        return []
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return [f"::group::{escape_data(title)} (log {log} unreadable: {exc.strerror})", "::endgroup::"]
    token = secrets.token_hex(16)
    head = [f"::group::{escape_data(f'{title} — log: {log}')}", f"::stop-commands::{token}"]
    if len(text) > limit:
        head.append(f"… {len(text) - limit} earlier lines in {log}")
    return [*head, *text[-limit:], f"::{token}::", "::endgroup::"]
