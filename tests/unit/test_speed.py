"""bench speed: the arithmetic and the reports (the runs themselves are `invoke bench speed`)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
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


# ------------------------------------------------------------------ which release, which builds, which reference

SHIPPED = ROOT / "matrix.yaml"


def shipped_matrix() -> Any:
    from cpforge import matrix as mx

    return mx.load(SHIPPED)


def test_by_default_bench_speed_measures_the_default_entrys_release_against_debians_314() -> None:
    m = shipped_matrix()
    assert m.default_entry == "3.14-default-trixie-amd64"
    sel = speed.select_release(m)
    assert (sel.version, sel.minor, sel.distro.name, sel.platform.arch) == ("3.14.7", "3.14", "trixie", "amd64")
    assert sel.variants == ("default", "jit", "freethreaded")  # 3.14-freethreaded-jit is excluded by the matrix
    assert sel.entry("jit") == "3.14-jit-trixie-amd64"
    ref = sel.reference
    assert (ref.exe, ref.version, ref.upstream, ref.suite) == ("python3.14", "3.14.7-3", "3.14.7", "forky")
    packages = [p for p, _ in ref.debs]
    assert packages == ["libpython3.14-minimal", "libpython3.14-stdlib", "python3.14-minimal", "python3.14"]
    assert ref.url("http://deb.debian.org/debian/", "python3.14") == (
        "http://deb.debian.org/debian/pool/main/p/python3.14/python3.14_3.14.7-3_amd64.deb"
    )


@pytest.mark.parametrize("how", [{"version": "3.13.5"}, {"version": "3.13"}, {"filters": ["3.13-*"]}])
def test_version_or_filter_chooses_313_whose_reference_is_trixies_own_python313(how: dict[str, Any]) -> None:
    sel = speed.select_release(shipped_matrix(), **how)
    assert (sel.version, sel.variants) == ("3.13.5", ("default", "jit", "freethreaded"))
    assert (sel.reference.suite, sel.reference.debs, sel.reference.exe) == ("trixie", (), "python3.13")


def test_a_filter_also_chooses_which_variants_are_measured() -> None:
    sel = speed.select_release(shipped_matrix(), filters=["3.14-default-*", "3.14-freethreaded-*"])
    assert (sel.version, sel.variants) == ("3.14.7", ("default", "freethreaded"))
    # arm64 and bullseye entries are not what bench speed measures: they do not count
    sel = speed.select_release(shipped_matrix(), filters=["*-amd64"], version="3.14.7")
    assert sel.variants == ("default", "jit", "freethreaded")


@pytest.mark.parametrize(
    ("how", "message", "hint"),
    [
        ({"version": "3.12.1"}, "no release '3.12.1' in", "choose one of: 3.14.7, 3.13.5 (--version)"),
        ({"filters": ["3.14-*-arm64"]}, "no trixie amd64 entry matches --filter 3.14-*-arm64", "--filter '3.14-*'"),
        ({"filters": ["3.13-*"], "version": "3.14"}, "no trixie amd64 entry matches --version 3.14 --filter", ""),
        (
            {"filters": ["*-default-trixie-amd64"]},
            "matches entries of 3.13.5 and 3.14.7: bench speed measures one release",
            "add --version 3.14.7, or narrow the filter, e.g. '3.14-*'",
        ),
        ({"filters": ["3.14-jit-*"]}, "leaves out 3.14-default-trixie-amd64: every ratio", "--filter '3.14-*'"),
    ],
)
def test_a_selection_that_names_no_single_release_is_refused(
    how: dict[str, Any], message: str, hint: str, tmp_path: Path
) -> None:
    with pytest.raises(speed.BenchError, match=re.escape(message)) as err:
        speed.speed(NoEngine(), shipped_matrix(), fake_report([]), tmp_path, tmp_path, **how)  # type: ignore[arg-type]
    assert err.value.exit_code == 14
    assert hint in (err.value.hint or "")
    assert not list(tmp_path.iterdir())  # refused before anything was fetched, built or written


def test_a_release_with_no_debian_reference_or_another_debian_release_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(speed, "REFERENCES", {k: v for k, v in speed.REFERENCES.items() if k != "3.13"})
    with pytest.raises(speed.BenchError, match=r"no Debian reference for Python 3\.13") as err:
        speed.select_release(shipped_matrix(), version="3.13.5")
    assert "REFERENCES" in str(err.value)
    later = speed.DebianReference(minor="3.14", suite="sid", version="3.14.8-1", debs=(("python3.14", "0" * 64),))
    monkeypatch.setattr(speed, "REFERENCES", {"3.14": later})
    with pytest.raises(speed.BenchError, match=r"3\.14\.8-1 .* is release 3\.14\.8, not the matrix's 3\.14\.7"):
        speed.select_release(shipped_matrix())


def test_every_release_of_the_shipped_matrix_has_a_debian_reference_of_that_release() -> None:
    m = shipped_matrix()
    for v in m.versions:
        sel = speed.select_release(m, version=v.version)
        assert sel.reference.minor == v.minor
        assert not sel.reference.version or sel.reference.upstream == v.version


class NoEngine:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was used: {name}")


def fake_report(results: list[tuple[str, str, str, str]]) -> Any:
    """A report of (entry id, profile, version, status) builds."""
    from cpforge.report import EntryResult, Report

    entries = {}
    for eid, prof, version, status in results:
        key = f"{eid}@{prof}"
        entries[key] = EntryResult(
            key=key,
            id=eid,
            profile=prof,
            version=version,
            variant=eid.split("-")[1],
            platform="linux/amd64",
            status=status,
            image_id=f"sha256:{key}",
        )
    return Report(Path("report.json"), entries)


def test_the_builds_measured_are_the_chosen_releases_passed_ones() -> None:
    sel = speed.select_release(shipped_matrix())
    report = fake_report(
        [
            ("3.14-default-trixie-amd64", "quick", "3.14.7", "passed"),
            ("3.14-default-trixie-amd64", "release", "3.14.6", "passed"),  # an older 3.14: not this release
            ("3.14-jit-trixie-amd64", "release", "3.14.7", "failed"),
            ("3.14-jit-trixie-amd64", "quick", "3.14.7", "passed"),
            ("3.14-freethreaded-trixie-amd64", "quick", "3.14.7", "passed"),
            ("3.13-default-trixie-amd64", "release", "3.13.5", "passed"),
        ]
    )
    chosen, notes = speed.choose_builds(report, sel)
    assert {label: key for label, (key, _) in chosen.items()} == {
        "ours-quick": "3.14-default-trixie-amd64@quick",
        "jit": "3.14-jit-trixie-amd64@quick",  # release failed: quick stands in
        "freethreaded": "3.14-freethreaded-trixie-amd64@quick",
        "gil-quick": "3.14-default-trixie-amd64@quick",  # the default build of the free-threaded one's profile
    }
    assert notes == ["ours-release: no passed 3.14.7 build of 3.14-default-trixie-amd64 (release); skipped"]
    debian = speed.ReferenceImage(
        image="deb", exe="python3.14", base="b", suite="forky", debian_version="3.14.7-3",
        python_version="3.14.7", libc="glibc 2.43", origin="pool",
    )  # fmt: skip
    contenders = speed.contenders_for(debian, chosen)
    assert [(c.label, c.image, c.exe, c.env) for c in contenders] == [
        ("debian", "deb", "python3.14", ()),
        ("ours-quick", "sha256:3.14-default-trixie-amd64@quick", "python3", ()),
        ("jit-on", "sha256:3.14-jit-trixie-amd64@quick", "python3", (("PYTHON_JIT", "1"),)),
        ("jit-off", "sha256:3.14-jit-trixie-amd64@quick", "python3", (("PYTHON_JIT", "0"),)),
    ]


def test_no_passed_default_build_of_the_release_is_refused_with_the_build_to_run() -> None:
    sel = speed.select_release(shipped_matrix())
    report = fake_report([("3.13-default-trixie-amd64", "quick", "3.13.5", "passed")])
    with pytest.raises(speed.BenchError, match=r"no passed 3\.14\.7 build of 3\.14-default-trixie-amd64") as err:
        speed.choose_builds(report, sel)
    assert "invoke build --filter '3.14-default-trixie-amd64' --profile release" in (err.value.hint or "")


def test_the_reference_base_is_ours_when_the_suite_matches_else_a_bootstrapped_one() -> None:
    m = shipped_matrix()
    trixie = m.distros[0]
    assert speed.reference_distro(speed.REFERENCES["3.13"], trixie, m) is trixie
    forky = speed.reference_distro(speed.REFERENCES["3.14"], trixie, m)
    assert (forky.name, forky.suite, forky.pull) == ("forky", "forky", None)
    # a testing suite's Release is valid for a week: a mirror snapshot older than that still serves it
    assert forky.mirror == "deb [check-valid-until=no] http://deb.debian.org/debian forky main"
    assert forky.base_image(m.platforms[0]) == "cpforge/debian:forky-amd64"


# ------------------------------------------------------------------ the .debs from the pool


def pool(tmp_path: Path, files: dict[str, bytes]) -> str:
    """A mirror on disk laid out like Debian's pool; returns its file:// URL."""
    d = tmp_path / "mirror" / "pool" / "main" / "p" / "python3.14"
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return (tmp_path / "mirror").as_uri()


