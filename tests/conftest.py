from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def sigint_raises_keyboardinterrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in every test, as at a terminal, even when the run
    inherited SIGINT ignored (a background job of a non-interactive shell): the tests that send it
    to themselves would otherwise wait for an interrupt that never comes."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
