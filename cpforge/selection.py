"""Which entries a task works on: one rule for every task, in one function (`select`).

    --filter GLOB / --platform P   the matrix entries they match (for the profile);
    --matrix                       every entry of the matrix (for the profile);
    neither                        the task's default (`DEFAULTS`):
        build, sources, base, bench     the matrix's default entry (`default.entry`);
        smoke, lock, verify,            the entries of the last builds: those the build report
        publish, provision              (build/report.json, or --report) holds for the profile;
        matrix                          every entry.

The profile is --profile, else the matrix's default profile. Entries of an opt-in distro (e.g.
bullseye) are matched only by a glob that names the distro, or come from the report.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from . import matrix as mx
from .errors import ReportError, SelectionError
from .report import Report


class Default(enum.Enum):
    ENTRY = "the matrix's default entry"
    REPORT = "the entries of the build report"
    MATRIX = "every entry of the matrix"


DEFAULTS: dict[str, Default] = {
    "matrix": Default.MATRIX,
    "sources": Default.ENTRY,
    "base": Default.ENTRY,
    "build": Default.ENTRY,
    "bench": Default.ENTRY,
    "smoke": Default.REPORT,
    "lock": Default.REPORT,
    "verify": Default.REPORT,
    "publish": Default.REPORT,
    "provision": Default.REPORT,
}


@dataclass(frozen=True, kw_only=True)
class Choice:
    """What the user asked for on the command line."""

    filters: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    profile: str | None = None
    whole_matrix: bool = False

    @property
    def explicit(self) -> bool:
        return bool(self.filters or self.platforms or self.whole_matrix)


def select(matrix: mx.Matrix, task: str, choice: Choice, report: Report | None = None) -> list[mx.BuildSpec]:
    """The entries ``task`` works on (see the module docstring). ``report`` is needed only by tasks
    whose default is the report, and only when the choice is not explicit."""
    specs = matrix.expand(choice.profile)  # an unknown profile is refused here, naming the known ones
    known = {p.name for p in matrix.platforms}
    unknown = [p for p in choice.platforms if p not in known]
    if unknown:
        raise SelectionError(
            f"unknown platform {', '.join(unknown)}", hint=f"use one of: {', '.join(sorted(known))} (--platform)"
        )
    if choice.explicit:
        return mx.select(specs, choice.filters, choice.platforms)
    default = DEFAULTS[task]
    if default is Default.MATRIX:
        return mx.select(specs)
    if default is Default.ENTRY:
        return _default_entry(matrix, specs)
    if report is None:
        raise SelectionError(f"`{task}` needs the build report to choose its entries")
    return _from_report(specs, report, specs[0].profile.name if specs else matrix.default_profile)


def _default_entry(matrix: mx.Matrix, specs: Sequence[mx.BuildSpec]) -> list[mx.BuildSpec]:
    chosen = [s for s in specs if s.id == matrix.default_entry]
    if not chosen:
        raise SelectionError(
            f"the default entry {matrix.default_entry} is not in the matrix",
            hint="fix `default.entry` in matrix.yaml",
        )
    return chosen


def _from_report(specs: Sequence[mx.BuildSpec], report: Report, profile: str) -> list[mx.BuildSpec]:
    if not report.entries and not report.path.exists():
        raise ReportError(
            f"no build report at {report.path}",
            hint="run `invoke build` first, or name entries with --filter GLOB or --matrix",
        )
    chosen = [s for s in specs if s.key in report.entries]
    if chosen:
        return chosen
    others = sorted({e.profile for e in report.entries.values()} - {profile})
    if others:
        hint = f"the report holds {', '.join(others)} builds: add --profile {others[0]}, or name entries with --filter"
    else:
        hint = "run `invoke build` first, or name entries with --filter GLOB or --matrix"
    raise SelectionError(f"the build report {report.path} holds no {profile} entries of this matrix", hint=hint)
