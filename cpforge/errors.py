"""One error hierarchy. Each error says what failed and what to do, and has an exit code."""

from __future__ import annotations

import textwrap


class CpforgeError(Exception):
    """Base class: a user-facing failure with an exit code and a hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = textwrap.dedent(message).strip()
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class MatrixError(CpforgeError):
    """matrix.yaml is malformed or inconsistent."""

    exit_code = 2

    def __init__(self, message: str, *, path: str, line: int | None = None, hint: str | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}", hint=hint)
        self.path = path
        self.line = line


class SelectionError(CpforgeError):
    """A filter or entry id selects nothing."""

    exit_code = 2


class RenderError(CpforgeError):
    """Template rendering failed or committed Dockerfiles drifted."""

    exit_code = 3


class SourceError(CpforgeError):
    """A source tarball could not be fetched or failed verification."""

    exit_code = 4


class EngineError(CpforgeError):
    """The Docker engine is unreachable or refused a request."""

    exit_code = 5


class BaseImageError(CpforgeError):
    """A base image could not be pulled nor bootstrapped."""

    exit_code = 6


class BuildError(CpforgeError):
    """A build failed."""

    exit_code = 7


class SmokeError(CpforgeError):
    """A smoke test failed."""

    exit_code = 8


class ReportError(CpforgeError):
    """The build report is missing or unreadable."""

    exit_code = 9


class Interrupted(CpforgeError):
    """Interrupted by SIGINT or SIGTERM: nothing unproven was tagged; rerun to continue from the layer cache."""

    exit_code = 130
