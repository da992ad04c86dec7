"""One error hierarchy. Each error says what failed and what to do, and has its own exit code.

Every error class cpforge raises lives here, each with one exit code no other class uses. The first
line of each docstring is what the exit code means to a user: `exit_codes()` returns the table and
`exit_code_table_markdown()` renders it for the README (tests/unit/test_errors.py checks both).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

SUCCESS = "Every selected entry passed, or the task did what it was asked."


class CpforgeError(Exception):
    """Base class: a user-facing failure with an exit code and a hint. Never raised itself."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = textwrap.dedent(message).strip()
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class EntriesFailed(CpforgeError):
    """Some selected entries were left out (publish: SKIPPED, with the reason); the others were done."""

    exit_code = 1


class UsageError(CpforgeError):
    """A command-line option is missing or has a bad value (EX_USAGE); nothing was done."""

    exit_code = 64


class MatrixError(CpforgeError):
    """The matrix file is malformed or inconsistent; the message names the file and line."""

    exit_code = 2

    def __init__(self, message: str, *, path: str, line: int | None = None, hint: str | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}", hint=hint)
        self.path = path
        self.line = line


class RenderError(CpforgeError):
    """Template rendering failed, or the committed Dockerfiles differ from the templates (drift)."""

    exit_code = 3


class SourceError(CpforgeError):
    """A source tarball could not be fetched or failed its sha256 or signature check."""

    exit_code = 4


class EngineError(CpforgeError):
    """The Docker engine is unreachable or refused a request."""

    exit_code = 5


class BaseImageError(CpforgeError):
    """A base image could not be pulled nor bootstrapped."""

    exit_code = 6


class BuildError(CpforgeError):
    """A docker build failed, or an image or file it should have made is missing."""

    exit_code = 7


class SmokeError(CpforgeError):
    """An entry failed its smoke test (or had no image to test); nothing of it was tagged."""

    exit_code = 8


class ReportError(CpforgeError):
    """The build report is missing or unreadable."""

    exit_code = 9


class LockError(CpforgeError):
    """The lock is missing, stale, or pins something that is not what will be built."""

    exit_code = 10


class VerifyError(CpforgeError):
    """A rebuild is not reproducible, or there is no passing build to compare it with."""

    exit_code = 11


class RegistryError(CpforgeError):
    """The registry is unreachable, refused the credentials, or answered with an error."""

    exit_code = 12


class ProvisionError(CpforgeError):
    """A CI interpreter tarball could not be made from a build (provisioning refused)."""

    exit_code = 13


class BenchError(CpforgeError):
    """A benchmark could not run."""

    exit_code = 14


class PublishError(CpforgeError):
    """Publishing was refused: an exact tag would move, or a pushed image is not what was pushed."""

    exit_code = 15


class SelectionError(CpforgeError):
    """A filter, platform, profile or entry id selects nothing."""

    exit_code = 16


class Interrupted(CpforgeError):
    """Interrupted by SIGINT or SIGTERM: nothing unproven was tagged; rerun to continue from the layer cache."""

    exit_code = 130


@dataclass(frozen=True, kw_only=True)
class ExitCode:
    code: int
    name: str  # the error class, "" for success
    description: str  # the first line of its docstring


class UpdateError(CpforgeError):
    """Release metadata or a release could not be read or verified (update, outdated)."""

    exit_code = 17


class UpdateAvailable(CpforgeError):
    """`invoke update --check`: a newer fetchable patch release exists; nothing was changed."""

    exit_code = 18


class EntriesStale(CpforgeError):
    """`invoke outdated`: an entry is stale (a newer CPython patch release or Debian package)."""

    exit_code = 19


def error_classes() -> tuple[type[CpforgeError], ...]:
    """Every error class cpforge raises (all subclasses of CpforgeError, at any depth)."""
    found: list[type[CpforgeError]] = []
    todo = list(CpforgeError.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return tuple(found)


def exit_codes() -> tuple[ExitCode, ...]:
    """The exit codes of cpforge's tasks, by code: 0, then one per error class."""
    rows = [ExitCode(code=0, name="", description=SUCCESS)]
    for cls in error_classes():
        first = (cls.__doc__ or "").strip().splitlines()
        rows.append(ExitCode(code=cls.exit_code, name=cls.__name__, description=first[0] if first else ""))
    return tuple(sorted(rows, key=lambda r: r.code))


def exit_code_table_markdown() -> str:
    """The README's exit-code table, rendered from exit_codes()."""
    lines = ["| Exit code | Error | Meaning |", "|---:|---|---|"]
    lines += [f"| {r.code} | {f'`{r.name}`' if r.name else '—'} | {r.description} |" for r in exit_codes()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m cpforge.errors: the README's table
    print(exit_code_table_markdown(), end="")
