"""Progress lines for long work: per-entry status, elapsed time, log path. Logs go to files."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def fmt_seconds(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


class Progress:
    """Thread-safe status printer with a heartbeat for entries that are still running."""

    def __init__(self, total: int, stream: TextIO | None = None, heartbeat: float = 30.0) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._running: dict[str, tuple[float, str]] = {}
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

    def say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def start(self, key: str, what: str) -> None:
        with self._lock:
            self._running[key] = (time.monotonic(), what)
        self.say(f"▶ {key}: {what}")

    def step(self, key: str, what: str) -> None:
        with self._lock:
            if key in self._running:
                self._running[key] = (self._running[key][0], what)

    def done(self, key: str, ok: bool, text: str) -> None:
        with self._lock:
            self._running.pop(key, None)
        self.say(f"{'✓' if ok else '✕'} {key}: {text}")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                items = list(self._running.items())
            for key, (t0, what) in items:
                self.say(f"  … {key}: {fmt_seconds(time.monotonic() - t0)} — {what}")
