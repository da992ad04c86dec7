"""`invoke bench speed`'s reference and instruction counts, for real: Debian's own python3.14
3.14.7-3 installed from the Debian pool on a forky base, valgrind added to copies of it and of a
built 3.14 image, cachegrind run on two benchmark scripts. (The timed suite itself is a benchmark,
not a test: it runs in `invoke bench speed`.)"""

from __future__ import annotations

import dataclasses

import pytest

from cpforge import api, speed
from cpforge.engine import Engine
from cpforge.report import EntryResult

pytestmark = pytest.mark.integration
SCRIPTS = ("json_loads", "richards")


def test_instruction_counts_repeat_exactly_and_tell_an_unoptimised_build_from_debians(
    ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult]
) -> None:
    quick = built_314["default"]
    assert quick.passed and quick.image_id
    sel = speed.select_release(ctx.matrix, filters=[quick.id])
    assert sel.version == quick.version == "3.14.7"
    bench_dir = ctx.ws.out / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    files = speed.payload(ctx.ws.out / "cache" / "wheels", ctx.ws.scripts / "bench-speed.py")
    said: list[str] = []
    debian = speed.reference_image(engine, ctx.matrix, sel, ctx.ws.out, said.append)
    # Debian's own 3.14.7-3 build from the pool (no suite has it), on the base where it installs
    # cleanly: the same upstream release as ours, which the reference checks itself.
    assert (debian.debian_version, debian.python_version) == ("3.14.7-3", "3.14.7")
    assert (debian.base, debian.suite, debian.exe) == ("cpforge/debian:forky-amd64", "forky", "python3.14")
    assert debian.libc.startswith("glibc 2.4"), debian  # forky's: >= 2.42, which libpython3.14-stdlib needs
    contenders = [
        speed.Contender("debian", debian.image, debian.exe),
        speed.Contender("ours-quick", quick.image_id, "python3"),
        speed.Contender("ours-quick-again", quick.image_id, "python3"),
    ]
    res = speed.SpeedResult(release=sel.version, reference=dataclasses.asdict(debian))
    said.clear()
    speed.count_instructions(engine, contenders, files, res, bench_dir, said.append, SCRIPTS)

    assert not res.errors, res.errors
    assert sorted(said) == sorted(f"  instructions counted: {c.label}" for c in contenders)
    for label in ("debian", "ours-quick", "ours-quick-again"):
        assert set(res.instructions[label]) == set(SCRIPTS)
        assert all(n > 1e6 for n in res.instructions[label].values()), res.instructions
    # A count does not move from run to run (fixed hash seed, start-up and imports subtracted) ...
    for name in SCRIPTS:
        a, b = res.instructions["ours-quick"][name], res.instructions["ours-quick-again"][name]
        assert abs(a / b - 1) < 0.001, (name, a, b)
    # ... so it can see what times on a shared host blur: the quick build (no PGO, no LTO) does
    # measurably more work per loop than Debian's optimised python3.14 3.14.7-3 (measured on 3.14.7:
    # json_loads 1.084x, richards 1.117x, geomean 1.100x; on 3.13.5 against python3.13: 1.05-1.16x).
    ratio = speed.instruction_ratio(res, "ours-quick", "debian")
    assert ratio is not None and ratio > 1.03, res.instructions
    md = speed.markdown(res)
    assert "Instructions per loop" in md and "`python3.14` **3.14.7-3**" in md
    # the interpreter in the valgrind copy is the built one, byte for byte
    probe = ["sh", "-c", "sha256sum $(readlink -f /usr/local/bin/python3)"]
    same = {engine.run(img, probe).stdout.split()[0] for img in (quick.image_id, "cpforge-bench/valgrind-ours-quick")}
    assert len(same) == 1


def test_the_held_out_suite_ships_its_own_scripts_and_runs_in_a_built_image(
    ctx: api.Context, engine: Engine, built_314: dict[str, EntryResult]
) -> None:
    quick = built_314["default"]
    assert quick.passed and quick.image_id
    held_out = speed.SUITES["held-out"]
    files = speed.payload(ctx.ws.out / "cache" / "wheels", ctx.ws.scripts / "bench-speed.py", held_out)
    shipped = {n.split("/")[2] for n in files if n.endswith("/run_benchmark.py")}
    assert shipped == {f"bm_{b}" for b in held_out}  # and none of the core suite's
    # One benchmark script through pyperf, as `bench speed --suite held-out` runs it: logging times
    # three benchmarks, every one with a positive mean from its worker processes.
    raw = speed.run_suite(engine, quick.image_id, "python3", files, {}, ("logging",), "0")
    assert set(raw) == {"logging_format", "logging_silent", "logging_simple"}, raw
    assert all(v["mean"] > 0 and v["processes"] for v in raw.values()), raw
