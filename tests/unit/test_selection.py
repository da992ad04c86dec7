"""The one selection rule (cpforge/selection.py), task by task, on the repository's matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpforge import matrix as mx
from cpforge.errors import ReportError, SelectionError
from cpforge.report import EntryResult, Report
from cpforge.selection import DEFAULTS, Choice, Default, select

ROOT = Path(__file__).resolve().parents[2]
MATRIX = mx.load(ROOT / "matrix.yaml")
DEFAULT = MATRIX.default_entry  # 3.14-default-trixie-amd64
BUILT = ("3.13-jit-trixie-amd64", "3.13-default-bullseye-amd64")  # the last builds, quick profile


def report(tmp_path: Path, ids: tuple[str, ...] = BUILT, profile: str = "quick", status: str = "failed") -> Report:
    rep = Report(tmp_path / "report.json")
    for i in ids:
        rep.update(
            EntryResult(
                key=f"{i}@{profile}", id=i, profile=profile, version="3.13.5", variant="", platform="", status=status
            )
        )
    rep.save()
    return rep


def ids(specs: list[mx.BuildSpec]) -> list[str]:
    return [s.id for s in specs]


def test_every_task_that_selects_has_a_default() -> None:
    assert set(DEFAULTS) == {
        "matrix", "sources", "base", "build", "bench", "smoke", "lock", "verify", "publish", "provision"
    }  # fmt: skip


@pytest.mark.parametrize("task", ["build", "sources", "base", "bench"])
def test_producers_default_to_the_default_entry(task: str, tmp_path: Path) -> None:
    assert DEFAULTS[task] is Default.ENTRY
    assert ids(select(MATRIX, task, Choice(), report(tmp_path))) == [DEFAULT]


@pytest.mark.parametrize("task", ["smoke", "lock", "verify", "publish", "provision"])
def test_consumers_default_to_the_entries_of_the_last_builds(task: str, tmp_path: Path) -> None:
    """After `./dev build`, `invoke smoke` (and lock, verify, publish, provision) works on what was
    built, whatever its result (each task says what it does with one that did not pass): not on the
    whole matrix, not on the default entry. In matrix order, opt-in distros included."""
    assert DEFAULTS[task] is Default.REPORT
    rep = report(tmp_path)
    assert ids(select(MATRIX, task, Choice(), rep)) == ["3.13-default-bullseye-amd64", "3.13-jit-trixie-amd64"]
    # only the chosen profile's builds
    rep = report(tmp_path, ("3.13-jit-trixie-amd64",), profile="release")
    assert ids(select(MATRIX, task, Choice(profile="release"), rep)) == ["3.13-jit-trixie-amd64"]


@pytest.mark.parametrize("task", sorted(DEFAULTS))
def test_filter_platform_and_matrix_override_every_default(task: str, tmp_path: Path) -> None:
    rep = report(tmp_path)
    assert ids(select(MATRIX, task, Choice(filters=("3.13-freethreaded-trixie-*",)), rep)) == [
        "3.13-freethreaded-trixie-amd64",
        "3.13-freethreaded-trixie-arm64",
    ]
    arm = select(MATRIX, task, Choice(platforms=("linux/arm64",)), rep)
    assert arm and {s.platform.name for s in arm} == {"linux/arm64"}
    whole = select(MATRIX, task, Choice(whole_matrix=True, profile="release"), rep)
    assert len(whole) == 14 and {s.profile.name for s in whole} == {"release"}  # opt-in bullseye left out
    assert ids(select(MATRIX, task, Choice(filters=("*-default-bullseye-amd64",)), rep)) == [
        "3.14-default-bullseye-amd64",
        "3.13-default-bullseye-amd64",
    ]


def test_matrix_lists_every_entry_by_default(tmp_path: Path) -> None:
    assert len(select(MATRIX, "matrix", Choice())) == 14


def test_no_report_is_a_clear_error_naming_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no build report at") as err:
        select(MATRIX, "publish", Choice(), Report(tmp_path / "none.json"))
    assert "--filter" in str(err.value) and err.value.exit_code == 9


def test_a_report_of_another_profile_says_which(tmp_path: Path) -> None:
    rep = report(tmp_path, ("3.13-jit-trixie-amd64",), profile="release")
    with pytest.raises(SelectionError, match="holds no quick entries") as err:
        select(MATRIX, "smoke", Choice(), rep)
    assert "--profile release" in str(err.value)


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        (Choice(profile="fast"), "unknown profile 'fast'"),
        (Choice(platforms=("linux/s390x",)), "unknown platform linux/s390x"),
        (Choice(filters=("4.0-*",)), "no matrix entry matches"),
    ],
)
def test_bad_choices_are_refused_as_selection_errors(choice: Choice, message: str, tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match=message) as err:
        select(MATRIX, "build", choice, report(tmp_path))
    assert err.value.exit_code == SelectionError.exit_code == 16