def test_debs_are_fetched_from_the_pool_by_exact_version_and_sha256(tmp_path: Path) -> None:
    import hashlib

    blobs = {"python3.14-minimal": b"minimal deb", "python3.14": b"python deb"}
    ref = speed.DebianReference(
        minor="3.14",
        suite="forky",
        version="3.14.7-3",
        debs=tuple((p, hashlib.sha256(b).hexdigest()) for p, b in blobs.items()),
    )
    mirror = pool(tmp_path, {f"{p}_3.14.7-3_amd64.deb": b for p, b in blobs.items()})
    cache, said = tmp_path / "cache", []
    got = speed.fetch_debs(ref, mirror, cache, said.append)
    assert {n: p.read_bytes() for n, p in got.items()} == {
        "python3.14-minimal_3.14.7-3_amd64.deb": b"minimal deb",
        "python3.14_3.14.7-3_amd64.deb": b"python deb",
    }
    assert said == [f"… fetching {mirror}/pool/main/p/python3.14/python3.14-minimal_3.14.7-3_amd64.deb",
                    f"… fetching {mirror}/pool/main/p/python3.14/python3.14_3.14.7-3_amd64.deb"]  # fmt: skip
    # verified copies in the cache are used again without the mirror
    import shutil

    shutil.rmtree(tmp_path / "mirror")
    said.clear()
    assert speed.fetch_debs(ref, mirror, cache, said.append) == got and said == []


