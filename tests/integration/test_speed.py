"""`invoke bench speed`'s instruction counts, for real: valgrind added to copies of a built image and
of Debian's python3.13 image, cachegrind run on two benchmark scripts. (The timed suite itself is a
benchmark, not a test: it runs in `invoke bench speed`.)"""

from __future__ import annotations

import pytest

from cpforge import api, speed
from cpforge.engine import Engine
from cpforge.report import EntryResult

pytestmark = pytest.mark.integration
SCRIPTS = ("json_loads", "richards")


def test_instruction_counts_repeat_exactly_and_tell_an_unoptimised_build_from_debians(
    ctx: api.Context, engine: Engine, built_313: dict[str, EntryResult]
) -> None:
    quick = built_313["default"]
    assert quick.passed and quick.image_id
    spec = next(s for s in api.plan(ctx, filters=[quick.id], profile="quick"))
    bench_dir = ctx.ws.out / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    files = speed.payload(ctx.ws.out / "cache" / "wheels", ctx.ws.scripts / "bench-speed.py")
    debian = speed.debian_reference(engine, spec.base_image, "3.13", bench_dir)
    contenders = [
        speed.Contender("debian", debian, "python3.13"),
        speed.Contender("ours-quick", quick.image_id, "python3"),
        speed.Contender("ours-quick-again", quick.image_id, "python3"),
    ]
    res = speed.SpeedResult()
    said: list[str] = []
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
    # measurably more work per loop than Debian's optimised python3.13 (measured: 1.05-1.16x).
    ratio = speed.instruction_ratio(res, "ours-quick", "debian")
    assert ratio is not None and ratio > 1.03, res.instructions
    assert "Instructions per loop" in speed.markdown(res)
    # the interpreter in the valgrind copy is the built one, byte for byte
    probe = ["sh", "-c", "sha256sum $(readlink -f /usr/local/bin/python3)"]
    same = {engine.run(img, probe).stdout.split()[0] for img in (quick.image_id, "cpforge-bench/valgrind-ours-quick")}
    assert len(same) == 1


def test_the_held_out_suite_ships_its_own_scripts_and_runs_in_a_built_image(
    ctx: api.Context, engine: Engine, built_313: dict[str, EntryResult]
) -> None:
    quick = built_313["default"]
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
