"""bench speed: the arithmetic and the reports (the runs themselves are `invoke bench speed`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from cpforge import speed


def test_geomean_ratio_uses_only_common_benchmarks() -> None:
    res = speed.SpeedResult(suites={"a": {"x": 2.0, "y": 1.0, "only_a": 5.0}, "b": {"x": 1.0, "y": 2.0, "only_b": 1.0}})
    got = speed.ratio(res, "a", "b")
    assert got is not None
    mean, per = got
    assert per == {"x": 2.0, "y": 0.5}
    assert math.isclose(mean, 1.0)
    assert speed.ratio(res, "a", "missing") is None


def test_each_round_gives_its_own_ratio_and_the_report_shows_their_range() -> None:
    res = speed.SpeedResult(
        runs={
            "ours": {"x": [2.0, 1.0], "y": [1.0, 1.0], "failed_once": [9.0]},
            "debian": {"x": [1.0, 1.0], "y": [2.0, 4.0], "failed_once": [1.0, 1.0]},
        }
    )
    per_round = speed.round_ratios(res, "ours", "debian")
    assert [round(v, 4) for v in per_round] == [1.0, 0.5]  # sqrt(2 * 0.5), sqrt(1 * 0.25); failed_once left out
    assert speed.round_ratios(res, "ours", "missing") == []
    res.spread["speed ours(release)/debian"] = [0.5, 1.0]
    assert "- speed ours(release)/debian: 0.5 to 1.0" in speed.markdown(res)
    assert "the range is the noise" not in speed.markdown(speed.SpeedResult())  # no per-round ratios: no range


def test_reports_show_ratios_and_a_bar_per_benchmark() -> None:
    res = speed.SpeedResult(
        suites={"ours-release": {"nbody": 0.09, "float": 0.11}, "debian": {"nbody": 0.1, "float": 0.1}},
        ratios={"speed ours(release)/debian": 0.995},
        sizes={"base cpforge/debian:trixie-amd64": 80_600_000},
    )
    md = speed.markdown(res)
    assert "| speed ours(release)/debian | 0.995 |" in md
    assert "| nbody | 100 ms | 90 ms |" in md
    page = speed.html_report(res)
    assert page.count("<rect") == 3  # the geomean and one bar per benchmark
    assert "0.900×" in page and "1.100×" in page


def test_payload_refuses_a_pyperformance_without_the_suite(tmp_path: Path) -> None:
    import zipfile

    for name, version in (speed.PYPERF, speed.PYPERFORMANCE):
        with zipfile.ZipFile(tmp_path / f"{name}-{version}-py3-none-any.whl", "w") as z:
            z.writestr(f"{name}/__init__.py", "")
    driver = tmp_path / "driver.py"
    driver.write_text("")
    with pytest.raises(speed.BenchError, match="lacks the benchmarks"):
        speed.payload(tmp_path, driver)


class FakeEngine:
    """Answers each benchmark run with the next time from a script; records what ran where."""

    def __init__(self, times: dict[str, list[Any]]) -> None:
        self.times = times
        self.calls: list[tuple[str, str, str | None]] = []

    def run(self, image: str, command: list[str], **kw: object) -> object:
        import json
        from types import SimpleNamespace

        name = command[-1]
        self.calls.append((image, name, kw.get("cpuset")))  # type: ignore[arg-type]
        t = self.times[image].pop(0)
        out = {name: {"mean": t[0], "processes": t[1]} if isinstance(t, tuple) else {"mean": t}}
        return SimpleNamespace(exit_code=0, stdout=json.dumps(out), stderr="")


def test_interleaved_runs_every_interpreter_per_benchmark_and_keeps_the_best(monkeypatch: pytest.MonkeyPatch) -> None:
    # A driver that reports no per-process means: each round's mean stands for its processes.
    monkeypatch.setattr(speed, "SUITE", ("nbody", "float"))
    # rounds: nbody a, b, a, b; then float a, b, a, b
    eng = FakeEngine({"A": [3.0, 2.0, 5.0, 6.0], "B": [4.0, 1.0, 7.0, 8.0]})
    res = speed.SpeedResult()
    contenders = [speed.Contender("a", "A", "python3"), speed.Contender("b", "B", "python3")]
    speed.interleaved(eng, contenders, {}, res, rounds=2, cpu="1", say=lambda _: None)  # type: ignore[arg-type]
    assert [(img, n) for img, n, _ in eng.calls] == [
        ("A", "nbody"), ("B", "nbody"), ("A", "nbody"), ("B", "nbody"),
        ("A", "float"), ("B", "float"), ("A", "float"), ("B", "float"),
    ]  # fmt: skip
    assert {cpu for _, _, cpu in eng.calls} == {"1"}
    assert res.runs["a"] == {"nbody": [3.0, 2.0], "float": [5.0, 6.0]}
    assert res.suites == {"a": {"nbody": 2.0, "float": 5.0}, "b": {"nbody": 1.0, "float": 7.0}}


def test_times_keep_three_significant_digits_in_a_fitting_unit() -> None:
    assert speed.fmt_time(0.08477) == "84.8 ms"
    assert speed.fmt_time(0.0000184) == "18.4 µs"  # json_loads-sized: not "0.02 ms"
    assert speed.fmt_time(1.5) == "1.5 s"
    assert speed.fmt_time(float("nan")) == "—"
    md = speed.markdown(speed.SpeedResult(suites={"debian": {"json_loads": 0.0000184}}))
    assert "| json_loads | 18.4 µs |" in md


def test_a_benchmark_keeps_its_fastest_worker_process_over_all_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "SUITE", ("nbody",))
    # Round 1 of A was disturbed half-way: its mean is the worst, yet its first process is the fastest.
    eng = FakeEngine({"A": [(3.0, [1.5, 4.5]), (2.0, [1.9, 2.1])], "B": [(2.2, [2.0, 2.4]), (2.1, [2.05, 2.15])]})
    res = speed.SpeedResult()
    contenders = [speed.Contender("a", "A", "python3"), speed.Contender("b", "B", "python3")]
    speed.interleaved(eng, contenders, {}, res, rounds=2, cpu="1", say=lambda _: None)  # type: ignore[arg-type]
    assert res.processes == {"a": {"nbody": [1.5, 4.5, 1.9, 2.1]}, "b": {"nbody": [2.0, 2.4, 2.05, 2.15]}}
    assert res.suites == {"a": {"nbody": 1.5}, "b": {"nbody": 2.0}}
    assert res.runs["a"] == {"nbody": [3.0, 2.0]}  # the round means still give each round's own ratio
    assert speed.ratio(res, "a", "b") == (0.75, {"nbody": 0.75})
    assert speed.round_ratios(res, "a", "b") == [3.0 / 2.2, 2.0 / 2.1]