def test_a_deb_whose_sha256_differs_from_the_pin_is_refused_and_not_kept(tmp_path: Path) -> None:
    ref = speed.DebianReference(minor="3.14", suite="forky", version="3.14.7-3", debs=(("python3.14", "a" * 64),))
    mirror = pool(tmp_path, {"python3.14_3.14.7-3_amd64.deb": b"someone else's build"})
    cache = tmp_path / "cache"
    with pytest.raises(speed.BenchError, match=r"not the a{64} pinned for Debian's python3\.14 3\.14\.7-3") as err:
        speed.fetch_debs(ref, mirror, cache, lambda _: None)
    assert "refused" in str(err.value)
    assert list(cache.iterdir()) == []  # no partial or unverified file left behind
    with pytest.raises(speed.BenchError, match=re.escape("cannot download Debian's python3.14 3.14.7-3")) as err:
        speed.fetch_debs(ref, (tmp_path / "nowhere").as_uri(), cache, lambda _: None)
    assert list(cache.iterdir()) == []


# ------------------------------------------------------------------ the reference image


class ReferenceEngine:
    """Builds succeed; the interpreter in the built image reports ``facts``; records builds and runs."""

    def __init__(self, facts: dict[str, str]) -> None:
        self.facts = facts
        self.built: list[dict[str, bytes]] = []
        self.ran: list[list[str]] = []

    def image_id(self, ref: str) -> str:
        return f"sha256:{ref}"

    def image_labels(self, ref: str) -> dict[str, str]:
        return {}  # a base that was pulled: kept as it is

    def build(self, context: Any, *, tag: str, log: Any, **kw: Any) -> str:
        import tarfile

        with tarfile.open(fileobj=context) as tar:
            self.built.append({m.name: tar.extractfile(m).read() for m in tar.getmembers()})  # type: ignore[union-attr]
        return f"sha256:{tag}"

    def run(self, image: str, command: list[str], **kw: Any) -> SimpleNamespace:
        self.ran.append(command)
        return SimpleNamespace(exit_code=0, stdout=json.dumps(self.facts), stderr="")


