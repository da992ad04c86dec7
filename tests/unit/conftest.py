"""`pytest tests/unit` takes its settings from tests/unit/pytest.ini, so pytest looks for conftest
files only from here down: tests/conftest.py's autouse fixture is brought in by name."""

from __future__ import annotations

from tests.conftest import sigint_raises_keyboardinterrupt

__all__ = ["sigint_raises_keyboardinterrupt"]
