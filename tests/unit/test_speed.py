"""bench speed: the arithmetic and the reports (the runs themselves are `invoke bench speed`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cpforge import speed

ROOT = Path(__file__).resolve().parents[2]


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
        name = command[-1]
        self.calls.append((image, name, kw.get("cpuset")))  # type: ignore[arg-type]
        t = self.times[image].pop(0)
        out = {name: {"mean": t[0], "processes": t[1]} if isinstance(t, tuple) else {"mean": t}}
        return SimpleNamespace(exit_code=0, stdout=json.dumps(out), stderr="")


def test_interleaved_runs_every_interpreter_per_benchmark_and_keeps_the_best() -> None:
    # A driver that reports no per-process means: each round's mean stands for its processes.
    # rounds: nbody a, b, a, b; then float a, b, a, b
    eng = FakeEngine({"A": [3.0, 2.0, 5.0, 6.0], "B": [4.0, 1.0, 7.0, 8.0]})
    res = speed.SpeedResult()
    contenders = [speed.Contender("a", "A", "python3"), speed.Contender("b", "B", "python3")]
    speed.interleaved(eng, contenders, {}, res, 2, "1", lambda _: None, ("nbody", "float"))  # type: ignore[arg-type]
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


def test_a_benchmark_keeps_its_fastest_worker_process_over_all_rounds() -> None:
    # Round 1 of A was disturbed half-way: its mean is the worst, yet its first process is the fastest.
    eng = FakeEngine({"A": [(3.0, [1.5, 4.5]), (2.0, [1.9, 2.1])], "B": [(2.2, [2.0, 2.4]), (2.1, [2.05, 2.15])]})
    res = speed.SpeedResult()
    contenders = [speed.Contender("a", "A", "python3"), speed.Contender("b", "B", "python3")]
    speed.interleaved(eng, contenders, {}, res, 2, "1", lambda _: None, ("nbody",))  # type: ignore[arg-type]
    assert res.processes == {"a": {"nbody": [1.5, 4.5, 1.9, 2.1]}, "b": {"nbody": [2.0, 2.4, 2.05, 2.15]}}
    assert res.suites == {"a": {"nbody": 1.5}, "b": {"nbody": 2.0}}
    assert res.runs["a"] == {"nbody": [3.0, 2.0]}  # the round means still give each round's own ratio
    assert speed.ratio(res, "a", "b") == (0.75, {"nbody": 0.75})
    assert speed.round_ratios(res, "a", "b") == [3.0 / 2.2, 2.0 / 2.1]


def test_instruction_ratio_is_the_geomean_over_scripts_both_counted() -> None:
    res = speed.SpeedResult(
        instructions={
            "debian": {"nbody": 100.0, "go": 200.0, "float": 50.0},
            "ours-release": {"nbody": 110.0, "go": 180.0},
        }
    )
    r = speed.instruction_ratio(res, "ours-release", "debian")
    assert r is not None and math.isclose(r, math.sqrt(1.1 * 0.9))
    assert speed.instruction_ratio(res, "ours-quick", "debian") is None
    text = speed.markdown(res)
    assert "| nbody | 0.0 | 0.0 | 1.100 |" in text and "| float | 0.0 | — | — |" in text


def test_the_pyperf_stand_in_runs_a_benchmark_script_the_asked_number_of_loops(tmp_path: Path) -> None:
    """Under cachegrind the driver swaps pyperf for a stand-in: the benchmark's own code, N loops."""
    import importlib.util
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("driver", ROOT / "scripts" / "bench-speed.py")
    assert spec and spec.loader
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    (tmp_path / "pyperf.py").write_text(driver.PYPERF_STANDIN)
    script = tmp_path / "bm.py"
    script.write_text(
        "import pyperf\n"
        "calls = []\n"
        "def timed(loops, x):\n    calls.append(('time', loops, x))\n    return 0.0\n"
        "def plain(x):\n    calls.append(('func', x))\n"
        "r = pyperf.Runner()\nr.argparser.add_argument('--n', type=int, default=7)\nargs = r.parse_args()\n"
        "r.bench_time_func('a', timed, args.n)\nr.bench_func('b', plain, 'y', inner_loops=20)\nprint(calls)\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "CPFORGE_LOOPS": "3"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([("time", 3, 7), ("func", "y"), ("func", "y"), ("func", "y")])
    summary = tmp_path / "cachegrind.out"
    summary.write_text("desc: I\ncmd: python3 x\nevents: Ir\nfl=a\nsummary: 12345\n")
    assert driver.cachegrind_total(str(summary)) == 12345


def test_an_unknown_suite_is_refused_before_anything_runs(tmp_path: Path) -> None:
    class NoEngine:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the engine was used: {name}")

    with pytest.raises(speed.BenchError, match="no benchmark suite named 'heldout'") as err:
        speed.speed(NoEngine(), None, None, tmp_path, tmp_path, suite="heldout")  # type: ignore[arg-type]
    assert "core, held-out" in (err.value.hint or "")
    assert not list(tmp_path.iterdir())  # no report written


def test_the_held_out_suite_shares_no_benchmark_with_core_and_has_its_own_report() -> None:
    assert set(speed.SUITES) == {"core", "held-out"}
    assert not set(speed.SUITES["core"]) & set(speed.SUITES["held-out"])
    assert (speed.report_stem("core"), speed.report_stem("held-out")) == ("speed", "speed-held-out")
    md = speed.markdown(speed.SpeedResult(suite="held-out", suites={"debian": {"logging_silent": 7e-8}}))
    assert "Benchmark suite `held-out`: chaos, comprehensions," in md


def test_a_script_that_times_several_benchmarks_reports_each_of_them() -> None:
    class TwoTimings:  # like pyperformance's logging script: one script, several benchmarks
        def run(self, image: str, command: list[str], **kw: object) -> SimpleNamespace:
            t = {"A": 1.0, "B": 2.0}[image]
            out = {"logging_silent": {"mean": t / 10}, "logging_simple": {"mean": t}}
            return SimpleNamespace(exit_code=0, stdout=json.dumps(out), stderr="")

    res, said = speed.SpeedResult(), []
    contenders = [speed.Contender("a", "A", "python3"), speed.Contender("b", "B", "python3")]
    speed.interleaved(TwoTimings(), contenders, {}, res, 1, "1", said.append, ("logging",))  # type: ignore[arg-type]
    assert res.suites == {
        "a": {"logging_silent": 0.1, "logging_simple": 1.0},
        "b": {"logging_silent": 0.2, "logging_simple": 2.0},
    }
    assert said == [
        "  logging_silent (fastest process of 1 round(s)): a 100 ms  b 200 ms",
        "  logging_simple (fastest process of 1 round(s)): a 1 s  b 2 s",
    ]