def test_debians_314_is_built_from_the_pinned_debs_on_a_forky_base_and_named_exactly(tmp_path: Path) -> None:
    import hashlib

    ref = speed.DebianReference(
        minor="3.14", suite="forky", version="3.14.7-3", debs=(("python3.14", hashlib.sha256(b"deb").hexdigest()),)
    )
    sel = dataclasses.replace(speed.select_release(shipped_matrix()), reference=ref)
    (tmp_path / "cache" / "debs").mkdir(parents=True)
    (tmp_path / "cache" / "debs" / "python3.14_3.14.7-3_amd64.deb").write_bytes(b"deb")
    eng = ReferenceEngine({"python": "3.14.7", "dpkg": "3.14.7-3", "libc": "glibc 2.43"})
    got = speed.reference_image(eng, shipped_matrix(), sel, tmp_path, lambda _: None)  # type: ignore[arg-type]
    assert (got.base, got.debian_version, got.python_version, got.exe) == (
        "cpforge/debian:forky-amd64", "3.14.7-3", "3.14.7", "python3.14",
    )  # fmt: skip
    assert "python3.14 from the Debian pool, sha256-pinned; the rest from forky" in got.describe()
    (ctx,) = eng.built
    assert ctx["debs/python3.14_3.14.7-3_amd64.deb"] == b"deb"
    dockerfile = ctx["Dockerfile"].decode()
    assert dockerfile.startswith("FROM cpforge/debian:forky-amd64 AS install\n")
    assert "apt-get install -y --no-install-recommends /tmp/cpforge-debs/*.deb" in dockerfile
    assert "FROM scratch\nCOPY --from=install / /\n" in dockerfile  # one layer: no .debs or apt caches in it
    assert eng.ran[0][0] == "python3.14" and eng.ran[0][-1] == "python3.14"  # the probe asks dpkg about it
    md = speed.markdown(speed.SpeedResult(release=sel.version, reference=dataclasses.asdict(got)))
    assert "Release 3.14.7: our builds against Debian's own build" in md
    assert "Debian's `python3.14` **3.14.7-3** (Python 3.14.7), installed on `cpforge/debian:forky-amd64`" in md


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({"python": "3.14.8", "dpkg": "3.14.7-3", "libc": "glibc 2.43"}, "is Python 3.14.8, not 3.14.7"),
        ({"python": "3.14.7", "dpkg": "3.14.7-4", "libc": "glibc 2.43"}, "3.14.7-4 installed, not the pinned 3.14.7-3"),
    ],
)
def test_a_reference_that_is_not_the_same_release_is_refused(facts: dict[str, str], message: str) -> None:
    got = speed.ReferenceImage(
        image="sha256:x", exe="python3.14", base="cpforge/debian:forky-amd64", suite="forky",
        debian_version=facts["dpkg"], python_version=facts["python"], libc=facts["libc"], origin="pool",
    )  # fmt: skip
    with pytest.raises(speed.BenchError, match=re.escape(message)):
        speed.check_reference(got, speed.REFERENCES["3.14"], "3.14.7")


def test_trixies_python313_comes_from_apt_on_our_own_base_and_must_be_3135(tmp_path: Path) -> None:
    sel = speed.select_release(shipped_matrix(), version="3.13.5")
    eng = ReferenceEngine({"python": "3.13.5", "dpkg": "3.13.5-2", "libc": "glibc 2.41"})
    got = speed.reference_image(eng, shipped_matrix(), sel, tmp_path, lambda _: None)  # type: ignore[arg-type]
    assert (got.base, got.debian_version, got.origin) == ("cpforge/debian:trixie-amd64", "3.13.5-2", "trixie's apt")
    dockerfile = eng.built[0]["Dockerfile"].decode()
    assert dockerfile.startswith("FROM cpforge/debian:trixie-amd64\n")
    assert "apt-get install -y --no-install-recommends python3.13 && apt-get clean" in dockerfile
    eng.facts["python"] = "3.13.9"
    with pytest.raises(speed.BenchError, match=re.escape("is Python 3.13.9, not 3.13.5")):
        speed.reference_image(eng, shipped_matrix(), sel, tmp_path, lambda _: None)  # type: ignore[arg-type]
