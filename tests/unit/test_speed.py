"""bench speed: the arithmetic and the reports (the runs themselves are `invoke bench speed`)."""

from __future__ import annotations

import math
from pathlib import Path

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


def test_reports_show_ratios_and_a_bar_per_benchmark() -> None:
    res = speed.SpeedResult(
        suites={"ours-release": {"nbody": 0.09, "float": 0.11}, "debian": {"nbody": 0.1, "float": 0.1}},
        ratios={"speed ours(release)/debian": 0.995},
        sizes={"base cpforge/debian:trixie-amd64": 80_600_000},
    )
    md = speed.markdown(res)
    assert "| speed ours(release)/debian | 0.995 |" in md
    assert "| nbody | 100.00 ms | 90.00 ms |" in md
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
